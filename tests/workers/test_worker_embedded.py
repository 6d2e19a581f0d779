"""`llada down` and `status` bookkeeping, without starting a stack: the pid file and whose pids it names."""

from __future__ import annotations

import subprocess

from workers.embedded import StackInfo, main, stack_status, stop_stack


def test_down_never_signals_a_pid_that_now_runs_another_program(tmp_path):
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:1", api_key="k",
                  pids={"gateway": stranger.pid}).save()

        how = stop_stack(tmp_path, timeout_s=1)

        assert how == {"gateway": "not running"}
        assert stranger.poll() is None  # still alive
        assert not (tmp_path / "stack.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_status_and_down_without_a_stack(tmp_path, capsys):
    assert stack_status(tmp_path) == {}
    assert main(["status", "--data-dir", str(tmp_path)]) == 3
    assert main(["down", "--data-dir", str(tmp_path)]) == 0
    assert "no stack recorded" in capsys.readouterr().out

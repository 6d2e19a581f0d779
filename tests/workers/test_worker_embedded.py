"""`llada down` and `status` bookkeeping, without starting a stack: the pid file and whose pids it names."""

from __future__ import annotations

import os
import stat
import subprocess

from shared.settings import Settings
from workers.embedded import StackInfo, ensure_api_key, exported_settings, main, stack_status, stop_stack


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


def test_the_pid_file_and_the_key_file_are_private_and_written_whole(tmp_path):
    """Both hold the API key: 0600 from the start, whatever the umask, and replaced by a rename."""
    old_umask = os.umask(0)
    try:
        key = ensure_api_key(tmp_path)
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:1", api_key=key, pids={"gateway": 1}).save()
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:2", api_key=key).save()  # a rewrite
    finally:
        os.umask(old_umask)
    for name in ("api-key", "stack.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert ensure_api_key(tmp_path) == key and StackInfo.load(tmp_path).grpc_address == "127.0.0.1:2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-key", "stack.json"]  # no temporary left


def test_secret_settings_reach_the_stack_as_their_values(tmp_path):
    settings = Settings(data_dir=tmp_path, s3_secret_key="minio-secret-value")
    assert "minio-secret-value" not in repr(settings)
    assert exported_settings(settings)["LLADA_S3_SECRET_KEY"] == "minio-secret-value"

"""`llada up|down|status` reach the embedded stack's own command (workers.embedded), not the job client."""

from __future__ import annotations

from client import cli


def test_status_without_a_stack_says_so_and_exits_not_running(tmp_path, capsys):
    code = cli.main(["status", "--data-dir", str(tmp_path)])

    out, err = capsys.readouterr()
    assert code == 3, err  # workers.embedded's "not running"
    assert f"no stack recorded in {tmp_path}" in out


def test_down_without_a_stack_is_a_no_op(tmp_path, capsys):
    assert cli.main(["down", "--data-dir", str(tmp_path)]) == 0
    assert "no stack recorded" in capsys.readouterr().out

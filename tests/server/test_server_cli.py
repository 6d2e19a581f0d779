"""`llada-server`: the server side's commands, each reaching its own module; the job client is not involved."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from server import cli

ROOT = Path(__file__).resolve().parents[2]
LLADA_SERVER = str(Path(sys.executable).with_name("llada-server"))


def test_status_without_a_stack_says_so_and_exits_not_running(tmp_path, capsys):
    code = cli.main(["status", "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3, err  # server.embedded's "not running"
    assert f"no stack recorded in {tmp_path}" in out


def test_down_without_a_stack_is_a_no_op(tmp_path, capsys):
    assert cli.main(["down", "--data-dir", str(tmp_path)]) == 0
    assert "no stack recorded" in capsys.readouterr().out


def test_migrate_then_keys_list_on_a_fresh_database(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert cli.main(["migrate", "--url", url]) == 0
    assert cli.main(["keys", "create", "--tenant", "acme", "--database-url", url]) == 0
    key = capsys.readouterr().out.strip()
    assert cli.main(["keys", "list", "--database-url", url]) == 0
    listed = capsys.readouterr().out
    assert "acme" in listed and key not in listed


def test_run_refuses_bad_input_naming_the_field(capsys):
    assert cli.main(["run", "t2i", "x", "--width", "-1"]) == 2
    assert "width" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code", [([], 2), (["--help"], 0), (["serve"], 2)])
def test_usage_lists_every_command(argv, code, capsys):
    assert cli.main(argv) == code
    out, err = capsys.readouterr()
    text = out + err
    assert all(f"  {name} " in text for name in cli.COMMANDS)
    assert ("unknown command 'serve'" in err) == (argv == ["serve"])


def test_the_console_script_is_installed_and_answers():
    done = subprocess.run([LLADA_SERVER, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "llada-server up" in done.stdout


def _imports(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
    return found


def test_the_job_client_imports_no_server_side_code():
    server_side = ("workers", "services", "server")
    assert not {m for m in _imports("client") if m.split(".")[0] in server_side}


def test_nothing_below_the_server_commands_imports_them():
    for folder in ("shared", "services", "workers", "client"):
        assert not {m for m in _imports(folder) if m.split(".")[0] == "server"}, folder


def test_worker_hands_the_process_to_celery_as_deployed(monkeypatch):
    execs = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: execs.append((path, argv)))
    cli.main(["worker", "--hostname", "w1@%h"])
    assert execs == [(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                                       "--prefetch-multiplier=1", "--hostname", "w1@%h"])]


def test_the_gateway_takes_only_settings(capsys):
    assert cli.main(["gateway", "--help"]) == 0 and "LLADA_GRPC_LISTEN" in capsys.readouterr().out
    assert cli.main(["gateway", "--port", "1"]) == 2 and "takes no arguments" in capsys.readouterr().err

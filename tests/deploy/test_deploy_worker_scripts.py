"""The worker images' shell scripts: the CPU entrypoint that makes the tiny checkpoint once, and the
preStop drain hook that turns a pod deletion into Celery's warm shutdown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from tests.deploy.deploy_paths import REPO

ENTRYPOINT = REPO / "docker" / "worker-cpu-entrypoint.sh"
DRAIN = REPO / "docker" / "worker-drain.sh"


@pytest.fixture
def python_double(tmp_path):
    """A `python` first on PATH that records its arguments and writes a config.json where asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "python-calls.log"
    double = bin_dir / "python"
    double.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        mkdir -p "$3" && echo "{{}}" > "$3/config.json"
    """))
    double.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return env, log


def test_cpu_entrypoint_makes_the_tiny_checkpoint_once_then_runs_the_command(tmp_path, python_double):
    env, log = python_double
    env["LLADA_MODEL_PATH"] = str(tmp_path / "models" / "tiny")
    for _ in range(2):
        result = subprocess.run(["sh", str(ENTRYPOINT), "echo", "worker", "started"], env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("worker started")
    calls = log.read_text().splitlines()
    assert calls == [f"-m workers.model.tiny_checkpoint {tmp_path / 'models' / 'tiny'}"]


def test_cpu_entrypoint_stops_when_the_checkpoint_cannot_be_made(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", LLADA_MODEL_PATH=str(tmp_path / "m"))
    result = subprocess.run(["sh", str(ENTRYPOINT), "echo", "must not run"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "must not run" not in result.stdout


def _can_unshare_pid() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_pid(), reason="cannot create a PID namespace here (needs unshare as root)")
def test_drain_hook_makes_pid_1_finish_its_job_and_exit(tmp_path):
    """In a fresh PID namespace a worker double is PID 1, as Celery (under tini) is in the container.
    The hook, run beside it as kubelet's exec would, must trigger its SIGTERM handler (warm shutdown);
    the double finishes its 'job' and exits, which ends the namespace and the waiting hook."""
    marker = tmp_path / "job-finished"
    worker_double = tmp_path / "worker_double.py"
    worker_double.write_text(textwrap.dedent(f"""\
        import os, signal, subprocess, sys, time
        assert os.getpid() == 1
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(time.monotonic()))
        hook = subprocess.Popen(["sh", {str(DRAIN)!r}])
        deadline = time.monotonic() + 10
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stopping:
            sys.exit(2)  # the hook never asked for a shutdown
        time.sleep(0.5)  # the running job finishes
        open({str(marker)!r}, "w").write("done")
        if hook.poll() is not None:
            sys.exit(4)  # the hook returned before the worker had exited
        sys.exit(0)
    """))
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(worker_double)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "done"

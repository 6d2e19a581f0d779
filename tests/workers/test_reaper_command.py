"""`python -m workers.reaper`, run in-process through its `main()`: one pass with `--once` and what it prints, a
pass that fails, a bad interval, and the long-running loop with its pass file, metrics and SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared import attempts
from shared import repository as repo
from shared.db import Job, make_engine, session_factory, upgrade
from shared.db.types import utcnow
from shared.health_file import read_health_file
from workers import reaper, reaper_metrics


@pytest.fixture
def data_dir(tmp_path, monkeypatch, process_state):
    """The embedded backends under tmp_path, as the reaper's settings read them from the environment."""
    monkeypatch.setenv("LLADA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLADA_HEARTBEAT_TIMEOUT_S", "30")
    return tmp_path


def stale_running_job(data_dir) -> str:
    url = f"sqlite:///{data_dir / 'jobs.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        job = repo.submit_job(s, tenant="t1", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                              input_keys={}).job
        attempts.claim_job(s, job.id, "gone-worker", heartbeat_timeout_s=30)
        s.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
    engine.dispose()
    return job.id


def state_of(data_dir, job_id: str) -> str:
    engine = make_engine(f"sqlite:///{data_dir / 'jobs.db'}")
    with session_factory(engine)() as s:
        state = repo.load_job(s, job_id).state
    engine.dispose()
    return state


def test_once_runs_one_pass_and_prints_what_it_did(data_dir, capsys):
    job_id = stale_running_job(data_dir)
    assert reaper.main(["--once"]) == 0
    assert capsys.readouterr().out == "requeued=1 dead=0 resent=0 expired=0 swept=0\n"
    assert state_of(data_dir, job_id) == "QUEUED"
    assert list((data_dir / "broker").rglob("*.msg")), "the re-queued job's message was not sent"


def test_once_on_a_database_it_cannot_use_says_why_in_one_line(data_dir, capsys):
    assert reaper.main(["--once"]) == 1  # never migrated
    err = capsys.readouterr().err
    assert err.startswith("reaper: pass failed: OperationalError: ") and "no such table" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_the_interval_must_be_positive(data_dir, capsys, interval):
    with pytest.raises(SystemExit) as exited:
        reaper.main(["--interval", interval])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith("python -m workers.reaper: error: --interval must be > 0\n")


def test_help_names_the_command_and_its_options(data_dir, capsys):
    with pytest.raises(SystemExit) as exited:
        reaper.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    assert out.startswith("usage: python -m workers.reaper [-h] [--once] [--interval INTERVAL] ")
    assert reaper.__doc__.splitlines()[0] in out
    assert "--once one pass, then exit" in out and "--interval INTERVAL seconds between passes" in out


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_it_logs_as_the_reaper_in_the_format_the_settings_ask(data_dir, capsys, monkeypatch, log_format):
    monkeypatch.setenv("LLADA_LOG_FORMAT", log_format)
    stale_running_job(data_dir)
    assert reaper.main(["--once"]) == 0
    logging.getLogger("llada.reaper").warning("after the pass")
    [line] = [line for line in capsys.readouterr().err.splitlines() if "after the pass" in line]
    if log_format == "json":
        assert json.loads(line)["service"] == "reaper"
    else:
        assert not line.startswith("{") and "WARNING" in line


METRICS = [("llada_reaper_jobs_total", {"action": "requeued"}), ("llada_reaper_passes_total", {"outcome": "ok"}),
           ("llada_reaper_pass_seconds_count", {}), ("llada_reaper_pass_seconds_sum", {})]


class MetricsServerRecorderDouble:
    """Stands in for shared.metrics_server.serve_metrics: records what would be served, listens on nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, registry, port, host):
        self.calls.append((registry, port, host))
        return True


def test_the_loop_records_each_pass_serves_metrics_and_stops_on_sigterm(data_dir, monkeypatch):
    job_id = stale_running_job(data_dir)
    pass_file = data_dir / "reaper-pass.json"
    monkeypatch.setenv("LLADA_REAPER_PASS_FILE", str(pass_file))
    monkeypatch.setenv("LLADA_REAPER_METRICS_PORT", "9555")
    monkeypatch.setenv("LLADA_METRICS_HOST", "127.0.0.2")
    metrics = MetricsServerRecorderDouble()
    monkeypatch.setattr(reaper, "serve_metrics", metrics)
    passes = []
    default_sigterm = signal.getsignal(signal.SIGTERM)

    def stop_after_two_passes():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            record = read_health_file(pass_file)
            if record is not None and (not passes or record.facts["written_at"] != passes[-1]["written_at"]):
                passes.append(record.facts)
                if len(passes) == 2:
                    break
            time.sleep(0.01)
        if signal.getsignal(signal.SIGTERM) is not default_sigterm:  # main's handler: never kill the test run
            os.kill(os.getpid(), signal.SIGTERM)

    before = {name: reaper_metrics.REGISTRY.get_sample_value(name, labels) for name, labels in METRICS}
    stopper = threading.Thread(target=stop_after_two_passes)
    stopper.start()
    assert reaper.main(["--interval", "0.05"]) == 0
    stopper.join(5)
    assert len(passes) == 2 and all(facts["ok"] and facts["interval_s"] == 0.05 for facts in passes)
    assert not pass_file.exists()  # removed on the way out: a stopped reaper is not a healthy one
    assert metrics.calls == [(reaper_metrics.REGISTRY, 9555, "127.0.0.2")]
    assert state_of(data_dir, job_id) == "QUEUED"
    grew = {name: reaper_metrics.REGISTRY.get_sample_value(name, labels) - before[name] for name, labels in METRICS}
    assert grew["llada_reaper_jobs_total"] == 1  # the one stale job, re-queued once
    assert grew["llada_reaper_passes_total"] >= 2 and grew["llada_reaper_pass_seconds_count"] >= 2
    assert 0 < grew["llada_reaper_pass_seconds_sum"] < 10 * grew["llada_reaper_pass_seconds_count"]

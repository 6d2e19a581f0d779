"""A worker process's context (workers.tasks): built once per process from the settings in the environment, with
the executor they name; the model loaded at warm-up, a model that cannot load stopping the worker; the executor
closed when the process lets its context go."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared import repository as repo
from shared.db import upgrade
from shared.events import EmbeddedEventBus
from shared.jobs import validate_params
from shared.queue import broker_priority
from shared.settings import Settings
from tests.shared.test_queue import receive
from workers import tasks
from workers.executor import ModelUnavailable
from workers.executor_choice import jobs_at_once
from workers.lifecycle import EXIT_MODEL_UNAVAILABLE, Lifecycle


class ExecutorDouble:
    """What `Settings.worker_executor = "module:factory"` builds: records the settings, loads and closes."""

    built: list["ExecutorDouble"] = []

    def __init__(self, settings, *, load_error: Exception | None = None, close_error: Exception | None = None):
        self.settings = settings
        self.load_error, self.close_error = load_error, close_error
        self.loads = self.closes = 0
        ExecutorDouble.built.append(self)

    def load(self) -> None:
        self.loads += 1
        if self.load_error is not None:
            raise self.load_error

    def close(self) -> None:
        self.closes += 1
        if self.close_error is not None:
            raise self.close_error


def resident(settings):
    return ExecutorDouble(settings)


def unloadable(settings):
    return ExecutorDouble(settings, load_error=ModelUnavailable("no model at /models/missing"))


def failing_to_close(settings):
    return ExecutorDouble(settings, close_error=RuntimeError("actor gone"))


class WithoutLoad:
    """An executor that loads nothing ahead (e.g. the benchmark's no-compute one)."""

    def __init__(self, settings):
        self.settings = settings


@pytest.fixture
def worker_env(tmp_path, monkeypatch, process_state):
    """A worker's environment under tmp_path, a fresh lifecycle, and no context left from another test."""
    monkeypatch.setenv("LLADA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLADA_WORKER_EXECUTOR", f"{__name__}:resident")
    monkeypatch.setattr(tasks, "lifecycle", Lifecycle())
    monkeypatch.setattr(tasks, "_context", None)
    monkeypatch.setattr(tasks, "_context_pid", None)
    ExecutorDouble.built.clear()
    return tmp_path


def test_the_context_is_built_once_per_process_from_the_environment(worker_env):
    upgrade(f"sqlite:///{worker_env / 'jobs.db'}")
    ctx = tasks.worker_context()
    assert tasks.worker_context() is ctx
    assert ctx.settings.data_dir == Path(worker_env).resolve()
    assert [executor.settings for executor in ExecutorDouble.built] == [ctx.settings]
    assert ctx.executor is ExecutorDouble.built[0] and ctx.lifecycle is tasks.lifecycle
    job = ctx.db(repo.submit_job, tenant="t", request_id=None, kind="TEXT_TO_IMAGE", params={}, input_keys={}).job
    assert (worker_env / "jobs.db").is_file() and ctx.db(repo.load_job, job.id).id == job.id
    ctx.store.put(f"inputs/{job.id}/image", b"x", "image/png")
    assert (worker_env / "objects" / "inputs" / job.id / "image").read_bytes() == b"x"
    assert ctx.worker_id != tasks.context_from_settings(ctx.settings).worker_id  # one id per process
    assert isinstance(ctx.events, EmbeddedEventBus) and ctx.events.path == Path(worker_env).resolve() / "events.db"
    # A connection for each running job's thread and for its heartbeat's.
    assert ctx.sessions.kw["bind"].pool.size() == 2 * jobs_at_once(ctx.settings)


def test_a_sent_back_job_goes_to_the_settings_broker_with_its_priority(worker_env):
    # A context built from settings of its own, not the environment's: the message goes where they say.
    ctx = tasks.context_from_settings(Settings(data_dir=worker_env / "elsewhere"), executor=ExecutorDouble(None))
    ctx.send("3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f", 7)
    message = receive(ctx.settings)
    assert message.decode()[0] == ["3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"]
    assert message.properties["priority"] == broker_priority(7, ctx.settings.broker_url)


def test_the_celery_task_runs_the_job_with_this_process_context(worker_env, monkeypatch):
    monkeypatch.setenv("LLADA_WORKER_EXECUTOR", "tests.workers.executor_doubles:ScriptedExecutorDouble")
    upgrade(f"sqlite:///{worker_env / 'jobs.db'}")
    ctx = tasks.worker_context()
    params = validate_params("TEXT_TO_IMAGE", {"prompt": "a lighthouse"}, max_prompt_chars=100)
    job = ctx.db(repo.submit_job, tenant="t", request_id=None, kind="TEXT_TO_IMAGE",
                 params=params.model_dump(mode="json"), input_keys={}).job
    assert tasks.run_job(job.id) == "SUCCEEDED"
    assert ctx.db(repo.load_job, job.id).state == "SUCCEEDED"


def test_a_forked_child_builds_its_own_context(worker_env, monkeypatch):
    parents = tasks.worker_context()
    monkeypatch.setattr(tasks.os, "getpid", lambda: -1)  # as a prefork pool child sees itself
    childs = tasks.worker_context()
    assert childs is not parents and len(ExecutorDouble.built) == 2
    tasks.release_worker_context()  # the child's
    assert ExecutorDouble.built[1].closes == 1 and ExecutorDouble.built[0].closes == 0


def test_release_closes_the_executor_once_and_a_new_context_follows(worker_env):
    first = tasks.worker_context()
    tasks.release_worker_context()
    tasks.release_worker_context()
    assert first.executor.closes == 1
    assert tasks.worker_context() is not first


def test_a_parent_after_fork_closes_nothing_of_its_child(worker_env, monkeypatch):
    ctx = tasks.worker_context()
    with monkeypatch.context() as forked:
        forked.setattr(tasks.os, "getpid", lambda: -1)
        tasks.release_worker_context()
    assert ctx.executor.closes == 0
    assert tasks.worker_context() is ctx


def test_an_executor_that_fails_to_close_is_logged_not_raised(worker_env, monkeypatch, caplog):
    monkeypatch.setenv("LLADA_WORKER_EXECUTOR", f"{__name__}:failing_to_close")
    tasks.worker_context()
    with caplog.at_level(logging.WARNING, logger="llada.worker"):
        tasks.release_worker_context()
    assert "could not release the model cleanly" in caplog.text and "actor gone" in caplog.text


def test_warm_up_loads_the_model_once_in_this_process(worker_env):
    assert tasks.warm_up() is True
    assert [executor.loads for executor in ExecutorDouble.built] == [1]
    assert tasks.lifecycle.exit_code() == 0


def test_a_model_that_cannot_load_stops_the_worker(worker_env, monkeypatch, caplog):
    monkeypatch.setenv("LLADA_WORKER_EXECUTOR", f"{__name__}:unloadable")
    with caplog.at_level(logging.ERROR, logger="llada.worker"):
        assert tasks.warm_up() is False
    assert tasks.lifecycle.exit_code() == EXIT_MODEL_UNAVAILABLE and not tasks.lifecycle.ready()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.reason == "no model at /models/missing"


def test_an_executor_without_a_load_step_is_ready_at_once(worker_env, monkeypatch):
    monkeypatch.setenv("LLADA_WORKER_EXECUTOR", f"{__name__}:WithoutLoad")
    assert tasks.warm_up() is True
    assert tasks.lifecycle.exit_code() == 0
    tasks.release_worker_context()  # nothing to close: no error

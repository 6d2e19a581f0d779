"""Celery's own tools see the worker's tasks: on the Redis broker a real worker sends task events, received here
the way `celery events` and Flower receive them (Celery's event receiver on the broker's event exchange)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from tests.workers.worker_process import WorkerStack

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def stack(tmp_path):
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    stack = WorkerStack(tmp_path, broker_url=REDIS_URL, settings={"LLADA_QUEUE_NAME": f"events-{uuid.uuid4().hex}"})
    yield stack
    stack.close()


@pytest.mark.slow
def test_a_job_shows_as_received_started_and_succeeded_task_events(stack):
    from celery import Celery

    app = Celery(broker=REDIS_URL, set_as_current=False)
    seen: list[dict] = []
    listening = threading.Event()
    done = threading.Event()
    job_ids: list[str] = []

    def on_event(event):
        seen.append(event)
        if event["type"] == "task-succeeded" and any(
                e["type"] == "task-received" and e["uuid"] == event["uuid"] and job_ids and job_ids[0] in e["args"]
                for e in seen):
            done.set()

    receivers = []

    def listen():
        with app.connection_for_read() as connection:
            receivers.append(app.events.Receiver(connection, handlers={"*": on_event}))
            listening.set()
            try:
                receivers[0].capture(limit=None, timeout=30, wakeup=False)
            except TimeoutError:
                pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(10)
    try:
        stack.start_worker()
        job_ids.append(stack.submit("a fox for the event stream"))
        stack.wait_state(job_ids[0], "SUCCEEDED")
        assert done.wait(20), [e["type"] for e in seen]
    finally:
        receivers[0].should_stop = True
        listener.join(5)
    ours = [e for e in seen if e.get("uuid") == next(e["uuid"] for e in seen if e["type"] == "task-succeeded")]
    assert [e["type"] for e in ours] == ["task-received", "task-started", "task-succeeded"]
    assert ours[0]["name"] == "llada.run_job"

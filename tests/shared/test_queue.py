import uuid

import pytest
import redis

from shared.queue import RUN_JOB_TASK, broker_priority, enqueue_run_job, producer_app
from shared.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


def receive(settings, timeout=10):
    """What a worker would get: the next message on the job queue."""
    with producer_app(settings).connection_for_read() as conn:
        queue = conn.SimpleQueue(settings.queue_name)
        try:
            message = queue.get(timeout=timeout)
            message.ack()
            return message
        finally:
            queue.close()


def test_filesystem_broker_carries_only_the_job_id(tmp_path):
    settings = Settings(data_dir=tmp_path)
    task_id = enqueue_run_job("job-123", priority=5, settings=settings)
    assert list((tmp_path / "broker" / "queue").glob("*.msg"))  # persisted, survives a restart
    message = receive(settings)
    assert message.headers["task"] == RUN_JOB_TASK and message.headers["id"] == task_id
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == (["job-123"], {})


def test_redis_broker_with_priorities():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at " + REDIS_URL)
    settings = Settings(broker_url=REDIS_URL, queue_name=f"llada-test-{uuid.uuid4().hex[:8]}")
    try:
        enqueue_run_job("low", priority=0, settings=settings)
        enqueue_run_job("high", priority=9, settings=settings)
        first, second = receive(settings), receive(settings)
        assert [first.decode()[0], second.decode()[0]] == [["high"], ["low"]]  # higher priority first
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"*{settings.queue_name}*"):
            client.delete(key)


def test_priority_mapping():
    assert broker_priority(9, REDIS_URL) == 0 and broker_priority(0, REDIS_URL) == 9
    assert broker_priority(7, "amqp://x") == 7
    assert broker_priority(42, "amqp://x") == 9

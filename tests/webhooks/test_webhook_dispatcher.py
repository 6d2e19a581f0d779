"""The dispatcher end to end (services.webhooks.dispatcher): jobs driven as a worker drives them, dispatchers in
this process (and one in its own, to be killed), a real receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from client import verify_webhook
from shared import attempts
from shared import repository as repo
from shared.db.models import WebhookDelivery
from shared.db.types import utcnow
from tests.webhooks.conftest import TENANT, WebhookWorld
from tests.webhooks.receiver import LoopbackReceiver
from tests.deadlines import deadline_s

DEADLINE_S = deadline_s(15)


def rows(world, job_id=None) -> list[WebhookDelivery]:
    def read(s):
        query = select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        if job_id is not None:
            query = query.where(WebhookDelivery.job_id == job_id)
        found = list(s.scalars(query.execution_options(populate_existing=True)))
        s.commit()
        return found
    return world.db(read)


def wait_rows(world, condition, job_id=None) -> list[WebhookDelivery]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = rows(world, job_id)
        if condition(found):
            return found
        assert time.monotonic() < deadline, [(r.event, r.delivery_state, r.tries, r.error) for r in found]
        time.sleep(0.02)


def settled(found) -> bool:
    return bool(found) and all(r.delivery_state != "pending" for r in found)


def scheme_verifies(secret: str, headers: dict, body: bytes) -> bool:
    """The Standard Webhooks scheme written out: HMAC-SHA256 over "id.timestamp.body", base64, after "v1,"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(entry.split(",", 1)[1], expected) for entry in headers["webhook-signature"].split())


def test_each_event_arrives_signed_verifiable_three_ways_with_fresh_output_urls(world, receiver):
    job = world.submit(receiver.url(), ("started", "completed"))
    world.start(world.dispatcher(presign=lambda key: f"https://objects.example/{key}?signed"))
    attempt = world.claim(job.id)
    world.db(attempts.finish_job, attempt, output_keys={"image": f"results/{job.id}/1/image.png"})
    got = receiver.wait_for(2)
    found = wait_rows(world, settled, job.id)
    assert [(r.event, r.delivery_state, r.status_code, r.tries) for r in found] == [
        ("started", "delivered", 204, 1), ("completed", "delivered", 204, 1)]
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(r.id for r in found)
    for request in got:
        assert verify_webhook(world.secret, request.headers, request.body)["id"] == job.id
        Webhook(world.secret).verify(request.body, request.headers)  # the library receivers use
        assert scheme_verifies(world.secret, request.headers, request.body)
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    bodies = {json.loads(r.body)["state"]: json.loads(r.body) for r in got}
    assert set(bodies) == {"JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"}
    [image] = bodies["JOB_STATE_SUCCEEDED"]["outputs"]["objects"]
    assert image["url"] == f"https://objects.example/results/{job.id}/1/image.png?signed" and image["urlExpiresAt"]


def test_a_receiver_down_then_up_gets_the_event_with_the_same_id(world):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = world.submit(f"http://127.0.0.1:{port}/hook")
    world.db(repo.request_cancel, TENANT, job.id)
    world.start()
    [failed_try] = wait_rows(world, lambda found: found and found[0].tries >= 1 and found[0].error, job.id)
    assert failed_try.delivery_state == "pending" and failed_try.status_code is None
    late = LoopbackReceiver(port)
    try:
        [request] = late.wait_for(1)
        assert request.headers["webhook-id"] == failed_try.id
        [delivered] = wait_rows(world, settled, job.id)
        assert delivered.delivery_state == "delivered" and delivered.tries >= 2
    finally:
        late.close()


def test_a_receiver_failing_forever_fails_the_delivery_after_the_bounded_tries(tmp_path, receiver):
    world = WebhookWorld(tmp_path, webhook_max_tries=3)
    try:
        receiver.status = 500
        job = world.submit(receiver.url())
        world.db(repo.request_cancel, TENANT, job.id)
        world.start()
        [failed] = wait_rows(world, settled, job.id)
        assert (failed.delivery_state, failed.tries, failed.status_code) == ("failed", 3, 500)
        assert failed.error == "answered HTTP 500 (given up after 3 tries)"
        assert [r.headers["webhook-id"] for r in receiver.requests] == [failed.id] * 3
    finally:
        world.stop()


def test_a_private_address_is_refused_and_nothing_is_sent(tmp_path, receiver):
    world = WebhookWorld(tmp_path, webhook_allow_networks=[])
    try:
        job = world.submit(receiver.url(host="localhost"))
        world.db(repo.request_cancel, TENANT, job.id)
        world.start()
        [refused] = wait_rows(world, settled, job.id)
        assert (refused.delivery_state, refused.tries) == ("failed", 1)
        assert "resolves to" in refused.error and "loopback address" in refused.error
        assert receiver.requests == []
    finally:
        world.stop()


def test_cancelled_and_failed_jobs_each_send_completed_once_with_their_state(world, receiver):
    cancelled, failed = world.submit(receiver.url()), world.submit(receiver.url())
    world.db(repo.request_cancel, TENANT, cancelled.id)
    world.db(attempts.fail_job, world.claim(failed.id), code="INTERNAL", message="boom")
    world.start()
    wait_rows(world, lambda found: len(found) == 2 and settled(found))
    states = sorted((json.loads(r.body)["id"], json.loads(r.body)["state"]) for r in receiver.requests)
    assert states == sorted([(cancelled.id, "JOB_STATE_CANCELLED"), (failed.id, "JOB_STATE_FAILED")])


@pytest.mark.slow
def test_progress_reaches_the_receiver_at_most_every_half_second_the_newest_step(world, receiver):
    job = world.submit(receiver.url(), ("progress", "completed"))
    world.start()
    attempt = world.claim(job.id)
    began = time.monotonic()
    step = 0
    while time.monotonic() < began + 1.6:
        step += 1
        assert world.db(attempts.record_progress, attempt, "denoise", step, 10_000)
        time.sleep(0.01)
    ran_s = time.monotonic() - began
    world.db(attempts.finish_job, attempt, output_keys={})
    wait_rows(world, settled, job.id)
    progress = [r for r in receiver.requests if json.loads(r.body)["state"] == "JOB_STATE_RUNNING"]
    steps = [json.loads(r.body)["progress"]["step"] for r in progress]
    gaps = [b.at - a.at for a, b in zip(progress, progress[1:])]
    assert 2 <= len(progress) <= ran_s / 0.5 + 1 and all(gap >= 0.45 for gap in gaps), (ran_s, gaps)
    # Coalesced, not queued: far fewer deliveries than steps, each with a newer step than the last.
    assert steps == sorted(steps) and steps[-1] > steps[0] and 4 * len(progress) < step
    assert [json.loads(r.body)["state"] for r in receiver.requests].count("JOB_STATE_SUCCEEDED") == 1


def test_two_dispatchers_deliver_a_burst_each_event_once(world, receiver):
    jobs = [world.submit(receiver.url()) for _ in range(30)]
    for job in jobs:
        world.db(repo.request_cancel, TENANT, job.id)
    world.start(world.dispatcher("d1"))
    world.start(world.dispatcher("d2"))
    wait_rows(world, lambda found: len(found) == 30 and settled(found))
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 30 and len(set(ids)) == 30


def _dispatcher_process(world) -> subprocess.Popen:
    env = {**os.environ, "LLADA_DATA_DIR": str(world.settings.data_dir), "LLADA_WEBHOOK_ALLOW_HTTP": "true",
           "LLADA_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]', "LLADA_WEBHOOK_POLL_INTERVAL_S": "0.05",
           "LLADA_LOG_FORMAT": "text"}
    return subprocess.Popen([sys.executable, "-m", "services.webhooks", "--grace", "10"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_dispatcher_killed_mid_try_loses_no_event(world, receiver):
    receiver.release.clear()  # the receiver holds the request: the dispatcher is mid-try when killed
    job = world.submit(receiver.url())
    world.db(repo.request_cancel, TENANT, job.id)
    process = _dispatcher_process(world)
    try:
        [first] = receiver.wait_for(1, timeout_s=30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    [held] = rows(world, job.id)
    assert (held.delivery_state, held.tries, held.claimed_by is not None) == ("pending", 1, True)
    # Its lease runs out (aged in the row, not waited for); the next dispatcher tries again, same id.
    world.db(lambda s: (s.execute(update(WebhookDelivery).values(claimed_until=utcnow() - timedelta(seconds=1))),
                        s.commit()))
    receiver.release.set()
    world.start()
    second = receiver.wait_for(2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == held.id
    [delivered] = wait_rows(world, settled, job.id)
    assert (delivered.delivery_state, delivered.tries) == ("delivered", 2)


@pytest.mark.slow
def test_sigterm_lets_the_try_in_flight_finish(world, receiver):
    receiver.release.clear()
    job = world.submit(receiver.url())
    world.db(repo.request_cancel, TENANT, job.id)
    process = _dispatcher_process(world)
    try:
        receiver.wait_for(1, timeout_s=30)
        process.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):  # draining, not gone: the receiver has not answered yet
            process.wait(0.5)
        receiver.release.set()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    [delivered] = rows(world, job.id)
    assert (delivered.delivery_state, delivered.tries, len(receiver.requests)) == ("delivered", 1, 1)


def test_on_postgres_a_committed_event_wakes_an_idle_dispatcher_at_once(tmp_path, receiver):
    from tests.postgres_databases import throwaway_database

    with throwaway_database("llada_webhooks") as url:
        # A poll far longer than the deadline below: only the NOTIFY of the event's commit can explain a delivery.
        pass_file = tmp_path / "webhooks.pass"
        world = WebhookWorld(tmp_path, database_url=url, webhook_poll_interval_s=30, webhook_pass_file=pass_file)
        try:
            job = world.submit(receiver.url())
            world.start()
            deadline = time.monotonic() + DEADLINE_S
            while not pass_file.exists():  # its first pass went by: now it is idle, waiting on its 30 s poll
                assert time.monotonic() < deadline
                time.sleep(0.02)
            ended = time.monotonic()
            world.db(repo.request_cancel, TENANT, job.id)
            [request] = receiver.wait_for(1, timeout_s=5)
            assert json.loads(request.body)["state"] == "JOB_STATE_CANCELLED" and request.at - ended < 2
        finally:
            world.stop()

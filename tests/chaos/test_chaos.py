"""Chaos trials against the production-shaped stack (chaos_stack.py). Each injects one kind of fault many times,
lets the stack settle, and checks every promise: every job terminal exactly once, no SUCCEEDED job without its
output object, every output the recorded attempt's own (never a paused worker's late bytes), no orphan object,
nothing stuck, no CANCELLED or FAILED job with outputs. Bounded: each trial stops by itself."""

from __future__ import annotations

import io
import random
import threading
import time

from PIL import Image

from tests.chaos.chaos_stack import STEP_S, STEPS, TERMINAL, wait_until
from client import LladaError

JOB_S = STEPS * STEP_S  # how long a job computes
SEED = 20261206  # the trials' random moments, fixed so a failure can be replayed


def t2i(client, prompt: str, **kwargs) -> str:
    return client.submit_text_to_image(prompt, width=256, height=256, **kwargs).id


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_workers_killed_mid_job_fifteen_times(chaos, record):
    rng = random.Random(SEED)
    with chaos.client() as client:
        jobs = [t2i(client, f"kill {i}") for i in range(18)]
    kills = 0
    while kills < 15:
        running = wait_until(lambda: next((j for j in jobs if chaos.worker_running(j)), None), 30,
                             "a job running")
        time.sleep(rng.uniform(0.0, JOB_S * 1.2))  # mid-steps, during the upload, just after the end
        victim = chaos.worker_running(running)
        if victim is None:
            continue  # it finished meanwhile: kill another
        chaos.kill_worker(victim)
        chaos.start_worker(victim)
        kills += 1
    for name in chaos.workers:
        chaos.wait_worker_ready(name)
    record(chaos.check("SIGKILL a worker mid-job x15", jobs, faults=kills))


def test_frozen_worker_wakes_while_the_next_attempt_runs_five_times(chaos, record):
    """SIGSTOP a worker past its lease, let the other worker claim the job, SIGCONT the first while the new
    attempt runs: the zombie goes on (to its next step, or to upload and finish) and must write nothing.
    Three rounds freeze it between computing and uploading (the double's "hold"), two at random steps."""
    rng = random.Random(SEED + 1)
    jobs, freezes = [], 0
    with chaos.client() as client:
        for round_ in range(5):
            holding = round_ < 3
            job_id = t2i(client, f"{'hold' if holding else 'zombie'} {round_}")
            jobs.append(job_id)
            frozen = wait_until(lambda: chaos.worker_running(job_id), 30, "the job running")
            if holding:  # its last step reported: it sits on its output, about to upload
                wait_until(lambda: chaos.job(job_id).progress_step == STEPS, 30, "the last step")
            else:
                time.sleep(rng.uniform(0.0, JOB_S))
            if chaos.worker_running(job_id) != frozen:
                continue
            chaos.freeze_worker(frozen)
            freezes += 1
            try:
                wait_until(lambda: chaos.job(job_id).attempts >= 2 or chaos.job(job_id).state in TERMINAL, 30,
                           "the other worker claiming the job")
            finally:
                chaos.thaw_worker(frozen)  # while the new attempt runs
            chaos.settle([job_id], timeout=30)
    assert freezes >= 3
    record(chaos.check("SIGSTOP a worker past its lease, SIGCONT x5", jobs, faults=freezes))


def test_redis_restarted_with_jobs_queued_and_running(chaos, record):
    with chaos.client() as client:
        jobs = [t2i(client, f"redis {i}") for i in range(8)]
    wait_until(lambda: any(chaos.worker_running(j) for j in jobs), 30, "a job running")
    chaos.restart_redis()  # every queued message is gone; the running jobs report to Postgres
    record(chaos.check("restart Redis with jobs queued and running", jobs, faults=1))


def test_database_connections_cut_mid_run(chaos, record):
    rng = random.Random(SEED + 2)
    jobs: list[str] = []
    with chaos.client() as client:
        jobs += [t2i(client, f"pg {i}") for i in range(6)]
        cut = 0
        for round_ in range(4):
            wait_until(lambda: any(chaos.worker_running(j) for j in jobs) or chaos.settle(jobs, 0) == [], 30,
                       "a job running")
            time.sleep(rng.uniform(0.0, JOB_S))
            cut += chaos.terminate_database_connections()
            # A submit right after the cut: the gateway's pool reconnects (or answers UNAVAILABLE: retry).
            jobs.append(submit_retrying(lambda: t2i(client, f"pg after cut {round_}", request_id=f"pg-{round_}")))
        # Then an outage: no connection at all for a while, shorter than a lease (2 s here; 60 s by default).
        jobs += [t2i(client, f"pg outage {i}") for i in range(4)]
        wait_until(lambda: any(chaos.worker_running(j) for j in jobs[-4:]), 30, "a job running")
        chaos.database_outage(1.0)
    assert cut > 0
    verdict = record(chaos.check("cut every Postgres connection x4, 1 s outage", jobs, faults=5))
    rows = chaos.jobs(jobs).values()
    assert [j.id for j in rows if j.state != "SUCCEEDED"] == [], "a database outage must not fail a job"
    assert [j.id for j in rows if j.attempts != 1] == [], "nor cost one an attempt"
    assert verdict.jobs == 14


def submit_retrying(submit, timeout: float = 30.0) -> str:
    """What a client does with a retryable answer: try again (same request_id, so never twice)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return submit()
        except LladaError as err:
            if err.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED") or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_gateway_killed_during_a_burst_of_submits_with_request_ids(chaos, record):
    """20 image submits with request ids; the gateway dies mid-burst; the clients resubmit all 20 to the new
    one. Each request id gets exactly one job; uploads the dead gateway left without a row are swept."""
    requests = [(f"burst-{i}", png((i * 12, 80, 200 - i * 9))) for i in range(20)]
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()

    def submit_all(client):
        for request_id, image in requests:
            try:
                job = client.submit_edit(image, f"edit {request_id}", request_id=request_id, steps=4)
            except LladaError:
                continue  # the gateway died under this one: resubmitted below
            with lock:
                acknowledged.setdefault(request_id, job.id)

    with chaos.client(timeout=5) as client:
        burst = threading.Thread(target=submit_all, args=(client,))
        burst.start()
        wait_until(lambda: len(acknowledged) >= 5, 30, "part of the burst acknowledged")
        chaos.kill_gateway()
        burst.join(60)
    chaos.start_gateway()
    answers = {}
    with chaos.client() as client:
        for request_id, image in requests:
            answers[request_id] = submit_retrying(
                lambda: client.submit_edit(image, f"edit {request_id}", request_id=request_id, steps=4).id)
    assert all(answers[r] == job_id for r, job_id in acknowledged.items()), "a retry made a second job"
    assert len(set(answers.values())) == len(requests)
    record(chaos.check("SIGKILL the gateway mid-burst, resubmit all", list(answers.values()), faults=1))


def test_cancel_at_random_moments(chaos, record):
    rng = random.Random(SEED + 3)
    jobs, timers = [], []

    def cancel(job_id):
        with chaos.client() as other:
            other.cancel(job_id)

    with chaos.client() as client:
        for i in range(14):
            job_id = t2i(client, f"cancel {i}")
            jobs.append(job_id)
            # Queued (at once), running, or finishing: spread over a job's whole life.
            timers.append(threading.Timer(rng.uniform(0.0, JOB_S * 2.5), cancel, args=(job_id,)))
            timers[-1].start()
    for timer in timers:
        timer.join(10)
    verdict = record(chaos.check("cancel at random moments", jobs, faults=len(timers)))
    states = [j.state for j in chaos.jobs(jobs).values()]
    assert set(states) <= {"CANCELLED", "SUCCEEDED"} and "CANCELLED" in states, states
    assert verdict.jobs == 14

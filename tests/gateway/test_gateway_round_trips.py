"""What each RPC costs the database on Postgres, counted at the driver: statements sent and connections
taken from the pool (each checkout pings once). A submit is one statement, and so is a read: a job with its
place in line, or a page of them, never one statement per job nor one that grows with the queue."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import event

from shared import attempts
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


class DatabaseCalls:
    """Counts the statements sent and the pool checkouts of an engine while `counting`."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine.pool, "checkout", self._checkout)

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        with self.lock:
            self.counts["statements"] += 1
            self.statements.append(" ".join(statement.split())[:120])

    def _checkout(self, *args):
        with self.lock:
            self.counts["checkouts"] += 1

    def during(self, call):
        with self.lock:
            self.counts.clear()
            self.statements.clear()
        result = call()
        with self.lock:
            return result, dict(self.counts), list(self.statements)

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine.pool, "checkout", self._checkout)


@pytest.fixture(scope="module")
def pg(make_gateway, postgres_db_url):
    harness = make_gateway(database_url=postgres_db_url)
    calls = DatabaseCalls(harness.sessions.kw["bind"])
    yield harness, calls
    calls.close()


def key_in_cache(gw, tenant: str):
    """A key whose lookup is cached (the first call with it reads api_keys once; see services.gateway.auth)."""
    md = gw.key(tenant)
    gw.stub.ListJobs(pb.ListJobsRequest(page_size=1), metadata=md)
    return md


def t2i(prompt: str, request_id: str = "", priority: int = 0) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(request_id=request_id, priority=priority,
                               text_to_image=pb.TextToImageParams(prompt=prompt, width=512, height=512))


def test_a_submit_is_one_statement_and_a_replay_inserts_nothing(pg):
    gw, calls = pg
    md = key_in_cache(gw, "rt-submit")
    job, counts, statements = calls.during(lambda: gw.stub.SubmitJob(t2i("a", "rt-1"), metadata=md))
    assert counts == {"statements": 1, "checkouts": 1}, statements
    assert statements[0].startswith("WITH existing AS")
    jobs_before = gw.job_count()
    again, counts, statements = calls.during(lambda: gw.stub.SubmitJob(t2i("a", "rt-1"), metadata=md))
    assert again.id == job.id and gw.job_count() == jobs_before
    # The statement that finds the job (and takes no lock), then the job with its place in line.
    assert counts == {"statements": 2, "checkouts": 1}, statements


def test_reads_cost_a_few_statements_whatever_the_page_or_the_queue(pg):
    gw, calls = pg
    md = key_in_cache(gw, "rt-reads")
    jobs = [gw.stub.SubmitJob(t2i(f"p{i}"), metadata=md) for i in range(6)]
    _, counts, statements = calls.during(lambda: gw.stub.GetJob(pb.GetJobRequest(job_id=jobs[-1].id), metadata=md))
    assert counts == {"statements": 1, "checkouts": 1}, statements  # the job and its place in line

    gw.db(attempts.claim_job, jobs[0].id, "w1", heartbeat_timeout_s=60)
    _, counts, statements = calls.during(lambda: gw.stub.GetJob(pb.GetJobRequest(job_id=jobs[0].id), metadata=md))
    assert counts == {"statements": 1, "checkouts": 1}, statements  # not queued: no place in line to find

    # The newest job is last in line, behind jobs[1:] and whatever other tests of this module left queued.
    last = gw.stub.GetJob(pb.GetJobRequest(job_id=jobs[-1].id), metadata=md).queue_position
    assert last >= 5
    for size in (2, 5):
        page, counts, statements = calls.during(lambda: gw.stub.ListJobs(
            pb.ListJobsRequest(state=pb.JOB_STATE_QUEUED, page_size=size), metadata=md))
        assert len(page.jobs) == size and [j.queue_position for j in page.jobs] == list(range(last, last - size, -1))
        assert counts == {"statements": 1, "checkouts": 1}, statements

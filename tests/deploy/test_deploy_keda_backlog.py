"""The KEDA ScaledObject's backlog query, run against a real Postgres holding jobs in every state:
it counts the jobs that need or hold a worker (QUEUED, RUNNING, CANCELLING) and nothing else, from the counts
the database keeps (migration 0008)."""

from __future__ import annotations


import pytest
from tests.deploy.k8s_manifests import OVERLAYS, RendererMissing, find, kustomize_command, render
from tests.postgres_databases import throwaway_database

psycopg = pytest.importorskip("psycopg")

BACKLOG_STATES = {"QUEUED", "RUNNING", "CANCELLING"}


def _backlog_queries() -> set[str]:
    try:
        kustomize_command()
    except RendererMissing as e:
        pytest.skip(str(e))
    return {find(render(f"overlays/{o}"), "ScaledObject", "llada-worker")["spec"]["triggers"][0]["metadata"]["query"]
            for o in OVERLAYS}


@pytest.fixture(scope="module")
def jobs_database():
    """A throwaway database with the project's schema (its Alembic migrations); plain libpq URL."""
    db = pytest.importorskip("shared.db", reason="shared.db not written yet")
    with throwaway_database("llada_deploy", driver=False) as url:
        db.upgrade(url)
        yield url


def _insert_jobs(url: str, counts: dict[str, int]) -> None:
    from shared.db import Job, make_engine, session_factory
    from shared.jobs import JobKind

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s, s.begin():
            for state, n in counts.items():
                for i in range(n):
                    s.add(Job(tenant=f"tenant-{i % 2}", request_id=None, kind=JobKind.TEXT_TO_IMAGE.value,
                              params={}, input_keys={}, state=state, priority=i % 3,
                              cancel_requested=state == "CANCELLING"))
    finally:
        engine.dispose()


def _run(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        rows = conn.execute(query).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, "KEDA needs exactly one number"
    return rows[0][0]


def test_backlog_query_counts_queued_running_and_cancelling_only(jobs_database):
    from shared.jobs import JobState

    queries = _backlog_queries()
    assert len(queries) == 1, "the overlays disagree on the backlog query"
    [query] = queries
    assert _run(jobs_database, query) == 0, "an empty table must let KEDA scale to the minimum"

    # A different count per state, so that counting any wrong set of states gives a different total.
    counts = {state.value: 2 ** i for i, state in enumerate(JobState)}
    assert set(counts) >= BACKLOG_STATES | {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}
    _insert_jobs(jobs_database, counts)
    assert _run(jobs_database, query) == sum(counts[s] for s in BACKLOG_STATES)


def test_backlog_query_reads_the_kept_counts_not_the_jobs(jobs_database):
    # KEDA polls every few seconds: the query must cost the same with a million queued jobs as with none.
    [query] = _backlog_queries()
    with psycopg.connect(jobs_database) as conn:
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}").fetchall())
    assert "job_queue_counts" in plan and " on jobs" not in plan, plan

"""A reused request_id must ask for the same as the first submit (shared.idempotency, migration 0003):
the repository returns the existing job for the same fingerprint and raises RequestIdReused for another —
in the precheck, in the atomic submit, and when the other submit wins a race — on SQLite and Postgres."""

from __future__ import annotations

import threading
import time

import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text

from shared import repository as repo
from shared.db import Job, make_engine, session_factory, upgrade
from shared.db.migrate import alembic_config
from shared.idempotency import request_fingerprint
from shared.jobs import JobKind, validate_params

LIMITS = repo.QueueLimits(per_tenant=100, total=100)


def fingerprint(kind="TEXT_TO_IMAGE", image=b"", **params) -> str:
    params = validate_params(kind, params, max_prompt_chars=100).model_dump(mode="json")
    return request_fingerprint(kind, params, {"image": image} if image else {})


def submit(s, request_id, fp, *, tenant="acme", prompt="p", limits=None):
    return repo.submit_job(s, tenant=tenant, request_id=request_id, kind="TEXT_TO_IMAGE",
                           params={"prompt": prompt}, input_keys={}, fingerprint=fp, limits=limits)


def job_count(s) -> int:
    count = s.scalar(select(func.count()).select_from(Job))
    s.commit()
    return count


def test_a_fingerprint_stored_by_an_earlier_release_still_matches():
    """Fingerprints outlive the code that made them (jobs.request_fingerprint): a retry that spans an upgrade
    must still be recognised, so the computation is pinned to values a release stored. Key order, non-ASCII
    text and several inputs are all part of it."""
    params = {"width": 512, "prompt": "un phare à l'aube", "steps": 8, "guidance": 4.5}
    assert request_fingerprint("EDIT", params, {"mask": b"m", "image": b"png-bytes"}) == \
        "aa6d80bd8325dbff6fe28d02a80adf7f40b2356800950d5281fd05491d906e16"
    assert request_fingerprint(JobKind.TEXT_TO_IMAGE, {}, {}) == \
        "6d3e206ba05f6da14c86a5fff23fc50acb12a29ab7fffabbc757667eb2802f32"


def test_a_parameter_that_is_not_a_number_has_no_fingerprint():
    with pytest.raises(ValueError):
        request_fingerprint("TEXT_TO_IMAGE", {"guidance": float("nan")}, {})


def test_the_fingerprint_is_what_the_request_asks_for():
    base = fingerprint(prompt="a fox")
    assert fingerprint(prompt="a fox", width=1024, steps=8) == base  # defaults given or left out: the same
    assert fingerprint(prompt="a fox", seed=1) != base
    assert fingerprint(prompt="a fox ") != base
    assert fingerprint("EDIT", image=b"png", instruction="a fox") != fingerprint("UNDERSTAND", image=b"png",
                                                                                  question="a fox")
    assert fingerprint("EDIT", image=b"png-1", instruction="x") != fingerprint("EDIT", image=b"png-2", instruction="x")
    assert len(base) == 64


def test_same_request_returns_the_job_and_another_request_is_refused(s):
    submitted = submit(s, "r1", fingerprint(prompt="p"), limits=LIMITS)
    first, created = submitted.job, submitted.created
    assert created and first.request_fingerprint == fingerprint(prompt="p")
    again = submit(s, "r1", fingerprint(prompt="p"), limits=LIMITS)
    assert (again.job.id, again.created) == (first.id, False)
    with pytest.raises(repo.RequestIdReused) as err:
        submit(s, "r1", fingerprint(prompt="other"), prompt="other", limits=LIMITS)
    assert err.value.job_id == first.id
    with pytest.raises(repo.RequestIdReused):
        repo.precheck_submit(s, tenant="acme", request_id="r1", fingerprint=fingerprint(prompt="other"))
    assert repo.precheck_submit(s, tenant="acme", request_id="r1", fingerprint=fingerprint(prompt="p")).job.id \
        == first.id
    # Another tenant's request id is its own; without a request id nothing is compared or stored.
    assert submit(s, "r1", fingerprint(prompt="other"), tenant="other", prompt="other").created
    submitted = submit(s, None, fingerprint(prompt="p"))
    plain, created = submitted.job, submitted.created
    assert created and plain.request_fingerprint is None
    assert job_count(s) == 3


def test_a_job_from_before_fingerprints_answers_any_retry(s):
    legacy = submit(s, "old", None).job  # as a job submitted before migration 0003
    assert legacy.request_fingerprint is None
    assert submit(s, "old", fingerprint(prompt="anything")).job.id == legacy.id


@pytest.mark.parametrize("prompt, outcome", [("p", "the first job"), ("q", "RequestIdReused")])
@pytest.mark.parametrize("limits", [LIMITS, None], ids=["checked", "unchecked"])
def test_the_loser_of_the_insert_race_gets_the_winners_job_or_is_refused(Session, db_url, limits, prompt, outcome):
    """Postgres: a submit whose statement saw no job for its request id, while another submit's insert of it had
    not committed yet. Its insert waits on the unique index, does nothing once the other commits, and the submit
    answers with that job (same request) or refuses (another request), inserting nothing."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite reads and inserts in one locked transaction: no submit comes between them")
    result = {}
    with Session() as winner:
        winner.add(Job(tenant="acme", request_id="race", request_fingerprint=fingerprint(prompt="p"),
                       kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={}))
        winner.flush()  # inserted, not committed

        def loser():
            with Session() as s:
                try:
                    result["job"] = submit(s, "race", fingerprint(prompt=prompt), prompt=prompt, limits=limits)
                except repo.RequestIdReused as refused:
                    result["refused"] = refused

        thread = threading.Thread(target=loser)
        thread.start()
        deadline = time.monotonic() + 10
        with Session() as probe:
            while not probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'transactionid'")):
                assert time.monotonic() < deadline, "the second insert never waited for the first"
                probe.rollback()
                time.sleep(0.01)
        winner.commit()
        first_id = winner.scalar(select(Job.id).where(Job.request_id == "race"))
    thread.join(10)
    if outcome == "the first job":
        assert (result["job"].job.id, result["job"].created, result["job"].queue_position) == (first_id, False, 1)
    else:
        assert result["refused"].job_id == first_id
    with Session() as s:
        assert job_count(s) == 1


@pytest.mark.parametrize("limits", [LIMITS, None], ids=["checked (advisory lock)", "unchecked (unique constraint)"])
def test_two_submits_racing_with_one_request_id_and_different_params_make_one_job(Session, limits):
    for round_ in range(5):
        request_id = f"race-{round_}"
        barrier = threading.Barrier(2)
        outcomes: list = []

        def racer(prompt: str) -> None:
            with Session() as s:
                barrier.wait(timeout=10)
                try:
                    outcomes.append(submit(s, request_id, fingerprint(prompt=prompt), prompt=prompt,
                                           limits=limits).created)
                except repo.RequestIdReused:
                    outcomes.append("reused")

        threads = [threading.Thread(target=racer, args=(prompt,)) for prompt in ("left", "right")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(map(str, outcomes)) == ["True", "reused"], outcomes
        with Session() as s:
            assert s.scalar(select(func.count()).select_from(Job).where(Job.request_id == request_id)) == 1


def test_migration_0003_downgrades_and_upgrades_keeping_the_jobs(fresh_db_url):
    upgrade(fresh_db_url)
    engine = make_engine(fresh_db_url)
    with session_factory(engine)() as s:
        job_id = submit(s, "kept", fingerprint(prompt="p")).job.id
    engine.dispose()

    command.downgrade(alembic_config(fresh_db_url), "0002")
    engine = make_engine(fresh_db_url)
    assert "request_fingerprint" not in [c["name"] for c in inspect(engine).get_columns("jobs")]
    engine.dispose()
    upgrade(fresh_db_url)

    engine = make_engine(fresh_db_url)
    with session_factory(engine)() as s:
        job = repo.get_job(s, "acme", job_id)
        assert job.params == {"prompt": "p"} and job.request_fingerprint is None
        assert submit(s, "kept", fingerprint(prompt="anything")).job.id == job_id  # answered as before 0003
    engine.dispose()

"""The trigger-kept queue counts and tickets (migration 0008): right after every move a job can make, on
SQLite and Postgres, and the queue positions read from them — exact at the head, a documented upper bound
further back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import case, delete, func, insert, select, update

from shared import attempts
from shared import repository as repo
from shared.db import Job, make_engine, session_factory, upgrade
from shared.db.models import JobQueueCount
from shared.db.types import utcnow
from shared.jobs import JobState

ACTIVE = (JobState.RUNNING.value, JobState.CANCELLING.value)


def submit(s, tenant="acme", priority=0, request_id=None):
    return repo.submit_job(s, tenant=tenant, request_id=request_id, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                           input_keys={}, priority=priority).job


def kept_counts(s) -> dict[tuple[str, int], tuple[int, int]]:
    rows = s.execute(select(JobQueueCount.tenant, JobQueueCount.priority, JobQueueCount.queued,
                            JobQueueCount.active)).all()
    s.commit()
    return {(t, p): (q, a) for t, p, q, a in rows if q or a}


def counted_rows(s) -> dict[tuple[str, int], tuple[int, int]]:
    """The same numbers counted row by row: what the triggers must always agree with."""
    queued = func.sum(case((Job.state == JobState.QUEUED.value, 1), else_=0))
    active = func.sum(case((Job.state.in_(ACTIVE), 1), else_=0))
    rows = s.execute(select(Job.tenant, Job.priority, queued, active).group_by(Job.tenant, Job.priority)).all()
    s.commit()
    return {(t, p): (int(q), int(a)) for t, p, q, a in rows if q or a}


def assert_counts(s, expected: dict[tuple[str, int], tuple[int, int]]) -> None:
    assert kept_counts(s) == counted_rows(s) == expected


def test_counts_follow_every_move_a_job_makes(s):
    a, b, c = submit(s), submit(s), submit(s, tenant="globex", priority=3)
    assert_counts(s, {("acme", 0): (2, 0), ("globex", 3): (1, 0)})
    assert repo.count_queued(s) == 3 and repo.count_queued(s, "acme") == 2 and repo.count_backlog(s) == 3

    attempt = attempts.claim_job(s, a.id, "w1", heartbeat_timeout_s=60)
    assert_counts(s, {("acme", 0): (1, 1), ("globex", 3): (1, 0)})
    assert attempts.heartbeat(s, attempt)  # not a move: nothing changes
    assert_counts(s, {("acme", 0): (1, 1), ("globex", 3): (1, 0)})
    repo.request_cancel(s, "acme", a.id)  # RUNNING → CANCELLING: still active
    assert_counts(s, {("acme", 0): (1, 1), ("globex", 3): (1, 0)})
    attempts.mark_cancelled(s, attempt)
    assert_counts(s, {("acme", 0): (1, 0), ("globex", 3): (1, 0)})

    repo.request_cancel(s, "acme", b.id)  # QUEUED → CANCELLED
    assert_counts(s, {("globex", 3): (1, 0)})

    attempt = attempts.claim_job(s, c.id, "w1", heartbeat_timeout_s=60)
    attempts.hand_back(s, attempt)  # RUNNING → QUEUED
    assert_counts(s, {("globex", 3): (1, 0)})
    attempt = attempts.claim_job(s, c.id, "w2", heartbeat_timeout_s=60)
    s.execute(update(Job).where(Job.id == c.id).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    s.commit()
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=5)[0] == [c.id]  # the reaper re-queues
    assert_counts(s, {("globex", 3): (1, 0)})
    attempt = attempts.claim_job(s, c.id, "w3", heartbeat_timeout_s=60)
    assert_counts(s, {("globex", 3): (0, 1)})
    attempts.finish_job(s, attempt, output_keys={})
    assert_counts(s, {})
    assert repo.count_backlog(s) == 0

    repo.delete_job(s, "globex", c.id)  # a finished job leaves no count behind
    d = submit(s, tenant="initech")
    s.execute(delete(Job).where(Job.id == d.id))  # a queued row removed by hand is counted out too
    s.commit()
    assert_counts(s, {})


def test_a_failed_attempt_and_a_dead_letter_leave_the_counts(s):
    job = submit(s)
    attempt = attempts.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    attempts.fail_job(s, attempt, code="INTERNAL", message="boom")
    other = submit(s)
    attempts.claim_job(s, other.id, "w1", heartbeat_timeout_s=60)
    s.execute(update(Job).where(Job.id == other.id).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    s.commit()
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=1)[1] == [other.id]
    assert_counts(s, {})


def test_tickets_are_given_per_priority_in_submit_order(s):
    jobs = [submit(s, priority=p) for p in (0, 0, 5, 0, 5)]
    tickets = {j.id: t for j, t in ((j, s.scalar(select(Job.queue_ticket).where(Job.id == j.id))) for j in jobs)}
    first = tickets[jobs[0].id]
    assert [tickets[j.id] - first for j in (jobs[0], jobs[1], jobs[3])] == [0, 1, 2]
    assert tickets[jobs[4].id] == tickets[jobs[2].id] + 1


def fresh(s, jobs: list[Job]) -> list[Job]:
    return [repo.load_job(s, job.id) for job in jobs]


@pytest.fixture
def head_of_three(monkeypatch):
    """Positions counted one by one for the first 3 in line (instead of 100), so the limit and one past it
    are a few jobs away."""
    monkeypatch.setattr(repo, "EXACT_POSITION_AHEAD", 3)
    return 3


def test_positions_are_exact_at_the_head_and_an_upper_bound_behind_it(s, head_of_three):
    urgent = submit(s, priority=9)
    line = [submit(s) for _ in range(7)]
    positions = repo.queue_positions(s, [urgent, *line])
    # Exact up to the limit: 3 ahead at its priority (4th in line there), then the bound.
    assert [positions[j.id] for j in line[:head_of_three + 1]] == [2, 3, 4, 5]
    assert [positions[j.id] for j in line[head_of_three + 1:]] == [6, 7, 8]  # no gap: the bound is exact

    # Out of turn: two jobs right behind the head go (a cancel, a worker taking a later job first).
    repo.request_cancel(s, "acme", line[1].id)
    attempts.claim_job(s, line[2].id, "w1", heartbeat_timeout_s=60)
    positions = repo.queue_positions(s, fresh(s, [urgent, *line]))
    true_places = {line[0].id: 2, line[3].id: 3, line[4].id: 4, line[5].id: 5, line[6].id: 6}
    assert positions[line[1].id] == positions[line[2].id] == 0
    for job in (line[0], line[3], line[4]):  # 0, 1 and 2 ahead at its priority, within the exact head
        assert positions[job.id] == true_places[job.id]
    # line[5] has 3 ahead, still within; line[6] has 4 ahead: past the limit, never below its true place and
    # at most the holes (2) above it.
    assert positions[line[5].id] == true_places[line[5].id]
    assert true_places[line[6].id] <= positions[line[6].id] <= true_places[line[6].id] + 2

    # The head moving in turn moves every job behind it up by one.
    attempts.claim_job(s, urgent.id, "w1", heartbeat_timeout_s=60)
    attempts.claim_job(s, line[0].id, "w1", heartbeat_timeout_s=60)
    positions = repo.queue_positions(s, fresh(s, line))
    assert [positions[j.id] for j in (line[3], line[4], line[5], line[6])] == [1, 2, 3, 4]


def test_behind_the_head_a_short_tail_bounds_the_place_and_every_read_tells_the_same(s, head_of_three):
    """Past the exact head, the place is the tighter of two bounds: the tickets since the head's, and the jobs
    queued at the priority. After many jobs ahead left out of turn, the second is the exact one."""
    higher = submit(s, priority=1)
    line = [submit(s) for _ in range(10)]
    for job in line[1:6]:
        repo.request_cancel(s, "acme", job.id)
    last = line[-1]  # 4 queued ahead at its priority (line 0, 6, 7, 8), 9 tickets after the head's
    expected = 1 + 4 + 1
    assert repo.queue_positions(s, [repo.load_job(s, last.id)])[last.id] == expected
    assert repo.get_job_and_position(s, "acme", last.id)[1] == expected
    listed = {row.id: place for row, place in repo.list_jobs_and_positions(s, "acme")[0]}
    assert listed[last.id] == expected and listed[higher.id] == 1


def test_a_requeued_job_keeps_its_place_at_the_front(s):
    first, second = submit(s), submit(s)
    attempt = attempts.claim_job(s, first.id, "w1", heartbeat_timeout_s=60)
    assert repo.queue_position(s, repo.load_job(s, second.id)) == 1
    attempts.hand_back(s, attempt)
    assert [repo.queue_position(s, repo.load_job(s, j.id)) for j in (first, second)] == [1, 2]


def test_a_new_job_is_told_the_place_it_takes(s):
    submit(s, priority=2)
    submit(s, priority=1)
    submit(s, priority=0)
    made = repo.submit_job(s, tenant="globex", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                           input_keys={}, priority=1)
    assert made.queue_position == 3 == repo.queue_position(s, made.job)  # behind the higher and the equal one


def test_an_idempotent_replay_inserts_nothing_and_counts_nothing(s):
    first = repo.submit_job(s, tenant="acme", request_id="r1", kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                            input_keys={}, fingerprint="f")
    for _ in range(3):
        again = repo.submit_job(s, tenant="acme", request_id="r1", kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                                input_keys={}, fingerprint="f")
        assert again.job.id == first.job.id and not again.created and again.queue_position == 1
    assert s.scalar(select(func.count()).select_from(Job)) == 1
    s.commit()
    assert_counts(s, {("acme", 0): (1, 0)})


def test_the_migration_counts_and_tickets_the_jobs_it_finds(fresh_db_url):
    """Jobs stored before 0008 get their counts and tickets (by age) from the migration itself."""
    upgrade(fresh_db_url, "0007")
    engine = make_engine(fresh_db_url)
    Session = session_factory(engine)
    try:
        now = utcnow()
        with Session() as s:  # rows as 0007's code wrote them (the repository of today reads 0008's tables)
            old = [_row_of_0007(s, "acme", p, JobState.QUEUED, now + timedelta(seconds=age))
                   for p, age in ((0, 2), (0, 1), (4, 3))]
            _row_of_0007(s, "globex", 0, JobState.RUNNING, now)
            _row_of_0007(s, "globex", 0, JobState.SUCCEEDED, now)
        upgrade(fresh_db_url)
        with Session() as s:
            assert_counts(s, {("acme", 0): (2, 0), ("acme", 4): (1, 0), ("globex", 0): (0, 1)})
            positions = repo.queue_positions(s, [repo.load_job(s, j.id) for j in old])
            assert [positions[j.id] for j in old] == [3, 2, 1]  # priority first, then age: [1] is older than [0]
            newer = submit(s)
            assert repo.queue_position(s, newer) == 4
            assert_counts(s, {("acme", 0): (3, 0), ("acme", 4): (1, 0), ("globex", 0): (0, 1)})
    finally:
        engine.dispose()


def _row_of_0007(s, tenant: str, priority: int, state: JobState, created_at) -> Job:
    job_id = str(uuid.uuid4())
    s.execute(insert(Job.__table__).values(
        id=job_id, tenant=tenant, kind="TEXT_TO_IMAGE", params={"prompt": "p"}, priority=priority, input_keys={},
        state=state.value, progress_step=0, progress_total=0, attempts=0, handed_back=0, timings={},
        output_keys={}, created_at=created_at, cancel_requested=False))
    s.commit()
    return Job(id=job_id)


def test_recount_puts_right_what_writes_without_the_triggers_left_wrong(s, db_url):
    from shared.queue_counts import recount_queue

    kept = [submit(s), submit(s, priority=2)]
    attempts.claim_job(s, kept[1].id, "w1", heartbeat_timeout_s=60)
    # As a bulk load with the triggers off would leave them: two queued jobs without tickets or counts.
    loaded = [_row_of_0007(s, "bulk", 0, JobState.QUEUED, utcnow() - timedelta(seconds=age)) for age in (1, 2)]
    s.execute(update(JobQueueCount).values(queued=JobQueueCount.queued + 7))
    s.commit()
    s.execute(delete(JobQueueCount).where(JobQueueCount.tenant == "bulk"))
    s.execute(update(Job).where(Job.tenant == "bulk").values(queue_ticket=None))
    s.commit()

    assert recount_queue(s) == {"queued": 3, "active": 1, "ticketed": 2}
    assert_counts(s, {("acme", 0): (1, 0), ("acme", 2): (0, 1), ("bulk", 0): (2, 0)})
    # The loaded jobs line up behind the queued job that had its ticket, the older of them first.
    positions = repo.queue_positions(s, fresh(s, [kept[0], *loaded]))
    assert [positions[j.id] for j in (kept[0], loaded[1], loaded[0])] == [1, 2, 3]
    assert repo.queue_position(s, submit(s)) == 4  # and new jobs behind them


def test_the_recount_command_prints_what_it_found(db_url, capsys):
    from shared.db.__main__ import main

    assert main(["recount", "--url", db_url]) == 0
    assert capsys.readouterr().out.strip() == "0 queued and 0 running jobs counted; 0 queued jobs given a ticket"

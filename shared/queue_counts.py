"""Rebuilding the queue counts and tickets from the jobs themselves, for an operator.

The triggers of migration 0008 keep `job_queue_counts` and the tickets right on every insert, move and delete.
Only writes made with the triggers off (a bulk load under `session_replication_role = replica`, a restore that
skipped them) can leave them wrong; `python -m shared.db recount` puts them right again:
- the counts, recounted per tenant and priority;
- queued jobs without a ticket get the next tickets of their priority, oldest first;
- each priority's last ticket, so that new jobs line up behind every one of them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.jobs import JobState

QUEUED = JobState.QUEUED.value
ACTIVE = (JobState.RUNNING.value, JobState.CANCELLING.value)


def recount_queue(s: Session) -> dict[str, int]:
    """Rebuild the counts and tickets in one transaction; returns what was found: queued and active jobs, and
    how many queued jobs were given a ticket."""
    if s.get_bind().dialect.name == "postgresql":
        # No job may move while its counts are taken (SQLite's BEGIN IMMEDIATE already holds every writer off).
        s.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
    params = {"queued": QUEUED, "running": ACTIVE[0], "cancelling": ACTIVE[1]}
    ticketed = s.execute(text("""
        UPDATE jobs SET queue_ticket = numbered.ticket
        FROM (SELECT j.id, coalesce(last.issued, 0)
                           + row_number() OVER (PARTITION BY j.priority ORDER BY j.created_at, j.id) AS ticket
              FROM jobs AS j
              LEFT JOIN (SELECT priority, max(queue_ticket) AS issued FROM jobs GROUP BY priority) AS last
                     ON last.priority = j.priority
              WHERE j.queue_ticket IS NULL AND j.state = :queued) AS numbered
        WHERE jobs.id = numbered.id"""), params).rowcount
    s.execute(text("DELETE FROM job_queue_tickets"))
    s.execute(text("INSERT INTO job_queue_tickets (priority, issued) "
                   "SELECT priority, max(queue_ticket) FROM jobs WHERE queue_ticket IS NOT NULL GROUP BY priority"))
    s.execute(text("DELETE FROM job_queue_counts"))
    s.execute(text("""
        INSERT INTO job_queue_counts (tenant, priority, queued, active)
        SELECT tenant, priority, sum(CASE WHEN state = :queued THEN 1 ELSE 0 END),
               sum(CASE WHEN state IN (:running, :cancelling) THEN 1 ELSE 0 END)
        FROM jobs GROUP BY tenant, priority"""), params)
    queued, active = s.execute(text(
        "SELECT coalesce(sum(queued), 0), coalesce(sum(active), 0) FROM job_queue_counts")).one()
    s.commit()
    return {"queued": int(queued), "active": int(active), "ticketed": int(ticketed)}

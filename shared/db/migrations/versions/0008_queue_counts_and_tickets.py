"""Queue counts and tickets kept by triggers (issue 20): submits, reads and the autoscaler stop counting rows

- `job_queue_counts` (tenant, priority → queued, active): how many jobs of each are QUEUED and RUNNING or
  CANCELLING, changed by a trigger in the very transaction that inserts, deletes or moves a job — so the
  backpressure checks and the backlog read a handful of rows, never the queue.
- `llada_queue_admission(tenant, priority, per_tenant, total)` (Postgres): a checked submit's decision, inside
  its one INSERT statement (shared.repository.submit_job): it takes the advisory lock that serialises checked
  submits, then reads the counts with a snapshot of its own (a VOLATILE function's statements see what
  committed before the lock was granted), so the lock is held only while the server runs that statement.
- `job_queue_tickets` (priority → issued) and `jobs.queue_ticket`: each job's place in line at its priority,
  given by a trigger on insert (1, 2, 3, … per priority; a re-queued job keeps its ticket, as it kept its
  age before). The queue position reads tickets through the partial index `ix_jobs_queued_ticket`.

It also adds `ix_jobs_retention` (finished_at of finished, not yet expired jobs), so that the reaper's
retention pass reads its candidates in order instead of every finished row.

The state names below are frozen copies of shared.jobs.JobState as of this revision: a new state that is
queued or active needs a migration that replaces these triggers.

On SQLite, a later `batch_alter_table("jobs")` rebuilds the table and drops its triggers: such a migration
must create them again (`create_triggers`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

QUEUED = "'QUEUED'"
# The advisory lock that serialises checked submits: any fixed 64-bit number.
SUBMIT_LOCK_KEY = 0x11ADA_5B317
ACTIVE = "('RUNNING', 'CANCELLING')"
RETENTION = "state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"

_POSTGRES_TRIGGERS = [
    # The ticket: the next number at the job's priority. The row lock on that counter is held to the commit,
    # so tickets at one priority follow the order in which their inserts commit.
    """
    CREATE FUNCTION llada_job_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO job_queue_tickets AS t (priority, issued) VALUES (NEW.priority, 1)
        ON CONFLICT (priority) DO UPDATE SET issued = t.issued + 1
        RETURNING t.issued INTO NEW.queue_ticket;
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER jobs_queue_ticket BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION llada_job_ticket()",
    # The counts: one row per (tenant, priority) changes, in the transaction that changed the job. Tenant and
    # priority never change after the insert, so a move touches exactly one counter row.
    f"""
    CREATE FUNCTION llada_job_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        dq integer := 0;
        da integer := 0;
        row_tenant varchar;
        row_priority integer;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            dq := dq - (OLD.state = {QUEUED})::integer;
            da := da - (OLD.state IN {ACTIVE})::integer;
            row_tenant := OLD.tenant;
            row_priority := OLD.priority;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            dq := dq + (NEW.state = {QUEUED})::integer;
            da := da + (NEW.state IN {ACTIVE})::integer;
            row_tenant := NEW.tenant;
            row_priority := NEW.priority;
        END IF;
        IF dq <> 0 OR da <> 0 THEN
            INSERT INTO job_queue_counts AS c (tenant, priority, queued, active)
            VALUES (row_tenant, row_priority, dq, da)
            ON CONFLICT (tenant, priority) DO UPDATE SET queued = c.queued + dq, active = c.active + da;
        END IF;
        RETURN NULL;
    END $$
    """,
    """CREATE TRIGGER jobs_queue_counts AFTER INSERT OR DELETE OR UPDATE OF state ON jobs
       FOR EACH ROW EXECUTE FUNCTION llada_job_counts()""",
    # Whether a new job of `job_tenant` at `job_priority` fits the limits (`refused` names the one it does not
    # fit: 'tenant' or 'total'), and how many queued jobs it goes behind. NULL limits: no check, no lock.
    f"""
    CREATE FUNCTION llada_queue_admission(job_tenant varchar, job_priority integer, per_tenant bigint,
                                          total bigint, OUT refused text, OUT ahead bigint)
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        mine bigint;
        everyone bigint;
    BEGIN
        IF per_tenant IS NOT NULL OR total IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock({SUBMIT_LOCK_KEY});
        END IF;
        SELECT coalesce(sum(queued), 0), coalesce(sum(queued) FILTER (WHERE tenant = job_tenant), 0),
               coalesce(sum(queued) FILTER (WHERE priority >= job_priority), 0)
        INTO everyone, mine, ahead FROM job_queue_counts;
        refused := CASE WHEN mine >= per_tenant THEN 'tenant' WHEN everyone >= total THEN 'total' END;
    END $$
    """,
]

_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER jobs_queue_ticket AFTER INSERT ON jobs BEGIN
        INSERT INTO job_queue_tickets (priority, issued) VALUES (NEW.priority, 1)
        ON CONFLICT (priority) DO UPDATE SET issued = issued + 1;
        UPDATE jobs SET queue_ticket = (SELECT issued FROM job_queue_tickets WHERE priority = NEW.priority)
        WHERE id = NEW.id;
    END
    """,
    f"""
    CREATE TRIGGER jobs_queue_counts_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_queue_counts (tenant, priority, queued, active)
        VALUES (NEW.tenant, NEW.priority, NEW.state = {QUEUED}, NEW.state IN {ACTIVE})
        ON CONFLICT (tenant, priority) DO UPDATE
        SET queued = queued + excluded.queued, active = active + excluded.active;
    END
    """,
    f"""
    CREATE TRIGGER jobs_queue_counts_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_queue_counts SET queued = queued - (OLD.state = {QUEUED}), active = active - (OLD.state IN {ACTIVE})
        WHERE tenant = OLD.tenant AND priority = OLD.priority;
    END
    """,
    f"""
    CREATE TRIGGER jobs_queue_counts_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
        UPDATE job_queue_counts
        SET queued = queued - (OLD.state = {QUEUED}) + (NEW.state = {QUEUED}),
            active = active - (OLD.state IN {ACTIVE}) + (NEW.state IN {ACTIVE})
        WHERE tenant = NEW.tenant AND priority = NEW.priority;
    END
    """,
]


def create_triggers() -> None:
    for statement in _POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # No job may change while the counts are taken and the triggers put in place.
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "job_queue_counts",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("priority", sa.Integer(), primary_key=True),
        sa.Column("queued", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("active", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "job_queue_tickets",
        sa.Column("priority", sa.Integer(), primary_key=True),
        sa.Column("issued", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue_ticket", sa.BigInteger(), nullable=True))
    # Existing jobs get tickets in the order the queue position used to read them: by age, then id.
    op.execute("""
        UPDATE jobs SET queue_ticket = ranked.ticket
        FROM (SELECT id, row_number() OVER (PARTITION BY priority ORDER BY created_at, id) AS ticket
              FROM jobs) AS ranked
        WHERE jobs.id = ranked.id
    """)
    op.execute("INSERT INTO job_queue_tickets (priority, issued) SELECT priority, max(queue_ticket) FROM jobs "
               "GROUP BY priority")
    op.execute(f"""
        INSERT INTO job_queue_counts (tenant, priority, queued, active)
        SELECT tenant, priority, sum(CASE WHEN state = {QUEUED} THEN 1 ELSE 0 END),
               sum(CASE WHEN state IN {ACTIVE} THEN 1 ELSE 0 END)
        FROM jobs GROUP BY tenant, priority
    """)
    op.create_index("ix_jobs_queued_ticket", "jobs", ["priority", "queue_ticket"],
                    postgresql_where=sa.text(f"state = {QUEUED}"), sqlite_where=sa.text(f"state = {QUEUED}"))
    op.create_index("ix_jobs_retention", "jobs", ["finished_at"], postgresql_where=sa.text(RETENTION),
                    sqlite_where=sa.text(RETENTION))
    create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_queue_counts ON jobs")
        op.execute("DROP TRIGGER jobs_queue_ticket ON jobs")
        op.execute("DROP FUNCTION llada_job_counts()")
        op.execute("DROP FUNCTION llada_queue_admission(varchar, integer, bigint, bigint)")
        op.execute("DROP FUNCTION llada_job_ticket()")
    else:
        for name in ("jobs_queue_ticket", "jobs_queue_counts_insert", "jobs_queue_counts_delete",
                     "jobs_queue_counts_update"):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("ix_jobs_retention", table_name="jobs")
    op.drop_index("ix_jobs_queued_ticket", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue_ticket")
    op.drop_table("job_queue_tickets")
    op.drop_table("job_queue_counts")

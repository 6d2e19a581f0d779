import subprocess
import sys
from datetime import timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import pytest
from sqlalchemy import delete, inspect

from shared.db import Base, Job, make_engine, session_factory, upgrade
from shared.db.types import utcnow


def test_migrations_create_the_tables_and_match_the_models(engine, db_url):
    upgrade(db_url)  # a second run is a no-op
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "api_keys", "alembic_version"} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_timestamps_come_back_timezone_aware_utc(s):
    created = utcnow() - timedelta(minutes=5)
    s.add(Job(id="j1", tenant="t", kind="UNDERSTAND", created_at=created))
    s.commit()
    s.expire_all()
    job = s.get(Job, "j1")
    assert job.created_at.tzinfo is not None
    assert job.created_at.utcoffset() == timedelta(0)
    assert job.created_at == created.astimezone(timezone.utc)


def test_sqlite_is_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'jobs.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from shared.db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.mark.slow
def test_upgrade_command_reads_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "shared.db", "upgrade"],
        env={"LLADA_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"database at revision {head_revision()}" in done.stdout
    assert "jobs" in inspect(make_engine(url)).get_table_names()




def test_a_pool_sized_for_its_threads_serves_them_all_at_once(db_url):
    """Every thread of the process holds a connection at the same moment; none waits for another's."""
    import threading

    threads = 24  # above SQLAlchemy's default pool (5 + 10 overflow)
    engine = make_engine(db_url, threads=threads, pool_timeout=2)
    holding, release, failures = threading.Barrier(threads + 1), threading.Event(), []

    def hold():
        try:
            with engine.connect():
                holding.wait(10)
                release.wait(10)
        except Exception as err:  # a pool timeout: the pool was smaller than its threads
            failures.append(err)
            holding.abort()

    workers = [threading.Thread(target=hold) for _ in range(threads)]
    [w.start() for w in workers]
    try:
        holding.wait(10)
    finally:
        release.set()
        [w.join(10) for w in workers]
        engine.dispose()
    assert failures == []


def test_a_session_stalled_inside_a_transaction_loses_its_locks(postgres_url):
    """A process frozen between an UPDATE and its COMMIT (a SIGSTOPped worker) must not hold the job's row
    for as long as it sleeps: Postgres ends the session after the idle-in-transaction timeout, and a take-over
    proceeds. The frozen side's commit then fails, so it writes nothing."""
    from sqlalchemy import text, update
    from sqlalchemy.exc import DBAPIError

    from shared.db.errors import is_transient_db_error

    from shared import repository as repo

    stalled_engine = make_engine(postgres_url, idle_in_transaction_timeout_s=0.3)
    engine = make_engine(postgres_url)
    try:
        with session_factory(engine)() as s:
            job = repo.submit_job(s, tenant="stall", request_id=None, kind="TEXT_TO_IMAGE", params={},
                                  input_keys={}).job
        with session_factory(stalled_engine)() as frozen, engine.connect() as other:
            frozen.execute(update(Job).where(Job.id == job.id).values(progress_step=1))  # …and then no COMMIT
            other.execute(text("SET statement_timeout = '10s'"))  # the take-over would fail here if never freed
            moved = other.execute(update(Job).where(Job.id == job.id).values(progress_step=2)).rowcount
            other.commit()
            assert moved == 1
            with pytest.raises(DBAPIError) as ended:
                frozen.commit()
            assert is_transient_db_error(ended.value)  # an outage to the worker, never a FAILED job
        with session_factory(engine)() as s:
            assert repo.load_job(s, job.id).progress_step == 2
            s.execute(delete(Job).where(Job.id == job.id))
            s.commit()
    finally:
        stalled_engine.dispose()
        engine.dispose()

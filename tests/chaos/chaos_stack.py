"""The production shape on loopback, for fault injection: a real gateway, two real Celery workers and the reaper
as processes, on a throwaway Postgres database, the suite's own redis-server (broker and events) and a moto S3
server. The workers run ScriptedExecutorDouble (tests/workers/executor_doubles.py) with random seeds, each image
carrying its seed, so the bytes a client downloads tell which attempt made them.

Every state change of a job is recorded by a Postgres trigger in `chaos_audit`, so that the checker
(`ChaosStack.check`) can count terminal writes per job, not only look at the final row."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import LladaClient
from tests.workers.executor_doubles import png_seed
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.objectstore import S3ObjectStore

ROOT = Path(__file__).resolve().parents[2]
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "llada-chaos"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
START_TIMEOUT_S = 60.0

# Short leases and quick re-sends, so a dead or frozen worker's job moves on within seconds.
HEARTBEAT_INTERVAL_S = 0.2
HEARTBEAT_TIMEOUT_S = 2.0
STEPS, STEP_S = 6, 0.08  # a job computes for about half a second

AUDIT_SQL = """
CREATE TABLE chaos_audit (id bigserial PRIMARY KEY, job_id text, old_state text, new_state text,
                          attempts int, output_keys text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION chaos_audit_change() RETURNS trigger AS $$
BEGIN
  IF NEW.state IS DISTINCT FROM OLD.state OR NEW.output_keys::text IS DISTINCT FROM OLD.output_keys::text
     OR NEW.result_seed IS DISTINCT FROM OLD.result_seed THEN
    INSERT INTO chaos_audit (job_id, old_state, new_state, attempts, output_keys)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.attempts, NEW.output_keys::text);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chaos_audit AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION chaos_audit_change();
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(interval)


def wait_port(port: int, process: subprocess.Popen, what: str) -> None:
    def listening():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_until(listening, START_TIMEOUT_S, f"{what} listening on {port}")


@dataclass
class Verdict:
    """One trial's counts (the columns of the chaos table). Every count but `jobs` must be 0."""

    trial: str
    faults: int = 0  # how many times the fault was really injected
    jobs: int = 0
    lost: list[str] = field(default_factory=list)       # acknowledged but no row, or SUCCEEDED without its object
    doubled: list[str] = field(default_factory=list)    # more than one terminal write
    wrong: list[str] = field(default_factory=list)      # output of another attempt, or outputs where none belong
    orphaned: list[str] = field(default_factory=list)   # objects no row names
    stuck: list[str] = field(default_factory=list)      # not terminal once the faults stopped

    def problems(self) -> dict[str, list[str]]:
        return {name: ids for name, ids in (("lost", self.lost), ("doubled", self.doubled), ("wrong", self.wrong),
                                            ("orphaned", self.orphaned), ("stuck", self.stuck)) if ids}


class ChaosStack:
    def __init__(self, folder: Path, postgres_admin_url: str):
        self.folder = folder
        self.admin_url = postgres_admin_url
        self.db_name = f"llada_chaos_{uuid.uuid4().hex[:10]}"
        self.redis_port, self.s3_port, self.grpc_port = free_port(), free_port(), free_port()
        self.redis: subprocess.Popen | None = None
        self.moto: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.reaper: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = f"127.0.0.1:{self.grpc_port}"

    # ------------------------------------------------------------------ start and stop
    def start(self) -> "ChaosStack":
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        base = self.admin_url.rsplit("/", 1)[0]
        self.database_url = f"{base}/{self.db_name}".replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(self.database_url)
        with psycopg.connect(f"{base}/{self.db_name}", autocommit=True) as conn:
            conn.execute(AUDIT_SQL)
        self.engine = make_engine(self.database_url)
        self.sessions = session_factory(self.engine)
        with self.sessions() as s:
            self.api_key = repo.create_api_key(s, "chaos")
        self.start_redis()
        self.moto = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.s3_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.s3_port, self.moto, "moto_server")
        self.store = S3ObjectStore(f"127.0.0.1:{self.s3_port}", "testing", "testing", BUCKET)
        self.env = {
            **os.environ,
            "LLADA_DATA_DIR": str(self.folder / "data"),
            "LLADA_DATABASE_URL": self.database_url,
            "LLADA_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LLADA_EVENT_BUS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LLADA_OBJECT_STORE_URL": f"s3://{BUCKET}",
            "LLADA_S3_ENDPOINT": f"127.0.0.1:{self.s3_port}",
            "LLADA_S3_ACCESS_KEY": "testing", "LLADA_S3_SECRET_KEY": "testing",
            "LLADA_GRPC_LISTEN": self.address, "LLADA_METRICS_PORT": "0",
            "LLADA_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
            "LLADA_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "LLADA_RESEND_QUEUED_AFTER_S": "1.5", "LLADA_MAX_ATTEMPTS": "6", "LLADA_ORPHAN_GRACE_S": "2",
            "LLADA_MAX_QUEUED_PER_TENANT": "500",
            "LLADA_WORKER_EXECUTOR": "tests.workers.executor_doubles:ScriptedExecutorDouble",
            "LLADA_TEST_RANDOM_SEED": "1", "LLADA_TEST_STEPS": str(STEPS), "LLADA_TEST_STEP_S": str(STEP_S),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.start_gateway()
        self.reaper = self._spawn("reaper", [sys.executable, "-m", "workers.reaper", "--interval", "0.3"])
        for name in ("worker-a", "worker-b"):
            self.start_worker(name)
        for name in self.workers:
            self.wait_worker_ready(name)
        return self

    def close(self) -> None:
        for process in [*self.workers.values(), self.gateway, self.reaper]:
            if process is not None and process.poll() is None:
                self._signal_group(process, signal.SIGKILL)
                process.wait(10)
        for process in (self.redis, self.moto):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        return process

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # ------------------------------------------------------------------ the processes
    def start_redis(self) -> None:
        # Our own server: a restart loses every message, as an unpersisted Redis does.
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.redis_port, self.redis, "redis-server")

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait(10)
        self.start_redis()

    def start_gateway(self) -> None:
        self.gateway = self._spawn("gateway", [sys.executable, "-m", "services.gateway"])
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving():
                if self.gateway.poll() is not None:
                    raise AssertionError("gateway exited:\n" + self.log("gateway"))
                try:
                    return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False
            wait_until(serving, START_TIMEOUT_S, "gateway serving", interval=0.1)

    def kill_gateway(self) -> None:
        self._signal_group(self.gateway, signal.SIGKILL)
        self.gateway.wait(10)

    def start_worker(self, name: str) -> None:
        self.workers[name] = self._spawn(name, [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"{name}@chaos"])

    def wait_worker_ready(self, name: str) -> None:
        def ready():
            if self.workers[name].poll() is not None:
                raise AssertionError(f"{name} exited:\n" + self.log(name))
            return " ready." in self.log(name)
        wait_until(ready, START_TIMEOUT_S, f"{name} ready", interval=0.1)

    def worker_running(self, job_id: str) -> str | None:
        """The name of the worker whose process runs the job's current attempt (worker ids hold the pid)."""
        job = self.job(job_id)
        if job is None or job.worker_id is None:
            return None
        pid = int(job.worker_id.split(":")[1])
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((name for name, p in self.workers.items() if p.pid == group and p.poll() is None), None)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (parent and pool child), as an OOM kill or a node loss."""
        self._signal_group(self.workers[name], signal.SIGKILL)
        self.workers[name].wait(10)

    def freeze_worker(self, name: str) -> None:
        self._signal_group(self.workers[name], signal.SIGSTOP)

    def thaw_worker(self, name: str) -> None:
        self._signal_group(self.workers[name], signal.SIGCONT)

    def terminate_database_connections(self) -> int:
        """Every connection the service holds to its database is cut, as a failover or an admin would."""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (self.db_name,)).fetchall()
        return len(rows)

    def database_outage(self, seconds: float) -> None:
        """The database refuses every connection for `seconds` (and drops those it had): an outage, not a cut."""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.db_name}" WITH ALLOW_CONNECTIONS false')
            try:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (self.db_name,))
                time.sleep(seconds)
            finally:
                admin.execute(f'ALTER DATABASE "{self.db_name}" WITH ALLOW_CONNECTIONS true')

    # ------------------------------------------------------------------ jobs
    def client(self, timeout: float = 10.0) -> LladaClient:
        return LladaClient(self.address, api_key=self.api_key, timeout=timeout)

    def job(self, job_id: str):
        with self.sessions() as s:
            return repo.jobs_by_id(s, [job_id]).get(job_id)

    def jobs(self, job_ids) -> dict:
        with self.sessions() as s:
            return repo.jobs_by_id(s, job_ids)

    def settle(self, job_ids, timeout: float = 60.0) -> list[str]:
        """Waits until every job is terminal; returns those that are not by then."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [j.id for j in self.jobs(job_ids).values() if j.state not in TERMINAL]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(0.1)

    # ------------------------------------------------------------------ the verdict
    def check(self, trial: str, job_ids: list[str], *, faults: int, orphan_wait_s: float = 15.0) -> Verdict:
        """Every invariant the service promises, after the faults: read from the rows, the audit trail and
        the bucket. Objects no row names are given `orphan_wait_s` for the reaper's sweep to remove them."""
        verdict = Verdict(trial, faults=faults, jobs=len(job_ids))
        verdict.stuck = self.settle(job_ids)
        rows = self.jobs(job_ids)
        verdict.lost = [j for j in job_ids if j not in rows]
        with psycopg.connect(self.database_url.replace("+psycopg", ""), autocommit=True) as conn:
            audit = conn.execute("SELECT job_id, count(*) FROM chaos_audit WHERE new_state = ANY(%s) "
                                 "GROUP BY job_id", (list(TERMINAL),)).fetchall()
        verdict.doubled = sorted(job_id for job_id, writes in audit if job_id in rows and writes > 1)
        for job in rows.values():
            keys = list((job.output_keys or {}).values())
            if job.state != "SUCCEEDED":
                if keys or job.result_seed is not None:
                    verdict.wrong.append(job.id)  # CANCELLED or FAILED with outputs
                continue
            for key in keys:
                if key.split("/")[2] != str(job.attempts):
                    verdict.wrong.append(job.id)  # not the winning attempt's key
                    continue
                try:
                    data = self.store.get(key)
                except KeyError:
                    verdict.lost.append(job.id)
                    continue
                if png_seed(data) != job.result_seed:
                    verdict.wrong.append(job.id)  # another attempt's bytes
        verdict.orphaned = self.wait_no_orphans(orphan_wait_s)
        return verdict

    def orphans(self) -> list[str]:
        objects = [obj.key for obj in self.store.list_after("")]
        job_ids = {key.split("/")[1] for key in objects if key.count("/") >= 2}
        named = set()
        for job in self.jobs(job_ids).values():
            named.update((job.output_keys or {}).values())
            named.update((job.input_keys or {}).values())
        return [key for key in objects if key not in named]

    def wait_no_orphans(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = self.orphans()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.3)

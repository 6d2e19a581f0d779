"""Queue overhead of the service next to a bare Celery round trip on the same broker.

    .venv/bin/python bench/queue_overhead.py [--jobs 30] [--broker-url redis://127.0.0.1:6379/5]

Starts the embedded stack (gateway, worker, reaper; SQLite, local objects; the filesystem broker unless
--broker-url) with the no-compute executor (bench/no_compute_executor.py), and submits a bounded burst of
text-to-image jobs one after the other through the gRPC client, measuring for each:
  start latency  SubmitJob called → the worker has claimed the job (jobs.started_at)
  finish latency the worker wrote SUCCEEDED (jobs.finished_at) → the client's WatchJob sees it
Then the floor: a bare Celery no-op task on the same broker (bench/bare_celery_app.py), send → task
starts, and task ends → the caller's result .get() returns. Prints p50/p99 of both and the ratios.
All processes run on this machine, so their wall clocks agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from client import LladaClient, state_name  # noqa: E402
from shared.settings import Settings  # noqa: E402
from server import embedded  # noqa: E402

# How often the bare caller polls for its result: the filesystem broker's own polling interval, so the
# floor and the service wait on the same clock tick.
RESULT_POLL_S = 0.05
WARMUP = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else values[-1]


def service_latencies(settings: Settings, jobs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    info = embedded.start_stack(settings, extra_env=env, prepare_model=False, log=lambda m: None)
    starts, finishes = [], []
    try:
        with LladaClient(info.grpc_address, api_key=info.api_key) as client:
            for i in range(WARMUP + jobs):
                submitted = time.time()
                job = client.submit_text_to_image(f"bench {i}", width=128, height=128)
                final = client.wait(job.id, timeout=60)
                seen = time.time()
                if state_name(final) != "SUCCEEDED":
                    raise SystemExit(f"job {job.id} ended {state_name(final)}: {final.error.message}")
                if i >= WARMUP:
                    starts.append(final.started_at.ToNanoseconds() / 1e9 - submitted)
                    finishes.append(seen - final.finished_at.ToNanoseconds() / 1e9)
    finally:
        embedded.stop_stack(Path(info.data_dir))
    return starts, finishes


def bare_latencies(settings: Settings, jobs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    import bare_celery_app

    log = open(settings.data_dir / "bare-worker.log", "ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bare_celery_app", "worker", "--pool=prefork", "--concurrency=1",
         "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-Q", bare_celery_app.BARE_QUEUE, "--hostname", f"bench-bare-{os.getpid()}@%h"],
        cwd=BENCH, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    app = bare_celery_app.make_app(settings)
    starts, finishes = [], []
    try:
        for i in range(WARMUP + jobs):
            sent = time.time()
            result = app.send_task(bare_celery_app.BARE_TASK, queue=bare_celery_app.BARE_QUEUE)
            started, ended = result.get(timeout=60, interval=RESULT_POLL_S)
            seen = time.time()
            result.forget()  # leave no result keys behind on a shared Redis
            if i >= WARMUP:
                starts.append(started - sent)
                finishes.append(seen - ended)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)
        log.close()
    return starts, finishes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="measured jobs per side (after warm-up)")
    parser.add_argument("--broker-url", help="default: the filesystem broker in a temporary folder")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 1000:
        parser.error("--jobs must be in [1, 1000]")
    data_dir = Path(tempfile.mkdtemp(prefix="llada-bench-"))
    env = {"LLADA_DATA_DIR": str(data_dir), "LLADA_WORKER_EXECUTOR": "no_compute_executor:NoComputeExecutor",
           "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)])}
    overrides = {}
    if args.broker_url:
        # Production pairs a Redis broker with Redis pub/sub for progress events: measure that pair.
        env["LLADA_BROKER_URL"] = env["LLADA_EVENT_BUS_URL"] = args.broker_url
        overrides = {"broker_url": args.broker_url, "event_bus_url": args.broker_url}
    settings = Settings(data_dir=data_dir, grpc_listen=f"127.0.0.1:{free_port()}", metrics_port=0,
                        http_listen=f"127.0.0.1:{free_port()}", http_metrics_port=0, **overrides)
    for key, value in env.items():  # the bare app in this process reads the same settings
        os.environ[key] = value

    try:
        service = service_latencies(settings, args.jobs, env)
        bare = bare_latencies(settings, args.jobs, env)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    broker = (f"{args.broker_url} (events: Redis pub/sub)" if args.broker_url
              else "filesystem (kombu, polling 0.05 s; events: embedded bus, polling 0.05 s)")
    print(f"queue overhead, {args.jobs} jobs one after another, broker: {broker}")
    print(f"{'':28}{'service p50':>12}{'p99':>9}{'bare p50':>11}{'p99':>9}{'ratio p50':>11}{'p99':>7}")
    for name, ours, floor in (("submit → worker starts", service[0], bare[0]),
                              ("worker finishes → seen", service[1], bare[1])):
        o50, o99, b50, b99 = (percentile(ours, 50), percentile(ours, 99), percentile(floor, 50), percentile(floor, 99))
        print(f"{name:28}{o50 * 1e3:>10.1f}ms{o99 * 1e3:>7.1f}ms{b50 * 1e3:>9.1f}ms{b99 * 1e3:>7.1f}ms"
              f"{o50 / b50:>10.2f}×{o99 / b99:>6.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

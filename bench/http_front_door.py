"""The HTTP front door next to the gRPC gateway it calls, on the same stack.

    .venv/bin/python bench/http_front_door.py [--reads 400] [--clients 8] [--jobs 20]

Starts the embedded stack (gateway, worker, reaper, webhooks, HTTP front door; SQLite, local objects, the
filesystem broker) with the no-compute executor (bench/no_compute_executor.py), then measures:
  read      GetJob over gRPC (the SDK) against GET /v1/jobs/{id} over HTTP (one keep-alive connection per
            client), one client after another and --clients at once: latency p50/p99 and reads per second;
  facade    a no-compute text-to-image job submitted and waited for over gRPC (SubmitJob + WatchJob) against the
            same job through the official openai client's images.generate (response_format url, then b64_json):
            what the OpenAI facade adds around a job.
Prints each pair and its ratio (HTTP / gRPC). Everything runs on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import httpx2  # noqa: E402
import openai  # noqa: E402

from client import LladaClient, state_name  # noqa: E402
from queue_overhead import free_port, percentile  # noqa: E402
from server import embedded  # noqa: E402
from shared.settings import Settings  # noqa: E402

WARMUP = 20


def timed(call, count: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return latencies


def concurrent_rate(make_call, clients: int, per_client: int) -> float:
    """Reads per second with ``clients`` threads, each with its own connection (``make_call()`` builds one)."""
    calls = [make_call() for _ in range(clients)]
    for call in calls:
        call()
    barrier = threading.Barrier(clients + 1)

    def run(call):
        barrier.wait()
        for _ in range(per_client):
            call()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - started)


def row(name: str, grpc: list[float], http: list[float]) -> str:
    g50, g99, h50, h99 = (percentile(grpc, 50) * 1e3, percentile(grpc, 99) * 1e3,
                          percentile(http, 50) * 1e3, percentile(http, 99) * 1e3)
    return (f"{name:34}{g50:9.2f}{g99:9.2f}{h50:10.2f}{h99:9.2f}{h50 / g50:10.2f}×{h99 / g99:7.2f}×")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=400, help="sequential reads per side (after warm-up)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent readers for the throughput run")
    parser.add_argument("--jobs", type=int, default=20, help="no-compute jobs per way of submitting")
    args = parser.parse_args(argv)
    if not (1 <= args.reads <= 100_000 and 1 <= args.clients <= 64 and 1 <= args.jobs <= 1000):
        parser.error("--reads in [1, 100000], --clients in [1, 64], --jobs in [1, 1000]")
    data_dir = Path(tempfile.mkdtemp(prefix="llada-bench-http-"))
    env = {"LLADA_WORKER_EXECUTOR": "no_compute_executor:NoComputeExecutor",
           "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)])}
    settings = Settings(data_dir=data_dir, grpc_listen=f"127.0.0.1:{free_port()}", metrics_port=0,
                        http_listen=f"127.0.0.1:{free_port()}", http_metrics_port=0)
    info = embedded.start_stack(settings, extra_env=env, prepare_model=False, log=lambda m: None)
    auth = {"Authorization": f"Bearer {info.api_key}"}
    try:
        with LladaClient(info.grpc_address, api_key=info.api_key) as llada, httpx2.Client(headers=auth) as http:
            job = llada.wait(llada.submit_text_to_image("bench read", width=128, height=128).id, timeout=60)
            url = f"{info.http_url}/v1/jobs/{job.id}"
            grpc_reads = timed(lambda: llada.get(job.id), args.reads)
            http_reads = timed(lambda: http.get(url).raise_for_status(), args.reads)

            def grpc_reader():
                client = LladaClient(info.grpc_address, api_key=info.api_key)
                return lambda: client.get(job.id)

            def http_reader():
                client = httpx2.Client(headers=auth)
                return lambda: client.get(url).raise_for_status()

            per_client = max(1, args.reads // args.clients)
            grpc_rate = concurrent_rate(grpc_reader, args.clients, per_client)
            http_rate = concurrent_rate(http_reader, args.clients, per_client)

            def grpc_job(i=[0]):
                i[0] += 1
                done = llada.wait(llada.submit_text_to_image(f"bench {i[0]}", width=128, height=128).id, timeout=60)
                assert state_name(done) == "SUCCEEDED", done.error

            ai = openai.OpenAI(base_url=info.http_url + "/v1", api_key=info.api_key, max_retries=0, timeout=60)

            def openai_job(response_format):
                def call(i=[0]):
                    i[0] += 1
                    result = ai.images.generate(prompt=f"bench {response_format} {i[0]}", size="128x128",
                                                response_format=response_format)
                    assert result.data[0].url or result.data[0].b64_json
                return call

            grpc_jobs = timed(grpc_job, args.jobs)
            url_jobs = timed(openai_job("url"), args.jobs)
            b64_jobs = timed(openai_job("b64_json"), args.jobs)
    finally:
        embedded.stop_stack(Path(info.data_dir))
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"HTTP front door against gRPC on the same embedded stack (no-compute executor), {os.cpu_count()} CPUs")
    print(f"{'ms':34}{'gRPC p50':>9}{'p99':>9}{'HTTP p50':>10}{'p99':>9}{'ratio p50':>11}{'p99':>8}")
    print(row(f"read one job ({args.reads} in a row)", grpc_reads, http_reads))
    print(row(f"no-compute job, openai url ({args.jobs})", grpc_jobs, url_jobs))
    print(row(f"no-compute job, openai b64 ({args.jobs})", grpc_jobs, b64_jobs))
    print(f"reads/s with {args.clients} clients: gRPC {grpc_rate:.0f}, HTTP {http_rate:.0f} "
          f"(ratio {http_rate / grpc_rate:.2f})")
    added = statistics.median(url_jobs) - statistics.median(grpc_jobs)
    print(f"the OpenAI facade adds {added * 1e3:.1f} ms (p50) to a job submitted and waited for over gRPC")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

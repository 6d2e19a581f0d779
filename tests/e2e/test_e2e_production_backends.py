"""End to end through gRPC on the production backends — Postgres, Redis (broker and events) and S3 (moto's
server standing in for MinIO) — with the real tiny model: the same three job kinds as embedded, the same
processes, only the settings differ (ARCHITECTURE §5). Everything on loopback, stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.postgres_databases import throwaway_database
from tests.e2e.e2e_jobs import E2E_EDIT_CROP_BASE, free_port, run_three_kinds
from shared.settings import Settings
from server import embedded

MOTO_SERVER = Path(sys.executable).with_name("moto_server")


def _wait_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port}")


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_database("llada_e2e", driver=False) as url:
        yield url


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Our own redis-server and moto S3 server on free loopback ports (the shared Redis stays untouched)."""
    if shutil.which("redis-server") is None or not MOTO_SERVER.exists():
        pytest.skip("redis-server or moto_server not installed")
    folder = tmp_path_factory.mktemp("servers")
    redis_port, s3_port = free_port(), free_port()
    started = []
    try:
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(folder)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(redis)
        moto = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(s3_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(moto)
        _wait_port(redis_port, redis, "redis-server")
        _wait_port(s3_port, moto, "moto_server")
        yield f"redis://127.0.0.1:{redis_port}/0", f"127.0.0.1:{s3_port}"
    finally:
        for process in started:
            process.terminate()
            process.wait(10)


@pytest.fixture(scope="module")
def production_stack(tmp_path_factory, tiny_checkpoint, postgres_url, servers):
    redis_url, s3_endpoint = servers
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("production"), database_url=postgres_url, broker_url=redis_url,
        event_bus_url=redis_url, object_store_url="s3://llada-e2e", s3_endpoint=s3_endpoint,
        s3_access_key="testing", s3_secret_key="testing", model_path=str(tiny_checkpoint),
        grpc_listen=f"127.0.0.1:{free_port()}", metrics_port=0, http_listen=f"127.0.0.1:{free_port()}",
        http_metrics_port=0,
    )
    info = embedded.start_stack(settings, log=lambda message: None,
                                extra_env={"LLADA_EDIT_CROP_BASE": E2E_EDIT_CROP_BASE})
    try:
        yield info, settings
    finally:
        embedded.stop_stack(settings.data_dir)


def test_three_kinds_on_postgres_redis_and_s3(production_stack, tmp_path):
    info, settings = production_stack

    run_three_kinds(info.grpc_address, info.api_key, tmp_path)

    # The results live in the bucket, and the jobs in Postgres, not in the data folder.
    from shared.objectstore import object_store_from_settings

    store = object_store_from_settings(settings)
    with psycopg.connect(settings.database_url.replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT id, kind, state, output_keys FROM jobs ORDER BY created_at").fetchall()
    assert [(kind, state) for _, kind, state, _ in rows] == [
        ("TEXT_TO_IMAGE", "SUCCEEDED"), ("UNDERSTAND", "SUCCEEDED"), ("EDIT", "SUCCEEDED")]
    for job_id, kind, _, output_keys in rows:
        if kind != "UNDERSTAND":
            assert output_keys == {"image": f"results/{job_id}/1/image.png"}
            assert store.exists(output_keys["image"])
    assert not (settings.data_dir / "jobs.db").exists() and not (settings.data_dir / "objects").exists()


def test_the_http_front_door_reads_results_through_s3_presigned_urls(production_stack):
    """On S3 the results are http URLs: b64_json is read through one by the front door, response_format=url hands
    it out, and /v1/jobs/{id}/output redirects to it."""
    import base64
    import io
    import urllib.request

    import openai
    from PIL import Image

    info, settings = production_stack
    ai = openai.OpenAI(base_url=info.http_url + "/v1", api_key=info.api_key, max_retries=0, timeout=180)
    raw = ai.images.with_raw_response.generate(prompt="a blue square", size="128x128",
                                                extra_body={"steps": 2, "decoder_steps": 1})
    png = base64.b64decode(raw.parse().data[0].b64_json)
    assert Image.open(io.BytesIO(png)).size == (128, 128)
    job_id = raw.headers["x-llada-job-id"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(f"{info.http_url}/v1/jobs/{job_id}/output",
                                     headers={"Authorization": f"Bearer {info.api_key}"})
    try:
        urllib.request.build_opener(NoRedirect).open(request, timeout=30)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 307
        location = redirect.headers["Location"]
    assert location.startswith(f"http://{settings.public_endpoint}/") and "X-Amz-Signature" in location
    with urllib.request.urlopen(location, timeout=30) as reply:
        assert reply.read() == png
    url = ai.images.generate(prompt="a blue square", size="128x128", response_format="url",
                             extra_body={"steps": 2, "decoder_steps": 1}).data[0].url
    assert url.startswith("http://") and "X-Amz-Signature" in url

"""The front door on loopback over a real gateway in this process (SQLite, the local object store, the embedded
event bus; tests.gateway.conftest), with a worker double running the jobs the gateway enqueues."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import pytest
import uvicorn

from services.http.server import uvicorn_config
from tests.gateway.conftest import LoopThread, _make_harness
from tests.http.worker_double import WorkerDouble


class HttpServer:
    """uvicorn serving the app in a thread, on a socket bound here (so the port is known before it starts)."""

    def __init__(self, settings):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the HTTP server did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


@dataclass
class FrontDoor:
    gw: object            # tests.gateway.conftest.GatewayHarness
    worker: WorkerDouble
    http: HttpServer

    @property
    def url(self) -> str:
        return self.http.url

    def key(self, tenant: str) -> str:
        return dict(self.gw.key(tenant))["x-api-key"]


@pytest.fixture(scope="module")
def http_loop():
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def make_front_door(tmp_path_factory, http_loop):
    """A gateway, a worker double and the HTTP service on it, with settings overrides for both."""
    made: list[FrontDoor] = []

    def make(**overrides) -> FrontDoor:
        overrides.setdefault("max_image_bytes", 2_000_000)
        gw = _make_harness(tmp_path_factory.mktemp("front-door"), http_loop, **overrides)
        settings = gw.settings.model_copy(update={"http_gateway": gw.address})
        door = FrontDoor(gw, WorkerDouble(gw), HttpServer(settings))
        made.append(door)
        return door

    yield make
    for door in made:
        door.http.close()
        door.worker.close()
        door.gw.channel.close()
        http_loop.run(door.gw.gateway.stop(0))


@pytest.fixture(scope="module")
def door(make_front_door) -> FrontDoor:
    return make_front_door()

"""A webhook receiver on loopback for tests: a real HTTP(S) server that records every request it gets and
answers as the test scripts it (a status, a pause, a redirect, a body far larger than anyone should read)."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.deadlines import deadline_s


@dataclass
class Received:
    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class LoopbackReceiver:
    """`status`: what it answers (a number, or a function of the request's index); `hold`: when set, each
    request waits for it to be set before answering; `extra_body`: bytes it sends after the headers."""

    def __init__(self, port: int = 0, *, status=204, cert: tuple[Path, Path] | None = None):
        self.status = status
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        self.release = threading.Event()
        self.release.set()
        self.extra_body = b""
        self.headers_out: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    index = len(receiver.requests)
                    receiver.requests.append(Received(time.monotonic(), self.path,
                                                      {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.arrived.notify_all()
                receiver.release.wait(30)
                status = receiver.status(index) if callable(receiver.status) else receiver.status
                self.send_response(status)
                for name, value in receiver.headers_out.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.extra_body)))
                self.end_headers()
                try:
                    self.wfile.write(receiver.extra_body)
                except OSError:  # the sender stopped reading, as it should
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def wait_for(self, count: int, timeout_s: float = deadline_s(10)) -> list[Received]:
        """The first `count` requests, once they arrived (AssertionError past the deadline)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout_s):
                raise AssertionError(f"{len(self.requests)} of {count} webhook requests arrived in {timeout_s} s")
            return list(self.requests[:count])

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

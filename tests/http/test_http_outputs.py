"""Reading a result through its presigned URL from where the front door runs: dialled at
http_object_store_address when the URL's public host is out of reach, with the Host header it was signed for."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.http.errors import ApiError
from services.http.outputs import fetch, read_output
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


class ObjectStoreDouble(BaseHTTPRequestHandler):
    """Answers any GET with the Host header and path it received."""

    def do_GET(self):
        body = f"{self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def store():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ObjectStoreDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


URL = "http://public.example:9000/llada/results/j/1/image.png?X-Amz-Signature=abc&X-Amz-Expires=60"


def test_a_dialled_fetch_keeps_the_signed_host_path_and_query(store):
    expected = "public.example:9000 /llada/results/j/1/image.png?X-Amz-Signature=abc&X-Amz-Expires=60"
    assert fetch(URL, store).decode() == expected


def test_without_an_address_the_urls_own_host_is_dialled(store):
    own = URL.replace("public.example:9000", store)
    assert fetch(own).decode().startswith(f"{store} /llada/")


def test_an_unreachable_store_is_a_502_naming_the_object():
    obj = pb.OutputObject(name="image", object_key="results/j/1/image.png", url="http://127.0.0.1:9/x")
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_output(obj))
    assert caught.value.status == 502 and "results/j/1/image.png" in caught.value.message

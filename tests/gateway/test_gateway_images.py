"""Input images are sized from their header before anything is decoded, only PNG, JPEG and WebP are
opened, a full queue is refused before any decode, and the gateway decodes a bounded number at once."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from PIL import ImageFile

from tests.gateway.images_for_tests import black_png, encoded, png, text_bomb_png
from tests.store_doubles import ContentTypeRecordingStoreDouble
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

REPO_ROOT = Path(__file__).resolve().parents[2]


def understand(image: bytes, request_id: str = "") -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(request_id=request_id,
                               understand=pb.UnderstandParams(image=image, question="What is shown?"))


def edit(image: bytes) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(edit=pb.EditParams(image=image, instruction="make it night"))


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


class DecoderDouble:
    """Wraps Pillow's decoder (ImageFile.load, which PNG and JPEG use): counts calls, the most at once,
    and holds each decode until ``gate`` opens (open by default)."""

    def __init__(self, monkeypatch):
        self.calls = self.inside = self.most = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        original = ImageFile.ImageFile.load

        def load(image):
            with self._lock:
                self.calls += 1
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                assert self.gate.wait(30), "the test never opened the gate"
                return original(image)
            finally:
                with self._lock:
                    self.inside -= 1
        monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.fixture(scope="module")
def big():
    return black_png(8192, 8192)


@pytest.fixture(scope="module")
def roomy(make_gateway, big):
    """A gateway whose byte limit lets the 8192² PNG (a few hundred KB) through to the pixel check."""
    return make_gateway(max_image_bytes=4 * len(big))


def _refusal(gw, request_, md):
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(request_, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return dict(err.value.trailing_metadata() or ()).get("llada-error-field"), err.value.details()


def test_an_8192_square_png_is_refused_from_its_header_without_decoding(roomy, big, monkeypatch):
    decoder = DecoderDouble(monkeypatch)
    md = roomy.key("big-images")
    field, details = _refusal(roomy, understand(big), md)
    assert field == "understand.image"
    assert "8192×8192" in details and "resize it first" in details
    assert decoder.calls == 0
    assert roomy.job_count() == 0 and roomy.objects() == [] and roomy.queue.sent == []


@pytest.mark.parametrize("bomb", ["8192x8192 pixels", "200 MB of PNG text"])
def test_refusing_a_small_file_that_would_inflate_costs_no_memory_jump(bomb, big, tmp_path):
    """In a fresh process the peak RSS (VmHWM) barely moves: a full decode of the 8192² PNG would add
    ~260 MB, and Pillow's own limit would let the text chunks take 64 MB before the header is known."""
    path = tmp_path / "bomb.png"
    path.write_bytes(big if bomb.endswith("pixels") else text_bomb_png())
    script = (
        "import sys\n"
        "def peak_kib():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "from services.gateway.images import read_image_header\n"
        "from shared.jobs import InvalidArgument\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = peak_kib()\n"
        "try:\n"
        "    read_image_header(data, field='understand.image', max_bytes=len(data))\n"
        "    print('accepted')\n"
        "except InvalidArgument as err:\n"
        "    print('refused', err.field)\n"
        "print(peak_kib() - before)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    print(f"peak RSS growth while refusing a PNG of {bomb}: {int(out[-1]) / 1024:.1f} MiB")
    assert out[:2] == ["refused", "understand.image"]
    assert int(out[-1]) < 16 * 1024  # KiB


@pytest.mark.parametrize("size", [(1, 4096), (4096, 1), (3, 4096)], ids=str)
def test_an_image_beyond_the_aspect_limit_is_refused_at_submit(gw, size):
    field, details = _refusal(gw, edit(png(*size)), gw.key("thin-images"))
    assert field == "edit.image" and "aspect ratio" in details and "200:1" in details


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF", "PPM"])
def test_formats_other_than_png_jpeg_webp_are_refused(gw, fmt):
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    field, details = _refusal(gw, understand(encoded(fmt)), gw.key("formats"))
    assert field == "understand.image" and "PNG, JPEG or WebP" in details
    assert (gw.job_count(), gw.objects(), len(gw.queue.sent)) == before


@pytest.fixture(scope="module")
def typed_gw(make_gateway, tmp_path_factory):
    return make_gateway(store=ContentTypeRecordingStoreDouble(tmp_path_factory.mktemp("typed")))


@pytest.mark.parametrize("fmt, extension, content_type", [("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"),
                                                          ("WEBP", "webp", "image/webp")])
def test_png_jpeg_and_webp_are_accepted_and_stored_as_sent(typed_gw, fmt, extension, content_type):
    image = encoded(fmt)
    job = typed_gw.stub.SubmitJob(understand(image), metadata=typed_gw.key("formats"))
    assert job.state == pb.JOB_STATE_QUEUED
    key = f"inputs/{job.id}/image.{extension}"
    assert key in typed_gw.objects() and typed_gw.store.get(key) == image
    assert typed_gw.store.content_types[key] == content_type  # what the object store will serve it as


def test_a_full_queue_is_refused_before_any_image_is_decoded(make_gateway, monkeypatch):
    gw = make_gateway(max_queued_per_tenant=1)
    md = gw.key("full")
    image = png(300, 200)
    decoder = DecoderDouble(monkeypatch)
    gw.stub.SubmitJob(understand(image), metadata=md)
    assert decoder.calls == 1  # the double sees the decodes that happen
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(understand(image), metadata=md)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decoder.calls == 1


def test_a_retried_image_submit_is_answered_before_any_decode(gw, monkeypatch):
    md = gw.key("retries")
    image = png(300, 200)
    first = gw.stub.SubmitJob(understand(image, request_id="again"), metadata=md)
    decoder = DecoderDouble(monkeypatch)
    assert gw.stub.SubmitJob(understand(image, request_id="again"), metadata=md).id == first.id
    assert decoder.calls == 0


def test_concurrent_submits_decode_at_most_the_configured_number_at_once(make_gateway, monkeypatch):
    gw = make_gateway(max_concurrent_image_decodes=2)
    decoder = DecoderDouble(monkeypatch)
    decoder.gate.clear()
    md = gw.key("many")
    requests = [understand(png(200, 100 + i)) for i in range(4)]
    futures = [gw.stub.SubmitJob.future(r, metadata=md, timeout=60) for r in requests]
    slots = gw.gateway.servicer.decoder
    try:
        # Two decoding (held at the gate), the other two queued for a slot, none of them decoding.
        wait_until(lambda: decoder.inside == 2 and slots.waiting == 2)
        assert slots.decoding == 2
    finally:
        decoder.gate.set()
    jobs = [f.result() for f in futures]
    assert all(job.state == pb.JOB_STATE_QUEUED for job in jobs)
    assert decoder.most == 2 and decoder.calls == 4
    assert slots.waiting == slots.decoding == 0

"""Every validated limit at the edge, from the limits' own source (shared.jobs, shared.ids, the settings): the
value at the limit is accepted, one past it is refused naming the field, with nothing stored."""

from __future__ import annotations

import struct
import zlib

import grpc
import pytest

from shared.ids import MAX_REQUEST_ID_CHARS
from shared.jobs import (BLOCK_LENGTH_MAX, BLOCK_LENGTH_MIN, IMAGE_SIDE_MAX, IMAGE_SIDE_MIN, IMAGE_SIDE_MULTIPLE,
                         MAX_DECODER_STEPS, MAX_GEN_LENGTH, MAX_STEPS, PRIORITY_MAX, PRIORITY_MIN)
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.gateway.images_for_tests import png

MAX_PROMPT_CHARS = 300
MAX_IMAGE_BYTES = 50_000


def T(**params) -> pb.SubmitJobRequest:
    params.setdefault("prompt", "a lighthouse")
    return pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(**params))


def U(**params) -> pb.SubmitJobRequest:
    params.setdefault("image", png())
    params.setdefault("question", "what is it?")
    return pb.SubmitJobRequest(understand=pb.UnderstandParams(**params))


def png_of_size(size: int) -> bytes:
    """A valid PNG exactly `size` bytes long: a small picture plus a private ancillary chunk as padding."""
    image = png()
    pad = size - len(image) - 12  # length, type and CRC of the padding chunk
    chunk_type = b"llAd"  # lower-case first letter: ancillary, decoders skip it
    data = b"\0" * pad
    chunk = struct.pack(">I", pad) + chunk_type + data + struct.pack(">I", zlib.crc32(chunk_type + data))
    end = image.rindex(b"IEND") - 4
    return image[:end] + chunk + image[end:]


# (case, request at the limit, request one past it, the field the refusal names)
EDGES = [
    ("width max", T(width=IMAGE_SIDE_MAX), T(width=IMAGE_SIDE_MAX + IMAGE_SIDE_MULTIPLE), "text_to_image.width"),
    ("width min", T(width=IMAGE_SIDE_MIN), T(width=IMAGE_SIDE_MIN - IMAGE_SIDE_MULTIPLE), "text_to_image.width"),
    ("height max", T(height=IMAGE_SIDE_MAX), T(height=IMAGE_SIDE_MAX + IMAGE_SIDE_MULTIPLE),
     "text_to_image.height"),
    ("height min", T(height=IMAGE_SIDE_MIN), T(height=IMAGE_SIDE_MIN - IMAGE_SIDE_MULTIPLE), "text_to_image.height"),
    ("steps max", T(steps=MAX_STEPS, block_length=BLOCK_LENGTH_MAX), T(steps=MAX_STEPS + 1,
                                                                         block_length=BLOCK_LENGTH_MAX),
     "text_to_image.steps"),
    ("steps up to the block", T(steps=16, block_length=16), T(steps=17, block_length=16), "text_to_image.steps"),
    ("block max", T(block_length=BLOCK_LENGTH_MAX), T(block_length=BLOCK_LENGTH_MAX + 1),
     "text_to_image.block_length"),
    ("block min", T(block_length=BLOCK_LENGTH_MIN, steps=BLOCK_LENGTH_MIN),
     T(block_length=BLOCK_LENGTH_MIN - 1, steps=1), "text_to_image.block_length"),
    ("thinking gen length", T(thinking_gen_length=MAX_GEN_LENGTH), T(thinking_gen_length=MAX_GEN_LENGTH + 1),
     "text_to_image.thinking_gen_length"),
    ("decoder steps", T(decoder_steps=MAX_DECODER_STEPS), T(decoder_steps=MAX_DECODER_STEPS + 1),
     "text_to_image.decoder_steps"),
    ("resolution multiplier", T(resolution_multiplier=4, width=1024, height=1024),
     T(resolution_multiplier=5, width=1280, height=1280), "text_to_image.resolution_multiplier"),
    ("cfg scale", T(cfg_scale=30.0), T(cfg_scale=30.000001), "text_to_image.cfg_scale"),
    ("prompt chars", T(prompt="p" * MAX_PROMPT_CHARS), T(prompt="p" * (MAX_PROMPT_CHARS + 1)),
     "text_to_image.prompt"),
    ("understand gen length", U(gen_length=MAX_GEN_LENGTH), U(gen_length=MAX_GEN_LENGTH + 1),
     "understand.gen_length"),
    ("image bytes", U(image=png_of_size(MAX_IMAGE_BYTES)), U(image=png_of_size(MAX_IMAGE_BYTES + 1)),
     "understand.image"),
    ("priority max", pb.SubmitJobRequest(priority=PRIORITY_MAX, text_to_image=pb.TextToImageParams(prompt="p")),
     pb.SubmitJobRequest(priority=PRIORITY_MAX + 1, text_to_image=pb.TextToImageParams(prompt="p")), "priority"),
    ("priority min", pb.SubmitJobRequest(priority=PRIORITY_MIN, text_to_image=pb.TextToImageParams(prompt="p")),
     pb.SubmitJobRequest(priority=PRIORITY_MIN - 1, text_to_image=pb.TextToImageParams(prompt="p")), "priority"),
    ("request id chars", pb.SubmitJobRequest(request_id="r" * MAX_REQUEST_ID_CHARS,
                                             text_to_image=pb.TextToImageParams(prompt="p")),
     pb.SubmitJobRequest(request_id="r" * (MAX_REQUEST_ID_CHARS + 1),
                         text_to_image=pb.TextToImageParams(prompt="p")), "request_id"),
]


@pytest.fixture(scope="module")
def gw(make_gateway):
    return make_gateway(max_prompt_chars=MAX_PROMPT_CHARS, max_image_bytes=MAX_IMAGE_BYTES)


@pytest.fixture(scope="module")
def md(gw):
    return gw.key("t-limits")


def test_the_padded_png_is_a_valid_picture_of_the_exact_size():
    import io

    from PIL import Image

    data = png_of_size(MAX_IMAGE_BYTES)
    assert len(data) == MAX_IMAGE_BYTES and Image.open(io.BytesIO(data)).size == Image.open(io.BytesIO(png())).size


@pytest.mark.parametrize("at_limit, past, field", [c[1:] for c in EDGES], ids=[c[0] for c in EDGES])
def test_the_limit_is_accepted_and_one_past_it_refused(gw, md, at_limit, past, field):
    job = gw.stub.SubmitJob(at_limit, metadata=md)
    assert job.state == pb.JOB_STATE_QUEUED
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(past, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata() or ()).get("llada-error-field") == field
    assert (gw.job_count(), gw.objects(), len(gw.queue.sent)) == before


def test_the_priority_asked_for_is_the_one_enqueued(gw, md):
    sent = len(gw.queue.sent)
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(priority=7, text_to_image=pb.TextToImageParams(prompt="p")),
                            metadata=md)
    assert job.priority == 7 and gw.queue.sent[sent:] == [(job.id, 7)]

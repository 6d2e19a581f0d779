"""The Pipeline's bad-input table: every refusal is a ModelInputError naming the field; odd image modes are
converted to the picture a user would expect."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from workers.model import ModelInputError, Pipeline
from workers.model.pipeline_inputs import open_image

T2I = dict(width=128, height=128, steps=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe(tiny_ckpt) -> Pipeline:
    return Pipeline.from_pretrained(tiny_ckpt, device="cpu", decoders=("turbo",))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kwargs,field", [
    (dict(width=130), "width"),  # not a multiple of 32
    (dict(height=96), "height"),  # below 128
    (dict(width=4096), "width"),  # above 2048
    (dict(width=128.0), "width"),
    (dict(width=160, resolution_multiplier=4), "width"),  # 160 is not a multiple of 16 x 4
    (dict(resolution_multiplier=0), "resolution_multiplier"),
    (dict(decoder="fast"), "decoder"),
    (dict(decoder="normal", decoder_steps=1), "decoder_steps"),  # normal needs >= 2 time points
    (dict(steps=0), "steps"),
    (dict(mode="dreaming"), "mode"),
    (dict(seed=-1), "seed"),
    (dict(sprint={"keep_ratio": 2.0}), "sprint.keep_ratio"),
])
def test_text_to_image_refuses_bad_settings(pipe, kwargs, field):
    with pytest.raises(ModelInputError) as err:
        pipe.generate_image("a fox", **{**T2I, **kwargs})
    assert err.value.field == field


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_text_to_image_refuses_empty_prompt(pipe, prompt):
    with pytest.raises(ModelInputError) as err:
        pipe.generate_image(prompt, **T2I)
    assert err.value.field == "prompt"


def truncated_png() -> bytes:
    return png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60]


@pytest.mark.parametrize("image,message", [
    (Image.new("RGB", (0, 0)), "empty"),
    (b"definitely not an image", "could not be decoded"),
    (b"", "empty"),
    (truncated_png(), "could not be decoded"),
    (Image.new("RGB", (4000, 10)), "aspect ratio"),
    (Image.new("F", (64, 64)), "float"),
    (12345, "expected a PIL image"),
    ("/no/such/photo.png", "no such file"),
])
def test_understand_and_edit_refuse_bad_images(pipe, image, message):
    with pytest.raises(ModelInputError, match=message) as err:
        pipe.understand_image(image, "what is it?", gen_length=8, steps=2, block_length=8)
    assert err.value.field == "image"
    with pytest.raises(ModelInputError, match=message) as err:
        pipe.edit_image(image, "make it blue", steps=2, crop_base=64)
    assert err.value.field == "image"


@pytest.mark.parametrize("limit", [1000, 3000])  # PIL errors above 2x its limit and only warns below that
def test_decompression_bomb_is_refused(pipe, monkeypatch, limit):
    data = png_bytes(Image.new("RGB", (64, 64)))  # 4096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ModelInputError, match="decompression bomb") as err:
        pipe.understand_image(data, "what is it?", gen_length=8, steps=2, block_length=8)
    assert err.value.field == "image"
    with pytest.raises(ModelInputError, match="MAX_IMAGE_PIXELS"):
        open_image(Image.new("RGB", (64, 64)), "image")  # an already-decoded image is held to the same limit


def test_empty_question_and_instruction_are_refused(pipe):
    image = Image.new("RGB", (64, 64))
    with pytest.raises(ModelInputError) as err:
        pipe.understand_image(image, " ")
    assert err.value.field == "question"
    with pytest.raises(ModelInputError) as err:
        pipe.edit_image(image, "")
    assert err.value.field == "instruction"
    with pytest.raises(ModelInputError) as err:
        pipe.edit_image(image, "make it blue", crop="stretch")
    assert err.value.field == "crop"


def rgb_at(image: Image.Image) -> tuple[int, int, int]:
    return open_image(image, "image").getpixel((0, 0))


def test_cmyk_is_converted():
    assert rgb_at(Image.new("CMYK", (8, 8), (0, 255, 255, 0))) == (255, 0, 0)


def test_sixteen_bit_is_scaled_not_clipped():
    mid_grey = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert mid_grey.mode == "I;16"
    assert rgb_at(mid_grey) == (128, 128, 128)  # convert("RGB") alone would give (255, 255, 255)
    from_png = Image.open(io.BytesIO(png_bytes(mid_grey)))
    assert rgb_at(from_png) == (128, 128, 128)
    assert rgb_at(Image.fromarray(np.full((8, 8), 65535, dtype=np.int32), mode="I")) == (255, 255, 255)
    with pytest.raises(ModelInputError, match="outside"):
        open_image(Image.fromarray(np.full((8, 8), 70000, dtype=np.int32), mode="I"), "image")


def test_palette_and_la_transparency_composite_on_white():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert rgb_at(palette) == (10, 20, 30)
    palette.info["transparency"] = 0
    assert rgb_at(palette) == (255, 255, 255)
    assert rgb_at(Image.new("LA", (8, 8), (0, 0))) == (255, 255, 255)  # fully transparent black
    assert rgb_at(Image.new("LA", (8, 8), (40, 255))) == (40, 40, 40)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", exif=exif.tobytes())
    assert open_image(encoded.getvalue(), "image").size == (20, 40)


def test_odd_modes_still_run_end_to_end(pipe):
    cmyk = Image.new("CMYK", (128, 128), (0, 255, 255, 0))
    assert isinstance(pipe.understand_image(cmyk, "what?", gen_length=8, steps=2, block_length=8).text, str)
    grey16 = Image.fromarray(np.full((64, 64), 1000, dtype=np.uint16))
    assert pipe.edit_image(grey16, "colour it", steps=2, crop_base=64, seed=0).image.size == (128, 128)

"""Pipeline end to end on the tiny checkpoint: sizes, texts, seeds, progress, cancellation, resident parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from workers.model import Cancelled, ImageResult, ModelInputError, Pipeline, TextResult

T2I = dict(width=128, height=128, steps=4)  # grid 4x4: 16 image tokens


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors on a shared 2-core machine: extra threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe(tiny_ckpt) -> Pipeline:
    return Pipeline.from_pretrained(tiny_ckpt, device="cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("width,height", [(128, 128), (192, 128), (128, 256)])
def test_text_to_image_has_the_requested_size(pipe, width, height):
    result = pipe.generate_image("a red fox in the snow", width=width, height=height, steps=4, seed=0)
    assert isinstance(result, ImageResult)
    assert result.image.size == (width, height) and result.image.mode == "RGB"
    assert result.grid == (height // 32, width // 32)
    assert len(result.codes) == (height // 32) * (width // 32)
    assert set(result.timings) == {"tokenize", "denoise", "decode"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert result.thinking is None


def test_normal_decoder_gives_the_requested_size(pipe):
    result = pipe.generate_image("a lighthouse", **T2I, decoder="normal", decoder_steps=3, seed=0)
    assert result.image.size == (128, 128)


def test_same_seed_same_image_other_seed_other_image(pipe):
    first = pipe.generate_image("a tree", **T2I, seed=7)
    again = pipe.generate_image("a tree", **T2I, seed=7)
    other = pipe.generate_image("a tree", **T2I, seed=8)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert first.codes == again.codes
    assert not np.array_equal(pixels(first.image), pixels(other.image))


def test_unseeded_result_reports_the_seed_that_reproduces_it(pipe):
    result = pipe.generate_image("a boat", **T2I)
    assert isinstance(result.seed, int)
    replay = pipe.generate_image("a boat", **T2I, seed=result.seed)
    assert np.array_equal(pixels(result.image), pixels(replay.image))


def test_thinking_mode_returns_the_thinking_text(pipe):
    result = pipe.generate_image("a cat", **T2I, mode="thinking", thinking_steps=4, thinking_gen_length=16, seed=0)
    assert result.image.size == (128, 128)
    assert isinstance(result.thinking, str)
    # The thinking pass is timed as its own stage, not inside denoise.
    assert set(result.timings) == {"tokenize", "think", "denoise", "decode"}
    assert all(seconds > 0 for seconds in result.timings.values())


def test_understand_returns_text(pipe):
    image = Image.new("RGB", (200, 120), (30, 120, 200))
    result = pipe.understand_image(image, "What colour is this?", gen_length=16, steps=4, block_length=16)
    assert isinstance(result, TextResult)
    assert isinstance(result.text, str)
    assert set(result.timings) == {"tokenize", "denoise"}
    # smart resize (§3.4): 200x120 grows to >= 128² pixels with sides multiples of 32, 16 px per token
    h, w = result.grid
    assert (h * 16) % 32 == 0 and (w * 16) % 32 == 0 and h * w * 256 >= 128 * 128


def test_understand_tells_the_answer_as_its_blocks_settle(pipe):
    image = Image.new("RGB", (64, 64), (30, 120, 200))
    told: list[str] = []
    result = pipe.understand_image(image, "What is it?", gen_length=32, steps=2, block_length=8,
                                   answer=told.append)
    assert len(told) > 1 and told[-1] == result.text  # several blocks, the last the answer itself
    for shorter, longer in zip(told, told[1:]):
        assert longer.startswith(shorter) and longer != shorter  # it only grows


def test_understand_accepts_encoded_bytes_and_paths(pipe, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (160, 128), (10, 200, 10)).save(path)
    kwargs = dict(gen_length=8, steps=2, block_length=8)
    from_path = pipe.understand_image(path, "What is it?", **kwargs)
    from_bytes = pipe.understand_image(path.read_bytes(), "What is it?", **kwargs)
    assert from_path.text == from_bytes.text


def test_edit_returns_the_crop_times_the_resolution_multiplier(pipe):
    image = Image.new("RGB", (300, 200), (200, 30, 30))
    # crop_base 64: the reference's crop rule over (64/32)² cells; 300x200 -> the 64x32 crop, grid 2x4
    result = pipe.edit_image(image, "make it blue", crop_base=64, steps=4, seed=0)
    assert result.grid == (2, 4)
    assert result.image.size == (4 * 16 * 2, 2 * 16 * 2)
    assert set(result.timings) == {"tokenize", "denoise", "decode"}
    once_more = pipe.edit_image(image, "make it blue", crop_base=64, steps=4, resolution_multiplier=1, seed=0)
    assert once_more.image.size == (64, 32)


def test_edit_with_image_guidance_runs_three_way(pipe):
    image = Image.new("RGB", (64, 64), (200, 200, 30))
    result = pipe.edit_image(image, "add a hat", crop_base=64, steps=2, cfg_image_scale=1.5, seed=0)
    assert result.image.size == (128, 128)


def test_progress_runs_through_every_stage_in_order(pipe):
    events = []
    pipe.generate_image("a fox", **T2I, seed=0, progress=lambda *event: events.append(event))
    stages = [stage for stage, _, _ in events]
    assert stages[0] == "tokenize" and stages[-1] == "decode"
    assert stages == sorted(stages, key=["tokenize", "denoise", "decode"].index)
    denoise = [(step, total) for stage, step, total in events if stage == "denoise"]
    decode = [(step, total) for stage, step, total in events if stage == "decode"]
    assert denoise[-1][0] == denoise[-1][1] > 0
    assert decode == [(k, 8) for k in range(1, 9)]  # turbo default: 8 decoder steps


def test_cancel_during_denoising_stops_before_decoding(pipe):
    events = []
    with pytest.raises(Cancelled):
        pipe.generate_image("a fox", **T2I, seed=0, progress=lambda *e: events.append(e),
                            should_cancel=lambda: any(stage == "denoise" for stage, _, _ in events))
    assert not any(stage == "decode" for stage, _, _ in events)


def test_cancel_during_decoding(pipe):
    events = []
    with pytest.raises(Cancelled):
        pipe.generate_image("a fox", **T2I, seed=0, progress=lambda *e: events.append(e),
                            should_cancel=lambda: any(stage == "decode" for stage, _, _ in events))
    assert [e for e in events if e[0] == "decode"][-1][1] < 8


def test_cancel_before_anything_runs(pipe):
    events = []
    with pytest.raises(Cancelled):
        pipe.understand_image(Image.new("RGB", (64, 64)), "what?", progress=lambda *e: events.append(e),
                              should_cancel=lambda: True)
    assert events == []


def test_components_stay_resident_and_decoders_share_sigvq_and_vae(pipe):
    turbo = pipe.turbo_decoder
    pipe.generate_image("a fox", **T2I, seed=0)
    assert pipe.turbo_decoder is turbo
    assert pipe.loaded_decoders == ("turbo", "normal")
    assert pipe.decoder.mode == "normal" and turbo.mode == "turbo"
    assert pipe.decoder.sigvq is turbo.sigvq and pipe.decoder.vae is turbo.vae
    assert pipe.decoder.transformer is not turbo.transformer


def test_decoder_not_loaded_up_front_loads_on_first_use(tiny_ckpt):
    pipe = Pipeline.from_pretrained(tiny_ckpt, device="cpu", decoders=())
    assert pipe.loaded_decoders == ()
    pipe.generate_image("a fox", **T2I, seed=0)
    assert pipe.loaded_decoders == ("turbo",)


def test_dtype_by_name_and_stage_placement(tiny_ckpt):
    pipe = Pipeline.from_pretrained(tiny_ckpt, dtype="bf16", stage_devices={"decode": "cpu"}, decoders=())
    assert pipe.backbone.lm_head.weight.dtype == torch.bfloat16
    assert pipe.devices == {"tokenize": torch.device("cpu"), "denoise": torch.device("cpu"),
                            "decode": torch.device("cpu")}
    with pytest.raises(ModelInputError) as err:
        Pipeline.from_pretrained(tiny_ckpt, stage_devices={"vae": "cpu"})
    assert err.value.field == "stage_devices"
    with pytest.raises(ModelInputError) as err:
        Pipeline.from_pretrained(tiny_ckpt, dtype="float7")
    assert err.value.field == "dtype"


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Pipeline.from_pretrained(tmp_path / "nowhere")

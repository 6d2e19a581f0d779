"""Decoder: strict DiT loading with the semantic_embedder rename, SigVQ features, the normal and turbo samplers,
VAE scaling/shift, output size and uint8 truncation, progress and cancellation."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workers.model.decoder import DecoderNoise, load_decoder
from workers.model.decoder.pipeline import pixels_to_image
from workers.model.decoder.samplers import normal_time_grid, sample_normal, sample_turbo
from workers.model.decoder.transformer import load_transformer
from workers.model.decoder.vae import latents_to_pixels
from workers.model.errors import Cancelled, ModelInputError
from workers.model.weights import CheckpointError

CODES_2x3 = [5, 17, 63, 0, 41, 9]


@pytest.fixture(scope="module")
def normal(tiny_ckpt):
    return load_decoder(tiny_ckpt, mode="normal")


@pytest.fixture(scope="module")
def turbo(tiny_ckpt):
    return load_decoder(tiny_ckpt, mode="turbo")


class CallRecorder:
    """Test double wrapped around the real DiT: records every call's batch, times and captions."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.config = transformer.config
        self.x_pad_token = transformer.x_pad_token
        self.calls = []

    def __call__(self, *, x, t, cap_feats, **kwargs):
        self.calls.append({"batch": len(x), "t": t.tolist(), "caps": [c.clone() for c in cap_feats]})
        return self.transformer(x=x, t=t, cap_feats=cap_feats, **kwargs)


def test_a_sibling_decoder_shares_sigvq_and_vae_and_decodes_as_one_loaded_alone(turbo, normal, tiny_ckpt):
    sibling = turbo.load_sibling(tiny_ckpt, "normal")
    assert sibling.mode == "normal" and sibling.sigvq is turbo.sigvq and sibling.vae is turbo.vae
    assert torch.equal(sibling.transformer.x_pad_token, normal.transformer.x_pad_token)
    decode = dict(steps=3, seed=4, resolution_multiplier=1)
    assert np.array_equal(np.asarray(sibling.decode(CODES_2x3, 2, 3, **decode)),
                          np.asarray(normal.decode(CODES_2x3, 2, 3, **decode)))
    with pytest.raises(ModelInputError) as err:
        turbo.load_sibling(tiny_ckpt, "fast")
    assert err.value.field == "mode"


def test_cap_embedder_holds_the_files_semantic_embedder(normal, tiny_ckpt):
    state = load_file(tiny_ckpt / "decoder/model.safetensors")
    for suffix in ("0.weight", "1.weight", "1.bias"):
        loaded = normal.transformer.state_dict()[f"cap_embedder.{suffix}"]
        assert torch.equal(loaded, state[f"semantic_embedder.{suffix}"].float())
    assert normal.transformer.config.axes_lens == [32768, 1024, 1024]
    assert all(not p.is_meta for p in normal.transformer.parameters())


def test_turbo_loads_decoder_turbo_weights(normal, turbo, tiny_ckpt):
    state = load_file(tiny_ckpt / "decoder-turbo/model.safetensors")
    assert torch.equal(turbo.transformer.x_pad_token, state["x_pad_token"].float())
    assert not torch.equal(turbo.transformer.x_pad_token, normal.transformer.x_pad_token)


@pytest.mark.parametrize("drop", ["semantic_embedder.1.bias", "layers.0.attention.to_q.weight"])
def test_transformer_with_one_missing_key_fails(tiny_ckpt, tmp_path, drop):
    folder = tmp_path / "decoder"
    shutil.copytree(tiny_ckpt / "decoder", folder)
    state = load_file(folder / "model.safetensors")
    del state[drop]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing \\(1\\): " + drop.replace("semantic_embedder", "cap_embedder")):
        load_transformer(folder, cap_feat_dim=40, device="cpu", dtype=torch.float32)


def test_sigvq_embedding_loads_strictly(tiny_ckpt, tmp_path):
    from workers.model.decoder.sigvq import load_sigvq

    state = torch.load(tiny_ckpt / "image_tokenizer/sigvq_embedding.pt", weights_only=True)
    del state["prior_projector.net.2.bias"]
    state["prior_projector.net.1.weight"] = torch.zeros(40, 40)
    torch.save(state, tmp_path / "sigvq_embedding.pt")
    with pytest.raises(CheckpointError) as err:
        load_sigvq(tmp_path / "sigvq_embedding.pt", device="cpu", dtype=torch.float32)
    assert "sigvq_embedding" in str(err.value)
    assert "missing (1): prior_projector.net.2.bias" in str(err.value)
    assert "unexpected (1): prior_projector.net.1.weight" in str(err.value)


def test_sigvq_features_use_nearest_x2_upsampled_codes(normal):
    features = normal.features(CODES_2x3, 2, 3)
    assert features.shape == (4 * 6, 40)
    sigvq = normal.sigvq
    with torch.no_grad():
        table = sigvq.prior_projector(sigvq.prior_token_embedding.weight)  # features of every code
    grid = torch.tensor(CODES_2x3).view(2, 3)
    for r in range(4):
        for c in range(6):
            torch.testing.assert_close(features[r * 6 + c], table[grid[r // 2, c // 2]])


def test_normal_sampler_calls_the_model_n_minus_1_times_on_the_warped_grid():
    seen = []

    def constant_velocity(x, t):  # test double: v = 1 everywhere
        seen.append(t)
        return torch.ones_like(x)

    noise = torch.zeros(1, 2, 1, 2, 2)
    out = sample_normal(constant_velocity, noise, 5)
    grid = normal_time_grid(5)
    assert seen == pytest.approx(grid[:-1].tolist())
    assert grid[0] == 0 and grid[-1] == 1 and grid[1] == pytest.approx(0.25 / (0.25 + 6 * 0.75))
    torch.testing.assert_close(out, torch.ones_like(noise))  # Euler of v = 1 from t=0 to t=1
    assert out.dtype == torch.float32


def test_normal_decode_runs_cfg_against_zero_features_in_one_batch(normal, monkeypatch):
    recorder = CallRecorder(normal.transformer)
    monkeypatch.setattr(normal, "transformer", recorder)
    normal.decode(CODES_2x3, 2, 3, steps=3, seed=0, resolution_multiplier=1)
    assert len(recorder.calls) == 2
    assert [call["t"] for call in recorder.calls] == [[t, t] for t in normal_time_grid(3)[:-1].tolist()]
    for call in recorder.calls:
        assert call["batch"] == 2
        assert call["caps"][0].abs().sum() > 0 and torch.count_nonzero(call["caps"][1]) == 0


def test_turbo_draws_fresh_float64_noise_every_step():
    steps, seed = 4, 11
    seen = []

    def keep_velocity(x, t):  # test double: v = 0 → x_data = x at every step
        seen.append((t, x.dtype))
        return torch.zeros_like(x)

    noise = torch.randn(1, 2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(seed)
    out = sample_turbo(keep_velocity, noise, steps, gen)
    assert [t for t, _ in seen] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert {dtype for _, dtype in seen} == {torch.float64}
    # Replay: x ← t_next·x + (1 − t_next)·ε with one fresh draw per step, including the last.
    replay = torch.Generator().manual_seed(seed)
    x = noise.double()
    for k in range(steps):
        eps = torch.randn(x.shape, generator=replay, dtype=torch.float64)
        t_next = (k + 1) / steps
        x = t_next * x + (1 - t_next) * eps
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    assert torch.equal(gen.get_state(), replay.get_state())  # exactly `steps` draws, the last included


def test_turbo_decode_is_deterministic_per_seed(turbo):
    first = np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=1, seed=3, resolution_multiplier=1))
    again = np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=1, seed=3, resolution_multiplier=1))
    other = np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=1, seed=4, resolution_multiplier=1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def seeded_draws(decoder, steps: int, seed: int, rmul: int = 1) -> DecoderNoise:
    """The draws the seeded path makes, replayed by hand: the fp32 starting latent, then (turbo) one
    float64 re-noising draw per step, all from one generator."""
    shape = decoder.latent_shape(2, 3, rmul)
    gen = torch.Generator().manual_seed(seed)
    initial = torch.randn(shape, generator=gen, dtype=torch.float32)
    if decoder.mode == "normal":
        return DecoderNoise(initial)
    return DecoderNoise(initial, tuple(torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)))


@pytest.mark.parametrize("which, steps", [("turbo", 3), ("normal", 3)])
def test_supplied_noise_gives_the_image_of_the_seed_that_drew_it(which, steps, request):
    decoder = request.getfixturevalue(which)
    seeded = np.asarray(decoder.decode(CODES_2x3, 2, 3, steps=steps, seed=21, resolution_multiplier=1))
    noise = seeded_draws(decoder, steps, seed=21)
    supplied = np.asarray(decoder.decode(CODES_2x3, 2, 3, steps=steps, resolution_multiplier=1, noise=noise))
    assert np.array_equal(supplied, seeded)
    other = seeded_draws(decoder, steps, seed=22)
    assert not np.array_equal(np.asarray(decoder.decode(CODES_2x3, 2, 3, steps=steps, resolution_multiplier=1,
                                                         noise=other)), seeded)


def test_turbo_renoise_draws_are_used_step_by_step(turbo):
    noise = seeded_draws(turbo, 2, seed=5)
    base = np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1, noise=noise))
    # Only the first re-noising draw changed: it enters the state at step 1 (t_next = 0.5), so the image moves.
    changed = DecoderNoise(noise.initial, (torch.zeros_like(noise.renoise[0]), noise.renoise[1]))
    assert not np.array_equal(np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1,
                                                      noise=changed)), base)
    # The last draw is multiplied by 0 (t_next = 1): changing it leaves the image as it was.
    last = DecoderNoise(noise.initial, (noise.renoise[0], torch.zeros_like(noise.renoise[1])))
    assert np.array_equal(np.asarray(turbo.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1, noise=last)),
                          base)


def test_noise_of_the_wrong_shape_or_count_is_refused(turbo, normal):
    with pytest.raises(ModelInputError) as err:
        turbo.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1, noise=torch.zeros(1, 2, 3))
    assert err.value.field == "noise"
    short = seeded_draws(turbo, 1, seed=0)
    with pytest.raises(ModelInputError, match="renoise needs 2"):
        turbo.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1, noise=short)
    with pytest.raises(ModelInputError, match="turbo decoder only"):
        normal.decode(CODES_2x3, 2, 3, steps=2, resolution_multiplier=1, noise=short)


@pytest.mark.parametrize("rmul", [1, 2])
def test_output_size(turbo, rmul):
    image = turbo.decode(CODES_2x3, 2, 3, steps=2, seed=0, resolution_multiplier=rmul)
    assert image.size == (3 * 16 * rmul, 2 * 16 * rmul) and image.mode == "RGB"


def test_bf16_compute(tiny_ckpt):
    decoder = load_decoder(tiny_ckpt, mode="turbo", dtype=torch.bfloat16)
    assert decoder.transformer.x_pad_token.dtype == torch.bfloat16 and decoder.vae.dtype == torch.bfloat16
    image = decoder.decode(CODES_2x3, 2, 3, steps=1, seed=0, resolution_multiplier=1)
    assert image.size == (48, 32) and np.asarray(image).std() > 1


def test_vae_gets_scaled_and_shifted_latents(normal, monkeypatch):
    seen = {}
    real = normal.vae.decode

    def spy(z, **kwargs):
        seen["z"] = z.clone()
        return real(z, **kwargs)

    monkeypatch.setattr(normal.vae, "decode", spy)
    latents = torch.randn(1, 16, 4, 6)
    pixels = latents_to_pixels(normal.vae, latents)
    torch.testing.assert_close(seen["z"], latents / 0.3611 + 0.1159)
    assert pixels.shape == (1, 3, 32, 48) and 0 <= pixels.min() and pixels.max() <= 1


def test_uint8_conversion_truncates():
    pixels = torch.tensor([0.999, 0.5, 1.0]).view(3, 1, 1)
    assert np.asarray(pixels_to_image(pixels)).tolist() == [[[254, 127, 255]]]


def test_progress_after_every_model_call_and_cancel_between_steps(turbo):
    events = []
    turbo.decode(CODES_2x3, 2, 3, steps=3, seed=0, resolution_multiplier=1, progress=lambda *e: events.append(e))
    assert events == [("decode", 1, 3), ("decode", 2, 3), ("decode", 3, 3)]
    events.clear()
    with pytest.raises(Cancelled):
        turbo.decode(CODES_2x3, 2, 3, steps=3, seed=0, resolution_multiplier=1,
                     progress=lambda *e: events.append(e), should_cancel=lambda: len(events) >= 2)
    assert events == [("decode", 1, 3), ("decode", 2, 3)]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"codes": CODES_2x3[:5]}, "codes"),
        ({"codes": [64] * 6}, "codes"),
        ({"h": 0}, "h"),
        ({"steps": 1}, "steps"),
        ({"resolution_multiplier": 0}, "resolution_multiplier"),
    ],
)
def test_bad_input_names_the_field(normal, kwargs, field):
    args = {"codes": CODES_2x3, "h": 2, "w": 3, **kwargs}
    codes, h, w = args.pop("codes"), args.pop("h"), args.pop("w")
    with pytest.raises(ModelInputError) as err:
        normal.decode(codes, h, w, **args)
    assert err.value.field == field


def test_unknown_mode_is_refused(tiny_ckpt):
    with pytest.raises(ModelInputError, match="mode"):
        load_decoder(tiny_ckpt, mode="fast")


def test_tokenizer_codes_decode_to_an_image_of_the_requested_size(tiny_ckpt, turbo):
    from PIL import Image

    from workers.model.image_tokenizer import load_image_tokenizer

    pixels = np.random.RandomState(1).randint(0, 256, (32, 48, 3), dtype=np.uint8)
    codes, h, w = load_image_tokenizer(tiny_ckpt).encode(Image.fromarray(pixels))
    image = turbo.decode(codes, h, w, steps=1, seed=0, resolution_multiplier=2)
    assert (h, w) == (2, 3) and image.size == (96, 64)

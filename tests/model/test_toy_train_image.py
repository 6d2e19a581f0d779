"""The image-path trainers of the toy checkpoint (workers/model/toyworld/train): each learns (loss falls on a
fixed batch), each stage runs, resumes and is skipped once done, and the written folders load with the
runtime's strict loaders and encode/decode with the right shapes. Tiny batches: seconds, not minutes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from workers.model.decoder import load_decoder
from workers.model.decoder.pipeline import ImageDecoder, pixels_to_image
from workers.model.decoder.vae import latents_to_pixels
from workers.model.image_tokenizer import load_image_tokenizer
from workers.model.toyworld import render, sample_scene
from workers.model.toyworld.world import BACKGROUNDS
from workers.model.toyworld.codes import CODEBOOK_SIZE, GENERATION_GRID, scene_codes
from workers.model.toyworld.train import decoder as dec
from workers.model.toyworld.train import decoder_samples, distillation
from workers.model.toyworld.train import image_tokenizer as tok
from workers.model.toyworld.train import vae as vae_stage
from workers.model.toyworld.train import vae_decoder
from workers.model.toyworld.train.data import generation_view
from workers.model.toyworld.train.image_writer import write_image_parts
from workers.model.toyworld.train.warm_start import seed_from_checkpoint


def _fit(loss_fn, params, steps: int, lr: float) -> tuple[float, float]:
    optimiser = torch.optim.Adam(params, lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return first, float(loss_fn())


def test_vae_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    vae = vae_stage.build_vae()
    x = vae_stage.to_model(vae_stage.crop_batch(np.random.default_rng(0), 2, 16))
    first, last = _fit(lambda: vae_stage.vae_loss(vae, x, torch.Generator().manual_seed(0))[0],
                       vae.parameters(), 15, 2e-3)
    assert last < 0.7 * first


def test_tokenizer_loss_falls_and_its_argmax_is_the_runtime_encode():
    torch.manual_seed(0)
    model = tok.build_tokenizer_model().train()
    batch = tok.make_batch(np.random.default_rng(0), 4)
    first, last = _fit(lambda: tok.tokenizer_loss(model, *batch), model.parameters(), 15, 2e-3)
    assert last < 0.7 * first
    # What is trained (argmax of the cosine logits) is what the runtime computes (argmin distance).
    patches, grids, _ = batch
    with torch.no_grad():
        trained = tok.code_logits(model.eval(), patches, grids).argmax(-1)
    runtime, start = [], 0
    for h, w in grids:
        runtime.append(model.codes(model.features(patches[start:start + h * w], h, w), h, w))
        start += h * w
    assert torch.equal(trained, torch.cat(runtime))


def test_sigvq_features_match_the_runtime_embedder():
    sigvq = dec.build_sigvq()
    codes = torch.randint(0, CODEBOOK_SIZE, (2, 4, 4))
    batched = dec.sigvq_features(sigvq, codes)
    for b in range(2):
        assert torch.allclose(batched[b], sigvq(codes[b]), atol=1e-6)


def test_decoder_flow_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    transformer, sigvq = dec.build_transformer().train(), dec.build_sigvq()
    latents = torch.randn(2, 16, 16, 16)
    codes = torch.randint(0, CODEBOOK_SIZE, (2, 4, 4))
    t = torch.tensor([0.2, 0.7])
    params = list(transformer.parameters()) + list(sigvq.parameters())
    loss = lambda: dec.flow_loss(transformer, sigvq, latents, codes, t, torch.Generator().manual_seed(0),  # noqa: E731
                                 torch.ones(2))
    first, last = _fit(loss, params, 12, 1e-3)
    assert last < 0.8 * first


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """All image stages run a few steps into one work dir, then written as a checkpoint's image parts."""
    work = tmp_path_factory.mktemp("toywork")
    reports = {
        "vae": vae_stage.train_vae(work, seed=0, minutes=None, steps=2, curriculum=((0.0, 16, 2),), eval_scenes=1,
                                   stats_scenes=4),
        "image_tokenizer": tok.train_image_tokenizer(work, seed=0, minutes=None, steps=2, batch=4, eval_every=0,
                                                     eval_scenes=2),
        "decoder": dec.train_decoder(work, seed=0, minutes=None, steps=2, batch=2, eval_at=(), eval_every=0,
                                     eval_scenes=1, latent_pool=6),
        "vae_decoder": vae_decoder.train_vae_decoder(work, seed=0, minutes=None, steps=2, batch=2, eval_scenes=1,
                                                     sample_pool=3),
        "decoder_turbo": distillation.train_decoder_turbo(work, seed=0, minutes=None, steps=2, batch=2, eval_every=0,
                                                          eval_scenes=1, latent_pool=6, sample_pool=3),
    }
    ckpt = tmp_path_factory.mktemp("toyck")
    write_image_parts(work, ckpt)
    return work, ckpt, reports


def test_stages_finish_report_and_are_skipped_once_done(trained):
    work, _, reports = trained
    for name, report in reports.items():
        saved = json.loads((work / name / "report.json").read_text())
        assert saved["done"] and saved["steps"] == 2 and saved["wall_s"] > 0, name
        assert saved == report
    again = tok.train_image_tokenizer(work, seed=0, minutes=None, steps=50, batch=4)
    assert again["steps"] == 2  # finished: not retrained
    assert set(reports["image_tokenizer"]["eval"]) == {
        f"{s}/{v}" for s in ("held_out", "training") for v in ("generation_64", "reading_128")}
    assert "shift_factor" in reports["vae"]["latent_statistics"]


def test_an_unfinished_stage_resumes_from_its_state(trained):
    work, _, _ = trained
    (work / "image_tokenizer" / "report.json").unlink()  # as if the run had been killed after its last save
    before = torch.load(work / "image_tokenizer" / "state.pt", weights_only=False)
    report = tok.train_image_tokenizer(work, seed=0, minutes=None, steps=3, batch=4, eval_every=0, eval_scenes=1)
    assert report["steps"] == 3  # one more step, not three from scratch
    assert report["first_loss"] == before["first_loss"]
    after = torch.load(work / "image_tokenizer" / "state.pt", weights_only=False)
    assert after["elapsed"] >= before["elapsed"]


def test_written_parts_load_strictly_and_encode_decode_with_the_right_shapes(trained):
    _, ckpt, _ = trained
    for sub, name in (("image_tokenizer", "model.safetensors"), ("decoder", "model.safetensors"),
                      ("decoder-turbo", "model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors")):
        with safe_open(ckpt / sub / name, "pt") as f:
            keys = list(f.keys())
            assert {f.get_slice(k).get_dtype() for k in keys} == {"BF16"}, sub
        if sub == "image_tokenizer":
            assert all(k.startswith(("model.visual.", "model.vqmodel.")) for k in keys)
        if sub.startswith("decoder"):
            assert any(k.startswith("semantic_embedder.") for k in keys)
            assert not any(k.startswith("cap_embedder.") for k in keys)
    assert {v.dtype for v in torch.load(ckpt / "image_tokenizer" / "sigvq_embedding.pt").values()} == {torch.bfloat16}
    config = json.loads((ckpt / "vae" / "config.json").read_text())
    assert config["scaling_factor"] > 0 and config["scaling_factor"] != 0.3611  # measured, not FLUX's

    tokenizer = load_image_tokenizer(ckpt)
    scene = sample_scene(0)
    codes, h, w = tokenizer.encode(generation_view(render(scene)))
    assert (h, w) == (GENERATION_GRID, GENERATION_GRID) and all(0 <= c < CODEBOOK_SIZE for c in codes)
    codes_128, h8, w8 = tokenizer.encode(render(scene))
    assert (h8, w8) == (8, 8) and len(codes_128) == 64
    normal = load_decoder(ckpt, mode="normal")
    turbo = normal.load_sibling(ckpt, "turbo")
    designed = scene_codes(scene, GENERATION_GRID).reshape(-1).tolist()
    for decoder, steps in ((normal, 2), (turbo, 2)):
        image = decoder.decode(designed, 4, 4, steps=steps, seed=0, resolution_multiplier=2)
        assert image.size == (128, 128) and image.mode == "RGB"
    # The two DiTs are different trainings (turbo fine-tuned from normal), not one file twice.
    with safe_open(ckpt / "decoder" / "model.safetensors", "pt") as a, \
            safe_open(ckpt / "decoder-turbo" / "model.safetensors", "pt") as b:
        assert any(not torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_the_saved_sigvq_table_is_the_trained_code_table(trained):
    work, _, _ = trained
    state = torch.load(work / "decoder" / "state.pt", weights_only=False)
    table = dec.CodeTable(torch.zeros(CODEBOOK_SIZE, dec.SIGVQ_WIDTH))
    table.load_state_dict(state["code_table"])
    assert torch.equal(state["sigvq"]["prior_token_embedding.weight"], table().detach())
    assert table.cell.abs().sum() > 0  # the shared parts were trained, not left at zero
    # Codes of one cell share its part: rows differ from the free rows by exactly cell + colour + shape.
    code = 21 + (5 * 6 + 2) * 3 + 1  # cell (1, 1), colour 2, shape 1
    expected = table.free[code] + table.cell[5] + table.colour[2] + table.shape[1]
    assert torch.allclose(table()[code], expected)


def test_a_checkpoint_seeds_stage_states_that_a_longer_decoder_run_continues(trained, tmp_path):
    _, ckpt, _ = trained
    seed_from_checkpoint(ckpt, tmp_path, {"vae": (2, 10.0), "image_tokenizer": (2, 5.0), "decoder": (2, 20.0)})
    assert json.loads((tmp_path / "vae" / "report.json").read_text())["done"]  # the decoders need it unchanged
    for name in ("image_tokenizer", "decoder"):  # left open: a higher step target continues them
        assert not (tmp_path / name / "report.json").exists()
    transformer, sigvq = dec.load_trained(tmp_path)
    shipped = load_decoder(ckpt, mode="normal")
    for ours, theirs in ((transformer, shipped.transformer), (sigvq, shipped.sigvq)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(v, theirs_state[k].float()) for k, v in ours.state_dict().items())
    report = dec.train_decoder(tmp_path, seed=0, minutes=None, steps=3, batch=2, eval_at=(), eval_every=0,
                               eval_scenes=1, latent_pool=6)
    assert report["steps"] == 3 and report["wall_s"] >= 20.0  # one step more, the original wall time carried
    with pytest.raises(FileExistsError):
        seed_from_checkpoint(ckpt, tmp_path, {"decoder": (2, 20.0)})


def test_the_teacher_is_the_normal_decoders_guided_velocity_per_sample(trained):
    _, ckpt, _ = trained
    normal = load_decoder(ckpt, mode="normal")
    scenes = [sample_scene(1), sample_scene(2)]
    codes = torch.from_numpy(np.stack([scene_codes(s, GENERATION_GRID) for s in scenes]))
    features = dec.sigvq_features(normal.sigvq, codes).detach()
    x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    batched = decoder_samples.guided_velocity(normal.transformer, features)(x, 0.3)
    for i in range(2):
        one = normal._velocity([features[i], torch.zeros_like(features[i])])(x[i:i + 1].unsqueeze(2), 0.3)
        assert torch.allclose(batched[i], one[0, :, 0], atol=1e-5)


def test_teacher_pairs_keep_only_the_samples_the_checker_reads_right(trained, tmp_path, monkeypatch):
    work, _, _ = trained
    for name in ("vae", "decoder"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.pt").write_bytes((work / name / "state.pt").read_bytes())
    verdicts = iter([True, False, True, False, False])
    monkeypatch.setattr(distillation, "check", lambda image, scene: {"all": next(verdicts)})
    pairs = distillation.teacher_pairs(tmp_path, 0, count=5)
    assert (int(pairs["drawn"]), int(pairs["kept"])) == (5, 2)
    assert pairs["noise"].shape == pairs["latents"].shape == (2, 16, 16, 16) and pairs["codes"].shape == (2, 4, 4)
    samples = torch.load(tmp_path / "decoder" / "samples.pt", weights_only=True)  # drawn once, all five
    assert torch.equal(pairs["latents"], samples["latents"][[0, 2]])
    expected = [scene_codes(s, GENERATION_GRID) for s in decoder_samples.sample_scenes(0, 5)]
    assert torch.equal(samples["codes"], torch.from_numpy(np.stack(expected)))
    assert torch.load(tmp_path / "decoder_turbo" / "teacher.pt", weights_only=True)["kept"] == 2


def test_decoder_samples_are_the_normal_decoders_seeded_decodes(trained):
    """A sample is what the runtime's normal decoder makes from its noise at SAMPLE_STEPS (the same DiT, CFG)."""
    work, _, _ = trained
    samples = decoder_samples.decoder_samples(work, 0, 3)
    transformer, sigvq = dec.load_trained(work)
    vae = vae_stage.load_trained_vae(work)
    runtime = ImageDecoder(sigvq, transformer, vae, "normal")
    codes = samples["codes"][1].reshape(-1).tolist()
    image = runtime.decode(codes, 4, 4, steps=decoder_samples.SAMPLE_STEPS, noise=samples["noise"][1][None, :, None])
    ours = pixels_to_image(latents_to_pixels(vae, samples["latents"][1:2])[0])
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(ours, dtype=int)).max() <= 1


def test_the_vae_decoder_fine_tune_keeps_the_encoder_and_is_the_vae_written(trained):
    work, ckpt, reports = trained
    base = torch.load(work / "vae" / "state.pt", weights_only=False)
    tuned = torch.load(work / "vae_decoder" / "state.pt", weights_only=False)
    encoder = [k for k in base["model"] if k.startswith("encoder.")]
    assert encoder and all(torch.equal(base["model"][k], tuned["model"][k]) for k in encoder)  # same latents
    assert any(not torch.equal(base["model"][k], tuned["model"][k]) for k in base["model"] if k.startswith("decoder."))
    assert tuned["config"] == base["config"]  # scaling and shift still those of the (unchanged) latents
    assert set(reports["vae_decoder"]["eval_before"]) == set(reports["vae_decoder"]["eval"]) == {
        "reconstruction", "dit_designed_codes"}
    written = load_decoder(ckpt, mode="normal").vae.state_dict()
    assert all(torch.equal(written[k], v.to(torch.bfloat16).float()) for k, v in tuned["model"].items())


def test_the_fine_tunes_foreground_is_the_checkers():
    for index in range(6):
        scene = sample_scene(index)
        rgb = np.asarray(render(scene)).astype(np.int32)
        checkers = np.linalg.norm(rgb - np.array(BACKGROUNDS[scene.background]), axis=2) > 60
        ours = vae_decoder.foreground(vae_stage.to_model(rgb.astype(np.uint8)[None]))[0, 0].numpy()
        assert checkers.any() and (ours == checkers).all()

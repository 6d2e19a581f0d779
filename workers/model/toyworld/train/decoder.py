"""Stages `decoder` and `decoder_turbo`: SigVQ embedder + Z-Image DiT (diffusers) on the VAE's latents.

Objective (MODEL_SPEC §5.4): x_t = t·x_data + (1 − t)·noise (t = 0 noise), the DiT predicts the velocity
x_data − noise at time input t; x_data = the scene's VAE latent in the runtime's DiT space,
(z − shift_factor) · scaling_factor (the runtime decodes latents / scaling_factor + shift_factor). The
condition is the scene's generation-view codes (`codes.scene_codes(scene, 4)`, what the tokenizer is taught to
emit on the 64² view and the backbone to generate), upsampled ×2 by the SigVQ embedder as at runtime.
* normal: t drawn half uniformly, half from the sampler's shifted grid (t' = u / (u + 6 − 6u), where most of
  its 49 evaluations sit); the condition is replaced by zero features 10 % of the time, the negative branch
  of the sampler's CFG.
* turbo: a copy of the trained normal DiT fine-tuned at exactly the turbo sampler's 8 evaluation times k/8
  (plain velocity objective on fresh noise at each time, which is what the sampler's re-noising feeds it;
  no distillation); never unconditioned (the turbo sampler has no CFG). The SigVQ embedder is shared by both
  decoders in the checkpoint (`image_tokenizer/sigvq_embedding.pt`), so turbo training freezes it.
Latents are computed once per work dir (`decoder/latents.pt`) from a pool of training scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import ZImageTransformer2DModel

from workers.model.decoder.pipeline import ImageDecoder
from workers.model.decoder.samplers import TIME_SHIFT
from workers.model.decoder.sigvq import UPSAMPLE, SigVQEmbedder
from workers.model.toyworld import check, render_array
from workers.model.toyworld.codes import CODEBOOK_SIZE, GENERATION_GRID, scene_codes
from workers.model.toyworld.train.data import evaluation_scenes, scene_pool
from workers.model.toyworld.train.image_configs import DECODER_CONFIG, SIGVQ_WIDTH
from workers.model.toyworld.train.stage import Stage, budget_fraction, log, lr_at
from workers.model.toyworld.train.vae import encode, load_trained_vae

STAGE = "decoder"
TURBO_STAGE = "decoder_turbo"
UNCONDITIONED = 0.10  # share of examples with zero features (CFG's negative branch, §5.4)
TURBO_STEPS = 8
LATENT_POOL = 3000  # scenes whose latents are cached (about 7 per training combination)


def build_transformer(config: dict | None = None) -> ZImageTransformer2DModel:
    return ZImageTransformer2DModel.from_config(dict(config or DECODER_CONFIG))


def build_sigvq() -> SigVQEmbedder:
    return SigVQEmbedder(CODEBOOK_SIZE, SIGVQ_WIDTH)


def sigvq_features(sigvq: SigVQEmbedder, codes: torch.Tensor) -> torch.Tensor:
    """SigVQEmbedder.forward with grad, batched: codes [B, h, w] → features [B, 4·h·w, width]."""
    grid = codes.repeat_interleave(UPSAMPLE, dim=1).repeat_interleave(UPSAMPLE, dim=2)
    return sigvq.prior_projector(sigvq.prior_token_embedding(grid.reshape(len(codes), -1)))


def velocity(transformer: ZImageTransformer2DModel, x: torch.Tensor, t: torch.Tensor,
             features: torch.Tensor) -> torch.Tensor:
    """The DiT on a batch: x [B, 16, H, W] latents, t [B], features [B, L, width] → velocity [B, 16, H, W]."""
    out = transformer(list(x.unsqueeze(2).unbind(0)), t, list(features.unbind(0)), return_dict=False)[0]
    return torch.stack(out).squeeze(2)


def latent_cache(work_dir: str | Path, seed: int, count: int = LATENT_POOL) -> dict:
    """{latents [N, 16, 16, 16] in DiT space, codes [N, 4, 4]} of a seeded pool of training scenes."""
    path = Path(work_dir) / STAGE / "latents.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    vae = load_trained_vae(work_dir)
    scenes = scene_pool(np.random.default_rng([seed, 11]), count)
    pixels = np.stack([render_array(s) for s in scenes])
    z = encode(vae, pixels)
    cache = {"latents": (z - vae.config.shift_factor) * vae.config.scaling_factor,
             "codes": torch.from_numpy(np.stack([scene_codes(s, GENERATION_GRID) for s in scenes]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def sample_times(rng: np.random.Generator, batch: int, turbo: bool) -> torch.Tensor:
    if turbo:
        return torch.from_numpy(rng.integers(0, TURBO_STEPS, size=batch) / TURBO_STEPS).float()
    u = rng.random(batch)
    shifted = u / (u + TIME_SHIFT - TIME_SHIFT * u)
    return torch.from_numpy(np.where(rng.random(batch) < 0.5, u, shifted)).float()


def flow_loss(transformer, sigvq, latents, codes, t, generator, keep: torch.Tensor) -> torch.Tensor:
    """Rectified-flow velocity MSE (§5.4); `keep` [B] = 0 replaces that example's features by zeros."""
    noise = torch.randn(latents.shape, generator=generator)
    tt = t.view(-1, 1, 1, 1)
    x_t = tt * latents + (1 - tt) * noise
    features = sigvq_features(sigvq, codes) * keep.view(-1, 1, 1)
    return ((velocity(transformer, x_t, t, features) - (latents - noise)) ** 2).mean()


def evaluate(transformer, sigvq, vae, seed: int, *, mode: str, steps: int, per_split: int = 70) -> dict:
    """Decode the gate scenes' designed generation-view codes with the runtime's ImageDecoder; checker."""
    transformer.eval()
    decoder = ImageDecoder(sigvq.eval(), transformer, vae, mode)
    report = {}
    for split in ("held_out", "training"):
        group = [s for k, s in evaluation_scenes(seed) if k == split][:per_split]
        checks = [check(decoder.decode(scene_codes(s, GENERATION_GRID).reshape(-1).tolist(), 4, 4,
                                       steps=steps, seed=i), s) for i, s in enumerate(group)]
        report[split] = {**{a: round(100 * float(np.mean([c[a] for c in checks])), 1) for a in checks[0]},
                         "all_four": round(100 * float(np.mean([all(c.values()) for c in checks])), 1)}
    transformer.train()
    sigvq.train()
    return report


def _train(work_dir, stage_name: str, *, seed, minutes, steps, batch, lr, turbo: bool, log_every: int,
           eval_at: tuple[int, ...], eval_every: int, eval_scenes: int, latent_pool: int) -> dict:
    stage = Stage(work_dir, stage_name, seed)
    if (done := stage.finished()) is not None:
        return done
    torch.manual_seed(seed)
    cache = latent_cache(work_dir, seed, latent_pool)
    vae = load_trained_vae(work_dir)
    transformer, sigvq = build_transformer(), build_sigvq()
    if turbo:  # start from the trained normal decoder; the shared SigVQ embedder stays as it is
        normal = torch.load(Path(work_dir) / STAGE / "state.pt", map_location="cpu", weights_only=False)
        transformer.load_state_dict(normal["transformer"])
        sigvq.load_state_dict(normal["sigvq"])
        sigvq.requires_grad_(False)
    params = list(transformer.parameters()) + ([] if turbo else list(sigvq.parameters()))
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step, first_loss, history = 0, None, []
    if (state := stage.load()) is not None:
        transformer.load_state_dict(state["transformer"])
        sigvq.load_state_dict(state["sigvq"])
        optimiser.load_state_dict(state["optimiser"])
        step, first_loss, history = state["step"], state.get("first_loss"), state.get("history", [])
    transformer.train()
    sigvq.train()
    n = len(cache["latents"])
    recent: list[float] = []

    def snapshot() -> dict:
        return {"transformer": transformer.state_dict(), "sigvq": sigvq.state_dict(),
                "optimiser": optimiser.state_dict(), "step": step, "first_loss": first_loss, "history": history}

    def run_eval() -> dict:
        mode, n_steps = ("turbo", TURBO_STEPS) if turbo else ("normal", 20)
        return evaluate(transformer, sigvq, vae, seed, mode=mode, steps=n_steps, per_split=eval_scenes)

    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(lr, step, budget_fraction(stage, step, minutes=minutes, steps=steps), warmup=100)
        rng = stage.rng(step)
        idx = torch.from_numpy(rng.integers(0, n, size=batch))
        keep = torch.ones(batch) if turbo else torch.from_numpy((rng.random(batch) >= UNCONDITIONED) * 1.0).float()
        loss = flow_loss(transformer, sigvq, cache["latents"][idx], cache["codes"][idx],
                         sample_times(rng, batch, turbo), stage.torch_generator(step), keep)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        step += 1
        first_loss = loss.item() if first_loss is None else first_loss
        recent.append(loss.item())
        if step % log_every == 0:
            log(stage_name, f"step {step} loss {np.mean(recent):.4f} ({stage.elapsed:.0f} s)")
            recent = []
        if step in eval_at or (eval_every and step % eval_every == 0):
            figures = run_eval()
            history.append({"step": step, "elapsed_s": round(stage.elapsed), **figures})
            log(stage_name, f"step {step} checker on decoded designed codes: {figures}")
        if stage.due():
            stage.save(snapshot())
    stage.save(snapshot())
    report = {"steps": step, "first_loss": first_loss, "last_loss": float(np.mean(recent)) if recent else None,
              "latent_pool": n, "history": history,
              "eval_designed_codes": run_eval()}
    return stage.finish(report)


def train_decoder(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 30.0, steps: int | None = None,
                  batch: int = 32, lr: float = 6e-4, log_every: int = 25, eval_at: tuple[int, ...] = (150,),
                  eval_every: int = 400, eval_scenes: int = 24,
                  latent_pool: int = LATENT_POOL) -> dict:
    return _train(work_dir, STAGE, seed=seed, minutes=minutes, steps=steps, batch=batch, lr=lr, turbo=False,
                  log_every=log_every, eval_at=eval_at, eval_every=eval_every, eval_scenes=eval_scenes,
                  latent_pool=latent_pool)


def train_decoder_turbo(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 10.0,
                        steps: int | None = None, batch: int = 32, lr: float = 3e-4, log_every: int = 25,
                        eval_at: tuple[int, ...] = (), eval_every: int = 300, eval_scenes: int = 24,
                        latent_pool: int = LATENT_POOL) -> dict:
    return _train(work_dir, TURBO_STAGE, seed=seed, minutes=minutes, steps=steps, batch=batch, lr=lr, turbo=True,
                  log_every=log_every, eval_at=eval_at, eval_every=eval_every, eval_scenes=eval_scenes,
                  latent_pool=latent_pool)


def load_trained(work_dir: str | Path, stage_name: str = STAGE) -> tuple[ZImageTransformer2DModel, SigVQEmbedder]:
    """The latest state of a decoder stage: (transformer, sigvq), eval mode."""
    state = torch.load(Path(work_dir) / stage_name / "state.pt", map_location="cpu", weights_only=False)
    transformer, sigvq = build_transformer(), build_sigvq()
    transformer.load_state_dict(state["transformer"])
    sigvq.load_state_dict(state["sigvq"])
    return transformer.eval(), sigvq.eval()



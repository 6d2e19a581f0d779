"""Stage `vae_decoder`: the VAE's decoder fine-tuned, its encoder frozen, on two kinds of latents.

* The encoder's own (a posterior sample of a whole 128² picture → that picture): the `vae` stage ends with the
  checker reading all four attributes in 89 % (held-out) / 96 % (training) of its reconstructions, every miss
  a square or triangle whose corners came out soft (a square filling less than 0.9 of its box reads as a
  circle).
* The trained normal DiT's samples (`decoder_samples`: its guided sample for a scene's codes → that scene's
  picture): the DiT paints the right place and colour but soft, wobbly shapes with colour speckle; the
  decoder learns to render the shape those latents were asked for. This adapts the VAE's decoder to the
  latents it is actually given at inference (the DiT's), as decoders fine-tuned on a generator's outputs do.
`GENERATED_SHARE` of each batch is the second kind. With the encoder frozen the latent space stays exactly as
it was, so the decoders' training data (the encoder's latents) and `scaling_factor` / `shift_factor` stay
valid. Loss: the `vae` stage's L1 + MSE, the shape's pixels (those farther than the checker's threshold from
the background) weighted `FOREGROUND_WEIGHT`×: the shape is ~5 % of a picture and its corners decide what the
checker reads. The written VAE is this stage's where it ran (`load_trained_vae`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workers.model.toyworld import render_array
from workers.model.toyworld.train.data import scene_pool
from workers.model.toyworld.train.decoder import evaluate as evaluate_decoded
from workers.model.toyworld.train.decoder import load_trained
from workers.model.toyworld.train.decoder_samples import SAMPLE_POOL, decoder_samples, sample_scenes
from workers.model.toyworld.train.stage import Losses, Stage, budget_fraction, log, lr_at, optimise
from workers.model.toyworld.train.vae import DECODER_STAGE as STAGE
from workers.model.toyworld.train.vae import STAGE as VAE_STAGE
from workers.model.toyworld.train.vae import build_vae, evaluate, to_model

FOREGROUND_WEIGHT = 4.0
FOREGROUND_DISTANCE = 60 / 127.5  # the checker's foreground threshold (RGB distance 60) in [−1, 1] units
GENERATED_SHARE = 0.5


def foreground(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [−1, 1] → [B, 1, H, W] bool: farther than the checker's threshold from the border median."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # [B, 3, 4·side]
    background = border.median(dim=2).values[:, :, None, None]
    return (x - background).norm(dim=1, keepdim=True) > FOREGROUND_DISTANCE


def decoder_loss(vae, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Weighted L1 + MSE of decoding raw latents `z` against pictures `x` ([−1, 1])."""
    recon = vae.decode(z).sample
    weight = 1.0 + FOREGROUND_WEIGHT * foreground(x).float()
    error = (recon - x).abs() + (recon - x) ** 2
    return (weight * error).sum() / (weight.sum() * x.shape[1])


def train_vae_decoder(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 15.0,
                      steps: int | None = None, batch: int = 8, lr: float = 3e-4, log_every: int = 50,
                      eval_scenes: int = 70, sample_pool: int = SAMPLE_POOL) -> dict:
    stage = Stage(work_dir, STAGE, seed)
    if (done := stage.finished()) is not None:
        return done
    base = torch.load(Path(work_dir) / VAE_STAGE / "state.pt", map_location="cpu", weights_only=False)
    vae = build_vae(base["config"])
    vae.load_state_dict(base["model"])
    samples = decoder_samples(work_dir, seed, sample_pool)
    generated_scenes = sample_scenes(seed, sample_pool)
    scale, shift = base["config"]["scaling_factor"], base["config"]["shift_factor"]
    optimiser = torch.optim.AdamW(vae.decoder.parameters(), lr=lr, weight_decay=0.0)
    step, losses, before = 0, Losses(STAGE, log_every), None
    if (state := stage.load()) is not None:
        vae.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses.first, before = state["step"], state.get("first_loss"), state.get("before")
    transformer, sigvq = load_trained(work_dir)

    def figures() -> dict:
        """Reconstructions, and the normal DiT's pictures of the gate scenes' designed codes (20 steps)."""
        return {"reconstruction": evaluate(vae, seed, eval_scenes),
                "dit_designed_codes": evaluate_decoded(transformer, sigvq, vae.eval(), seed, mode="normal", steps=20,
                                                       per_split=min(eval_scenes, 24))}

    if before is None:
        before = figures()
        log(STAGE, f"before: {before}")
    vae.encoder.requires_grad_(False)
    vae.train()
    generated = int(round(batch * GENERATED_SHARE))

    def snapshot() -> dict:
        return {"model": vae.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                "first_loss": losses.first, "before": before, "config": base["config"]}

    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(lr, step, budget_fraction(stage, step, minutes=minutes, steps=steps))
        rng = stage.rng(step)
        real = to_model(np.stack([render_array(s) for s in scene_pool(rng, batch - generated)]))
        picks = rng.integers(0, len(generated_scenes), size=generated)
        with torch.no_grad():
            posterior = vae.encode(real).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=stage.torch_generator(step))
            z = torch.cat([posterior.mean + posterior.std * noise,
                           samples["latents"][torch.from_numpy(picks)] / scale + shift])
        x = torch.cat([real, to_model(np.stack([render_array(generated_scenes[i]) for i in picks]))])
        loss = decoder_loss(vae, z, x)
        optimise(optimiser, loss, vae.decoder.parameters())
        step += 1
        losses.add(step, loss.item(), stage.elapsed)
        if stage.due():
            stage.save(snapshot())
    stage.save(snapshot())
    report = {"steps": step, "first_loss": losses.first, "last_loss": losses.last,
              "generated_share": GENERATED_SHARE, "eval_before": before, "eval": figures()}
    return stage.finish(report)

"""Stage `vae_decoder`: the VAE's decoder fine-tuned on whole 128² pictures, its encoder frozen.

Why: the `vae` stage ends with the checker reading all four attributes in 89 % (held-out) / 96 % (training) of
its reconstructions, every miss a square or triangle whose corners came out soft (a square filling less than
0.9 of its box reads as a circle), and reconstruction through the whole image path cannot beat the VAE. With
the encoder frozen the latent space stays exactly as it was, so the decoders' training data (the encoder's
latents) and `scaling_factor` / `shift_factor` stay valid. Loss: the `vae` stage's L1 + MSE on a posterior
sample, with the shape's pixels (those farther than the checker's threshold from the background) weighted
`FOREGROUND_WEIGHT`× since the shape is ~5 % of a picture and its corners decide what the checker reads.
The written VAE is this stage's when it ran (`load_trained_vae`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workers.model.toyworld import render_array
from workers.model.toyworld.train.data import scene_pool
from workers.model.toyworld.train.stage import Stage, budget_fraction, log, lr_at
from workers.model.toyworld.train.vae import DECODER_STAGE as STAGE
from workers.model.toyworld.train.vae import STAGE as VAE_STAGE
from workers.model.toyworld.train.vae import build_vae, evaluate, to_model

FOREGROUND_WEIGHT = 4.0
FOREGROUND_DISTANCE = 60 / 127.5  # the checker's foreground threshold (RGB distance 60) in [−1, 1] units


def foreground(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [−1, 1] → [B, 1, H, W] bool: farther than the checker's threshold from the border median."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # [B, 3, 4·side]
    background = border.median(dim=2).values[:, :, None, None]
    return (x - background).norm(dim=1, keepdim=True) > FOREGROUND_DISTANCE


def decoder_loss(vae, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    recon = vae.decode(z).sample
    weight = 1.0 + FOREGROUND_WEIGHT * foreground(x).float()
    error = (recon - x).abs() + (recon - x) ** 2
    return (weight * error).sum() / (weight.sum() * x.shape[1])


def train_vae_decoder(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 15.0,
                      steps: int | None = None, batch: int = 8, lr: float = 3e-4, log_every: int = 50,
                      eval_scenes: int = 70) -> dict:
    stage = Stage(work_dir, STAGE, seed)
    if (done := stage.finished()) is not None:
        return done
    base = torch.load(Path(work_dir) / VAE_STAGE / "state.pt", map_location="cpu", weights_only=False)
    vae = build_vae(base["config"])
    vae.load_state_dict(base["model"])
    optimiser = torch.optim.AdamW(vae.decoder.parameters(), lr=lr, weight_decay=0.0)
    step, first_loss, before = 0, None, None
    if (state := stage.load()) is not None:
        vae.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, first_loss, before = state["step"], state.get("first_loss"), state.get("before")
    if before is None:
        before = evaluate(vae, seed, eval_scenes)
        log(STAGE, f"the vae stage's reconstructions: {before}")
    vae.encoder.requires_grad_(False)
    vae.train()
    recent: list[float] = []

    def snapshot() -> dict:
        return {"model": vae.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                "first_loss": first_loss, "before": before, "config": base["config"]}

    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(lr, step, budget_fraction(stage, step, minutes=minutes, steps=steps))
        x = to_model(np.stack([render_array(s) for s in scene_pool(stage.rng(step), batch)]))
        loss = decoder_loss(vae, x, stage.torch_generator(step))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.decoder.parameters(), 1.0)
        optimiser.step()
        step += 1
        first_loss = loss.item() if first_loss is None else first_loss
        recent.append(loss.item())
        if step % log_every == 0:
            log(STAGE, f"step {step} loss {np.mean(recent):.4f} ({stage.elapsed:.0f} s)")
            recent = []
        if stage.due():
            stage.save(snapshot())
    stage.save(snapshot())
    report = {"steps": step, "first_loss": first_loss, "last_loss": float(np.mean(recent)) if recent else None,
              "eval_before": before, "eval": evaluate(vae, seed, eval_scenes)}
    return stage.finish(report)

"""Stage `vae`: the FLUX-structured AutoencoderKL (diffusers) trained on rendered scenes.

Curriculum (what the issue-12 run measured): 48² crops near the shape first (a flat background teaches
little and crops cost far less on a CPU), then 64² crops, then whole 128² pictures. The last phase is not
optional: after 20 min on crops alone the VAE reconstructed crops at ~27 dB but whole pictures at 21 dB
(checker 40 %), because GroupNorm statistics and the mid-block attention see a different picture at 128²;
5 min on whole pictures brought them to 31.5 dB (checker 89–96 %).
Loss: L1 + MSE on pixels in [−1, 1] plus a small KL weight (keeps latents bounded for the DiT).
After training: `scaling_factor` / `shift_factor` from the trained latents (1 / std, mean over a pool of
training scenes), the convention of the runtime's decode: pixels = VAE(latents / scale + shift).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from workers.model.toyworld import check
from workers.model.toyworld.train.data import evaluation_scenes, psnr, scene_pool
from workers.model.toyworld.train.image_configs import VAE_CONFIG
from workers.model.toyworld.train.stage import Losses, Stage, budget_fraction, lr_at, optimise
from workers.model.toyworld import render_array, sample_scene

STAGE = "vae"
DECODER_STAGE = "vae_decoder"  # the decoder's fine-tune (vae_decoder.py): same encoder, so same latents
KL_WEIGHT = 1e-4  # on the mean per-latent-element KL; small: reconstruction first
P_ANYWHERE = 0.25  # share of crops placed anywhere (mostly background) rather than near the shape
# (fraction of the budget at which a phase starts, crop side, batch): the schedule of the issue-12 run.
CURRICULUM = ((0.0, 48, 16), (0.4, 64, 8), (0.8, 128, 4))


def phase(fraction: float, curriculum=CURRICULUM) -> tuple[int, int]:
    """(crop side, batch) at this fraction of the budget."""
    return [(crop, batch) for start, crop, batch in curriculum if fraction >= start][-1]


def build_vae(config: dict | None = None) -> AutoencoderKL:
    return AutoencoderKL.from_config(dict(config or VAE_CONFIG))


def to_model(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W] in [−1, 1] (the FLUX VAE's input range)."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [−1, 1] → uint8 [B, H, W, 3], truncating as the runtime's decode does."""
    x = ((x.float() + 1) / 2).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def crop_batch(rng: np.random.Generator, batch: int, crop: int) -> np.ndarray:
    out = np.empty((batch, crop, crop, 3), dtype=np.uint8)
    for b in range(batch):
        scene = sample_scene(rng)
        pixels = render_array(scene)
        if rng.random() < P_ANYWHERE:
            y, x = rng.integers(0, 128 - crop + 1, size=2)
        else:
            cx, cy = scene.centre
            y = int(np.clip(cy - crop / 2 + rng.uniform(-crop / 3, crop / 3), 0, 128 - crop))
            x = int(np.clip(cx - crop / 2 + rng.uniform(-crop / 3, crop / 3), 0, 128 - crop))
        out[b] = pixels[y:y + crop, x:x + crop]
    return out


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    recon = vae.decode(z).sample
    l1 = (recon - x).abs().mean()
    mse = ((recon - x) ** 2).mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    loss = l1 + mse + KL_WEIGHT * kl
    with torch.no_grad():
        parts = {"l1": round(float(l1), 4), "mse": round(float(mse), 4), "kl": round(float(kl), 3)}
    return loss, parts


@torch.no_grad()
def encode(vae: AutoencoderKL, pixels: np.ndarray, batch: int = 32) -> torch.Tensor:
    """Posterior means of uint8 [N, H, W, 3] pictures (raw latents, before scale/shift)."""
    out = [vae.encode(to_model(pixels[i:i + batch])).latent_dist.mean for i in range(0, len(pixels), batch)]
    return torch.cat(out)


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, seed: int, count: int = 256) -> dict:
    pixels = np.stack([render_array(s) for s in scene_pool(np.random.default_rng([seed, 5]), count)])
    z = encode(vae, pixels)
    return {"shift_factor": round(float(z.mean()), 4), "scaling_factor": round(float(1.0 / z.std()), 4)}


@torch.no_grad()
def evaluate(vae: AutoencoderKL, seed: int, per_split: int = 70) -> dict:
    """PSNR and checker on full-picture reconstructions (posterior mean) of the gate's scenes."""
    vae.eval()
    report = {}
    scenes = evaluation_scenes(seed)
    for split in ("held_out", "training"):
        group = [s for k, s in scenes if k == split][:per_split]
        pixels = np.stack([render_array(s) for s in group])
        recon = np.concatenate([to_pixels(vae.decode(encode(vae, pixels[i:i + 35])).sample)
                                for i in range(0, len(pixels), 35)])
        checks = [check(r, s) for r, s in zip(recon, group)]
        report[split] = {
            "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(pixels, recon)])), 2),
            **{a: round(100 * float(np.mean([c[a] for c in checks])), 1) for a in checks[0]},
            "all_four": round(100 * float(np.mean([all(c.values()) for c in checks])), 1),
        }
    vae.train()
    return report


def train_vae(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 25.0, steps: int | None = None,
              lr: float = 1e-3, log_every: int = 50, eval_scenes: int = 70, stats_scenes: int = 256,
              curriculum: tuple[tuple[float, int, int], ...] = CURRICULUM) -> dict:
    stage = Stage(work_dir, STAGE, seed)
    if (done := stage.finished()) is not None:
        return done
    torch.manual_seed(seed)
    vae = build_vae()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    step, losses = 0, Losses(STAGE, log_every)
    if (state := stage.load()) is not None:
        vae.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses.first = state["step"], state.get("first_loss")
    vae.train()
    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        fraction = budget_fraction(stage, step, minutes=minutes, steps=steps)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(lr, step, fraction)
        crop, batch = phase(fraction, curriculum)
        x = to_model(crop_batch(stage.rng(step), batch, crop))
        loss, parts = vae_loss(vae, x, stage.torch_generator(step))
        optimise(optimiser, loss, vae.parameters())
        step += 1
        losses.add(step, loss.item(), stage.elapsed, f" {parts}")
        if stage.due():
            stage.save({"model": vae.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                        "first_loss": losses.first})
    stats = latent_statistics(vae, seed, stats_scenes)
    stage.save({"model": vae.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                "first_loss": losses.first, "config": {**VAE_CONFIG, **stats}})
    report = {"steps": step, "first_loss": losses.first, "last_loss": losses.last,
              "latent_statistics": stats, "eval": evaluate(vae, seed, eval_scenes)}
    return stage.finish(report)


def trained_vae_state(work_dir: str | Path) -> dict:
    """The latest VAE state: the `vae_decoder` stage's where it ran (same encoder), else the `vae` stage's."""
    fine_tuned = Path(work_dir) / DECODER_STAGE / "state.pt"
    path = fine_tuned if fine_tuned.is_file() else Path(work_dir) / STAGE / "state.pt"
    return torch.load(path, map_location="cpu", weights_only=False)


def load_trained_vae(work_dir: str | Path) -> AutoencoderKL:
    """The trained VAE (`trained_vae_state`), its config carrying the measured scaling/shift factors; eval mode."""
    state = trained_vae_state(work_dir)
    vae = build_vae(state["config"])
    vae.load_state_dict(state["model"])
    return vae.eval()

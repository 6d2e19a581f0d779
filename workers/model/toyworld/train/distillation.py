"""Stage `decoder_turbo`: the turbo DiT distilled from the normal one.

The turbo sampler has no CFG and 8 steps (§5.4); the normal one takes 49 guided Euler steps. Distillation by
reflow (rectified flow's "reflow", Liu et al. 2022): the normal DiT *with its CFG* maps a noise z to a sample
x̂ = ODE(z) (`decoder_samples`); the turbo DiT, a copy of the normal one, is trained on the straight line
between them, x_t = t·x̂ + (1 − t)·z with velocity target x̂ − z, at the turbo sampler's 8 times. Along a
straight line the turbo's one-step data estimate x + (1 − t)·v is x̂ itself, so few steps suffice, and the
guidance is baked into the student. A sample becomes a teacher pair only where the world's checker reads all
four attributes of its scene in it (decoded by the trained VAE): the teacher is not always right, and a
student distilled from its mistakes would learn them (rejection filtering; the share kept is in the report).
`PAIR_SHARE` of each batch is teacher pairs, the rest plain data, which keeps the student to the truth.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workers.model.decoder.pipeline import pixels_to_image
from workers.model.decoder.vae import latents_to_pixels
from workers.model.toyworld import check
from workers.model.toyworld.train.decoder import LATENT_POOL, train_decoder_stage
from workers.model.toyworld.train.decoder_samples import SAMPLE_POOL, decoder_samples, sample_scenes
from workers.model.toyworld.train.stage import log
from workers.model.toyworld.train.vae import load_trained_vae

STAGE = "decoder_turbo"
PAIR_SHARE = 0.5


def teacher_pairs(work_dir: str | Path, seed: int, *, count: int = SAMPLE_POOL) -> dict:
    """{noise, latents, codes} of the samples the checker reads right, plus `drawn` and `kept`; cached."""
    path = Path(work_dir) / STAGE / "teacher.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    samples = decoder_samples(work_dir, seed, count)
    vae = load_trained_vae(work_dir)
    scenes, right = sample_scenes(seed, count), []
    for start in range(0, count, 64):
        pixels = latents_to_pixels(vae, samples["latents"][start:start + 64])
        right += [all(check(pixels_to_image(p), s).values()) for p, s in zip(pixels, scenes[start:start + 64])]
    keep = torch.tensor(right, dtype=torch.bool)
    pairs = {name: samples[name][keep] for name in ("noise", "latents", "codes")}
    pairs["drawn"], pairs["kept"] = torch.tensor(count), keep.sum()
    log(STAGE, f"teacher pairs: {int(keep.sum())} of {count} samples read right")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pairs, path)
    return pairs


def train_decoder_turbo(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 10.0,
                        steps: int | None = None, batch: int = 32, lr: float = 3e-4, log_every: int = 25,
                        eval_at: tuple[int, ...] = (), eval_every: int = 300, eval_scenes: int = 24,
                        latent_pool: int = LATENT_POOL, sample_pool: int = SAMPLE_POOL) -> dict:
    pairs = teacher_pairs(work_dir, seed, count=sample_pool)
    return train_decoder_stage(work_dir, STAGE, seed=seed, minutes=minutes, steps=steps, batch=batch, lr=lr,
                               turbo=True, log_every=log_every, eval_at=eval_at, eval_every=eval_every,
                               eval_scenes=eval_scenes, latent_pool=latent_pool, pairs=pairs, pair_share=PAIR_SHARE)

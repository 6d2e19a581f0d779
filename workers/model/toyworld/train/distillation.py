"""The turbo decoder's teacher pairs: (noise, the normal decoder's sample from it, codes), for distillation.

The turbo sampler has no CFG and 8 steps (§5.4); the normal one takes 49 guided Euler steps. Distillation by
reflow (rectified flow's "reflow", Liu et al. 2022): the normal DiT *with its CFG* maps a noise z to a sample
x̂ = ODE(z); the turbo DiT is then trained on the straight line between them, x_t = t·x̂ + (1 − t)·z with
velocity target x̂ − z, at the turbo sampler's 8 times. Along a straight line the turbo's one-step data
estimate x + (1 − t)·v is x̂ itself, so few steps suffice, and the guidance is baked into the student.
A teacher sample is kept only where the world's checker reads all four attributes of its scene in it: the
teacher is not always right, and a student distilled from its mistakes would learn them (rejection
filtering; the share kept is recorded). The turbo stage mixes these pairs with plain data (see decoder.py).
Pairs are drawn once per work dir (`decoder_turbo/teacher.pt`) from the decoder stage's latest state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workers.model.decoder.pipeline import guide, pixels_to_image
from workers.model.decoder.samplers import sample_normal
from workers.model.decoder.vae import latents_to_pixels
from workers.model.toyworld import check
from workers.model.toyworld.codes import GENERATION_GRID, scene_codes
from workers.model.toyworld.train.data import scene_pool
from workers.model.toyworld.train.decoder import (LATENT_POOL, load_trained, sigvq_features, train_decoder_stage,
                                                  velocity)
from workers.model.toyworld.train.stage import log
from workers.model.toyworld.train.vae import load_trained_vae

TEACHER_STEPS = 25  # grid points of the normal sampler (24 model calls; the runtime default is 50)
TEACHER_POOL = 1600  # scenes drawn for the teacher (training combinations, fresh sizes and jitters)
TEACHER_BATCH = 32
PAIR_SHARE = 0.5  # of each turbo batch: teacher pairs; the rest is plain data, which keeps it to the truth
STAGE = "decoder_turbo"
LATENT_SHAPE = (16, 16, 16)  # a 128² picture in the VAE's latent (8× down, 16 channels)


def guided_velocity(transformer, features: torch.Tensor):
    """The normal decoder's CFG velocity on a batch: v(x [B, 16, H, W], t) with each sample guided on its own."""
    both = torch.cat([features, torch.zeros_like(features)])

    def v(x: torch.Tensor, t: float) -> torch.Tensor:
        times = torch.full((2 * len(x),), float(t))
        with torch.inference_mode():
            out = velocity(transformer, torch.cat([x, x]), times, both).float()
        positive, negative = out.chunk(2)
        return torch.stack([guide(p, n) for p, n in zip(positive, negative)])

    return v


def teacher_pairs(work_dir: str | Path, seed: int, stage_name: str, *, count: int = TEACHER_POOL) -> dict:
    """{noise, latents (teacher samples), codes} of the checked-right pairs, plus `drawn` and `kept` counts."""
    
    path = Path(work_dir) / stage_name / "teacher.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    transformer, sigvq = load_trained(work_dir)
    vae = load_trained_vae(work_dir)
    scenes = scene_pool(np.random.default_rng([seed, 23]), count)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 23)
    kept: dict[str, list[torch.Tensor]] = {"noise": [], "latents": [], "codes": []}
    for start in range(0, count, TEACHER_BATCH):
        group = scenes[start:start + TEACHER_BATCH]
        codes = torch.from_numpy(np.stack([scene_codes(s, GENERATION_GRID) for s in group]))
        with torch.inference_mode():
            features = sigvq_features(sigvq, codes)
        z = torch.randn((len(group), *LATENT_SHAPE), generator=generator)
        samples = sample_normal(guided_velocity(transformer, features), z, TEACHER_STEPS)
        pixels = latents_to_pixels(vae, samples)
        right = torch.tensor([all(check(pixels_to_image(p), s).values()) for p, s in zip(pixels, group)])
        for name, value in (("noise", z), ("latents", samples), ("codes", codes)):
            kept[name].append(value[right])
        log(stage_name, f"teacher pairs: {start + len(group)}/{count} drawn, "
                        f"{sum(len(c) for c in kept['codes'])} checked right")
    pairs = {name: torch.cat(values) for name, values in kept.items()}
    pairs["drawn"], pairs["kept"] = torch.tensor(count), torch.tensor(len(pairs["codes"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pairs, path)
    return pairs


def train_decoder_turbo(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 10.0,
                        steps: int | None = None, batch: int = 32, lr: float = 3e-4, log_every: int = 25,
                        eval_at: tuple[int, ...] = (), eval_every: int = 300, eval_scenes: int = 24,
                        latent_pool: int = LATENT_POOL, teacher_pool: int = TEACHER_POOL) -> dict:
    pairs = teacher_pairs(work_dir, seed, STAGE, count=teacher_pool)
    return train_decoder_stage(work_dir, STAGE, seed=seed, minutes=minutes, steps=steps, batch=batch, lr=lr,
                               turbo=True, log_every=log_every, eval_at=eval_at, eval_every=eval_every,
                               eval_scenes=eval_scenes, latent_pool=latent_pool, pairs=pairs, pair_share=PAIR_SHARE)

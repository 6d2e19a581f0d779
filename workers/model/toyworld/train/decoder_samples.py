"""The trained normal decoder's own samples of training scenes: (noise, its guided sample, codes, scene).

Two later stages learn from them: `vae_decoder` (the VAE's decoder learns to turn the DiT's latents into the
scene they were asked for) and `decoder_turbo` (distillation; see distillation.py). Drawn once per work dir,
after the decoder stage, into `decoder/samples.pt`, with the normal sampler and its CFG (§5.4) at
`SAMPLE_STEPS` grid points (the runtime default is 50; 25 costs half and decodes as well on this DiT).
The scenes are `sample_scenes(seed, count)`: training combinations only, fresh sizes and jitters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workers.model.decoder.pipeline import guide
from workers.model.decoder.samplers import sample_normal
from workers.model.toyworld.codes import GENERATION_GRID, scene_codes
from workers.model.toyworld.train.data import scene_pool
from workers.model.toyworld.train.decoder import STAGE, load_trained, sigvq_features, velocity
from workers.model.toyworld.train.stage import log
from workers.model.toyworld.world import Scene

SAMPLE_STEPS = 25
SAMPLE_POOL = 1600
BATCH = 32
LATENT_SHAPE = (16, 16, 16)  # a 128² picture in the VAE's latent (8× down, 16 channels)


def sample_scenes(seed: int, count: int) -> list[Scene]:
    return scene_pool(np.random.default_rng([seed, 23]), count)


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


def decoder_samples(work_dir: str | Path, seed: int, count: int = SAMPLE_POOL) -> dict:
    """{noise, latents (DiT space), codes} of `sample_scenes(seed, count)`, in that order; cached."""
    path = Path(work_dir) / STAGE / "samples.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if len(cached["codes"]) == count:
            return cached
    transformer, sigvq = load_trained(work_dir)
    scenes = sample_scenes(seed, count)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 23)
    parts: dict[str, list[torch.Tensor]] = {"noise": [], "latents": [], "codes": []}
    for start in range(0, count, BATCH):
        group = scenes[start:start + BATCH]
        codes = torch.from_numpy(np.stack([scene_codes(s, GENERATION_GRID) for s in group]))
        with torch.inference_mode():
            features = sigvq_features(sigvq, codes)
        z = torch.randn((len(group), *LATENT_SHAPE), generator=generator)
        for name, value in (("noise", z), ("latents", sample_normal(guided_velocity(transformer, features), z,
                                                                     SAMPLE_STEPS)), ("codes", codes)):
            parts[name].append(value)
        log(STAGE, f"samples: {start + len(group)}/{count}")
    samples = {name: torch.cat(values) for name, values in parts.items()}
    torch.save(samples, path)
    return samples

"""`workers.model.block_diffusion_generate`'s import path (the package's lazy export map names this module);
the loop itself lives in the sampler package (`workers.model.sampler.block_diffusion`)."""

from workers.model.sampler.block_diffusion import block_diffusion_generate

__all__ = ["block_diffusion_generate"]

"""`load_decoder` / `ImageDecoder.decode`: VQ codes → PIL image (docs/model.md §5).

SigVQ features → Z-Image DiT flow sampling in the 16-channel VAE latent (normal: 50-step Euler with CFG against
zero features; turbo: 8-step distilled, CFG-free) → FLUX VAE → uint8 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ZImageTransformer2DModel
from PIL import Image

from workers.model.decoder.samplers import sample_normal, sample_turbo
from workers.model.hooks import Progress, ShouldCancel
from workers.model.decoder.sigvq import SigVQEmbedder, load_sigvq
from workers.model.decoder.transformer import load_transformer
from workers.model.decoder.vae import latents_to_pixels, load_vae
from workers.model.errors import Cancelled, ModelInputError


@dataclass(frozen=True)
class DecoderMode:
    subfolder: str
    default_steps: int
    min_steps: int  # normal: N points give N−1 model calls, so N ≥ 2


MODES = {
    "normal": DecoderMode("decoder", 50, 2),
    "turbo": DecoderMode("decoder-turbo", 8, 1),
}
# §5.4 normal: CFG against zero features with scale 1.0 (pred = p + 1.0·(p − n)), then a norm clamp.
NORMAL_CFG_SCALE = 1.0
PATCH = 16  # pixels per VQ token side (§2.4)
LATENT_DOWNSAMPLE = 8  # the FLUX VAE's 4 levels (§5.5)
DEFAULT_RESOLUTION_MULTIPLIER = 2  # §5.4: 2 = 1024 px from a 32×32 grid


@dataclass(frozen=True)
class DecoderNoise:
    """The random draws of one decode, supplied by the caller instead of a seed (docs/model.md §5.4), so two
    implementations can be compared step by step.

    `initial`: the starting latent, shape `ImageDecoder.latent_shape(h, w, rmul)`, drawn in fp32 by the
    seeded path. `renoise`: the turbo sampler's fresh noise, one tensor of that shape per step (float64 in
    the seeded path); empty = draw them from `seed`. The normal sampler uses `initial` only.
    """

    initial: torch.Tensor
    renoise: tuple[torch.Tensor, ...] = ()


def guide(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The normal mode's CFG on one sample's velocities (§5.4): p + scale·(p − n), then a norm clamp over the
    whole sample: the guided prediction may not exceed the conditional one's norm."""
    guided = positive + NORMAL_CFG_SCALE * (positive - negative)
    cond_norm, guided_norm = torch.linalg.vector_norm(positive), torch.linalg.vector_norm(guided)
    if guided_norm > cond_norm:
        guided = guided * (cond_norm / guided_norm)
    return guided


def pixels_to_image(pixels: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] → RGB PIL image; ×255 then **truncation**, as torchvision's to_pil_image (§5.4)."""
    array = (pixels.float().cpu() * 255).permute(1, 2, 0).numpy()
    return Image.fromarray(array.astype(np.uint8))


class ImageDecoder:
    def __init__(
        self,
        sigvq: SigVQEmbedder,
        transformer: ZImageTransformer2DModel,
        vae: AutoencoderKL,
        mode: str,
    ):
        self.sigvq = sigvq
        self.transformer = transformer
        self.vae = vae
        self.mode = mode
        self._mode = MODES[mode]
        self.patch_size = transformer.config.all_patch_size[0]
        self.f_patch_size = transformer.config.all_f_patch_size[0]

    @property
    def device(self) -> torch.device:
        return self.transformer.x_pad_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.x_pad_token.dtype

    def _check(self, codes: Sequence[int], h: int, w: int, steps: int, rmul: int) -> None:
        for field, value in (("h", h), ("w", w), ("resolution_multiplier", rmul)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelInputError(field, f"must be a positive integer, got {value!r}")
        if len(codes) != h * w:
            raise ModelInputError("codes", f"{len(codes)} codes for a {h}x{w} grid (expected {h * w})")
        if not isinstance(steps, int) or steps < self._mode.min_steps:
            raise ModelInputError("steps", f"{self.mode} decoder needs at least {self._mode.min_steps}, got {steps!r}")

    def load_sibling(self, path: str | Path, mode: str) -> "ImageDecoder":
        """The `mode` decoder of checkpoint root `path` over *this* decoder's SigVQ embedder and VAE (one copy
        of each for both modes), its DiT loaded on this decoder's device and dtype."""
        if mode not in MODES:
            raise ModelInputError("mode", f"must be one of {sorted(MODES)}, got {mode!r}")
        transformer = load_transformer(
            Path(path) / MODES[mode].subfolder, cap_feat_dim=self.sigvq.width, device=self.device, dtype=self.dtype
        )
        return ImageDecoder(self.sigvq, transformer, self.vae, mode)

    def latent_shape(self, h: int, w: int, resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER):
        """Shape of the starting latent for an h×w grid: [1, C, 1, H/8, W/8] of the output image."""
        side = LATENT_DOWNSAMPLE  # latent cells per image side = pixels / 8
        return (1, self.transformer.config.in_channels, 1,
                h * PATCH * resolution_multiplier // side, w * PATCH * resolution_multiplier // side)

    def _check_noise(self, noise, shape, steps: int) -> DecoderNoise:
        if isinstance(noise, torch.Tensor):
            noise = DecoderNoise(noise)
        if not isinstance(noise, DecoderNoise):
            raise ModelInputError("noise", f"expected a tensor or DecoderNoise, got {type(noise).__name__}")
        if tuple(noise.initial.shape) != tuple(shape):
            raise ModelInputError("noise", f"initial latent of shape {tuple(noise.initial.shape)}, expected {shape}")
        if noise.renoise:
            if self.mode != "turbo":
                raise ModelInputError("noise", "re-noising draws apply to the turbo decoder only")
            if len(noise.renoise) != steps or any(tuple(r.shape) != tuple(shape) for r in noise.renoise):
                raise ModelInputError("noise", f"renoise needs {steps} tensors of shape {shape}, one per step")
        return noise

    def features(self, codes: Sequence[int], h: int, w: int) -> torch.Tensor:
        """SigVQ conditioning [4·h·w, cap_feat_dim] in the model dtype."""
        grid = torch.as_tensor(list(codes), dtype=torch.long, device=self.device).view(h, w)
        if grid.numel() and (int(grid.min()) < 0 or int(grid.max()) >= self.sigvq.codebook_size):
            raise ModelInputError("codes", f"codes must lie in [0, {self.sigvq.codebook_size}) (no backbone offset)")
        return self.sigvq(grid).to(self.dtype)

    def _velocity(self, captions: list[torch.Tensor]):
        """The DiT as `velocity(x, t)`; with two captions (features, zeros) it applies the normal-mode CFG."""
        batch = len(captions)

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            latents = list(x.to(self.dtype).repeat(batch, 1, 1, 1, 1).unbind(0))
            times = torch.full((batch,), float(t), dtype=torch.float32, device=self.device)
            with torch.inference_mode():
                out = self.transformer(
                    x=latents, t=times, cap_feats=captions, patch_size=self.patch_size,
                    f_patch_size=self.f_patch_size, return_dict=False,
                )[0]
            if batch == 1:
                return out[0].float().unsqueeze(0)
            return guide(out[0].float(), out[1].float()).unsqueeze(0)

        return velocity

    def decode(
        self,
        codes: Sequence[int],
        h: int,
        w: int,
        *,
        steps: int | None = None,
        seed: int | None = None,
        resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
        noise: DecoderNoise | torch.Tensor | None = None,
    ) -> Image.Image:
        """PIL image of size (w·16·rmul, h·16·rmul) from an h×w grid of codes (no offset), raster order.

        `noise` (a `DecoderNoise`, or a tensor = its `initial` only) replaces the seeded draws it supplies;
        the seed still feeds any it leaves out.
        """
        steps = self._mode.default_steps if steps is None else steps
        self._check(codes, h, w, steps, resolution_multiplier)
        shape = self.latent_shape(h, w, resolution_multiplier)
        supplied = None if noise is None else self._check_noise(noise, shape, steps)
        features = self.features(codes, h, w)
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        if supplied is not None:
            start = supplied.initial.to(device=self.device, dtype=torch.float32)
        else:
            # The reference draws the initial noise in fp32 from the same stream as the turbo re-noising draws.
            start = torch.randn(shape, generator=generator, dtype=torch.float32, device=self.device)
        if self.mode == "normal":
            velocity = self._velocity([features, torch.zeros_like(features)])
            latents = sample_normal(velocity, start, steps, progress=progress, should_cancel=should_cancel)
        else:
            velocity = self._velocity([features])
            draws = dict(renoise=supplied.renoise) if supplied is not None and supplied.renoise else {}
            latents = sample_turbo(velocity, start, steps, None if draws else generator, **draws,
                                   progress=progress, should_cancel=should_cancel)
        if should_cancel is not None and should_cancel():  # last chance before the VAE
            raise Cancelled("decode cancelled")
        pixels = latents_to_pixels(self.vae, latents.squeeze(2))
        return pixels_to_image(pixels[0])


def load_decoder(
    path: str | Path,
    *,
    mode: str = "normal",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ImageDecoder:
    """Load SigVQ (`image_tokenizer/sigvq_embedding.pt`), the DiT (`decoder/` or `decoder-turbo/`) and `vae/`.

    `path` is the checkpoint root. `dtype` is the compute dtype of all three (the reference uses bf16 on CUDA,
    fp32 on CPU); the sampler state stays fp32 (normal) / float64 (turbo) whatever it is. For the other mode
    as well, `decoder.load_sibling(path, other_mode)` shares this one's SigVQ embedder and VAE.
    """
    if mode not in MODES:
        raise ModelInputError("mode", f"must be one of {sorted(MODES)}, got {mode!r}")
    root = Path(path)
    sigvq = load_sigvq(root / "image_tokenizer" / "sigvq_embedding.pt", device=device, dtype=dtype)
    transformer = load_transformer(
        root / MODES[mode].subfolder, cap_feat_dim=sigvq.width, device=device, dtype=dtype
    )
    vae = load_vae(root / "vae", device=device, dtype=dtype)
    return ImageDecoder(sigvq, transformer, vae, mode)

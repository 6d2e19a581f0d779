"""Diffusion image decoder (docs/model.md §5): SigVQ embedder → Z-Image DiT (normal / turbo) → FLUX VAE."""

from workers.model.decoder.pipeline import MODES, DecoderNoise, ImageDecoder, load_decoder

__all__ = ["MODES", "DecoderNoise", "ImageDecoder", "load_decoder"]

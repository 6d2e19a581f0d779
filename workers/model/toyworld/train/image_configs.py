"""Sizes of the toy image parts (issue 12). Field sets are those of `tiny_image_components` (the official
structure); only sizes change. Budget: all image parts ≤ ~12 MB in bf16 (two DiTs are most of it)."""

from __future__ import annotations

from workers.model.tiny_image_components import TINY_DECODER_CONFIG, TINY_VAE_CONFIG, TINY_VISION_CONFIG, TINY_VQ_CONFIG
from workers.model.toyworld.codes import CODEBOOK_SIZE

# ViT: shape recognition needs context across patches (a 16-px patch holds part of a shape), so 4 blocks.
# image_size 128 → an 8 × 8 position table: exact at the 128² reading view, resampled for the 64² view.
VISION_CONFIG = {
    **TINY_VISION_CONFIG,
    "depth": 4,
    "hidden_size": 128,
    "num_heads": 4,
    "intermediate_size": 512,
    "image_size": 128,
}
VQ_CONFIG = {
    **TINY_VQ_CONFIG,
    "embed_dim": 64,
    "num_embeddings": CODEBOOK_SIZE,
    "latent_channels": VISION_CONFIG["hidden_size"],
}
IMAGE_TOKENIZER_CONFIG = {"vision_config": VISION_CONFIG, "vq_config": VQ_CONFIG}

SIGVQ_WIDTH = 128  # = decoder cap_feat_dim

# DiT: head_dim 128 = 32 + 48 + 48 is structural (axes_dims), so dim 128 means one head.
DECODER_CONFIG = {
    **TINY_DECODER_CONFIG,
    "cap_feat_dim": SIGVQ_WIDTH,
    "dim": 128,
    "n_heads": 1,
    "n_kv_heads": 1,
    "n_layers": 4,
    "n_refiner_layers": 1,
}

# VAE: 4 levels (8× down) as FLUX; narrow full-resolution level (16 channels) because it costs most on a CPU.
# scaling_factor / shift_factor are replaced by the trained latents' statistics (see vae.latent_statistics).
VAE_CONFIG = {
    **TINY_VAE_CONFIG,
    "block_out_channels": [16, 32, 64, 64],
    "norm_num_groups": 16,
    "layers_per_block": 1,
    "sample_size": 128,
}

"""The Z-Image DiT (docs/model.md §5.2–5.3): diffusers' `ZImageTransformer2DModel`, loaded strictly with one rename.

The official checkpoint names the caption embedder `semantic_embedder`; diffusers calls it `cap_embedder`.
A plain `from_pretrained` "works" but leaves `cap_embedder` randomly initialised (§5.3 pitfall), so the module
is built on the meta device and filled by `weights.load_strict` with the rename applied — any missing or
unexpected key fails, and nothing randomly initialised can survive (`assert_materialised`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ZImageTransformer2DModel

from workers.model.weights import TensorSource, assert_materialised, load_strict

CHECKPOINT_CAP_PREFIX = "semantic_embedder."
DIFFUSERS_CAP_PREFIX = "cap_embedder."
# §5.2/§5.3: the reference forces these RoPE table lengths whatever the file says (diffusers' default
# [1024, 512, 512] overflows on the caption axis at 1024² output). The RoPE values do not depend on them.
FORCED_AXES_LENS = [32768, 1024, 1024]


def module_key(file_key: str) -> str:
    """A tensor's name in the module (diffusers') for its name in the checkpoint's file."""
    if file_key.startswith(CHECKPOINT_CAP_PREFIX):
        return DIFFUSERS_CAP_PREFIX + file_key[len(CHECKPOINT_CAP_PREFIX):]
    return file_key


def transformer_config(folder: str | Path, cap_feat_dim: int) -> dict:
    """`decoder*/config.json` with the reference's overrides applied.

    `cap_feat_dim`: the reference forces 4096 = the official SigVQ feature width (§5.2). We force the width of
    the SigVQ embedder actually loaded, which is 4096 for the official files and the tiny width for tiny ones.
    """
    config = json.loads((Path(folder) / "config.json").read_text())
    config["axes_lens"] = list(FORCED_AXES_LENS)
    config["cap_feat_dim"] = int(cap_feat_dim)
    return config


def load_transformer(
    folder: str | Path, *, cap_feat_dim: int, device: torch.device | str, dtype: torch.dtype
) -> ZImageTransformer2DModel:
    folder = Path(folder)
    component = f"decoder transformer ({folder.name})"
    with torch.device("meta"):
        model = ZImageTransformer2DModel.from_config(transformer_config(folder, cap_feat_dim))
    # §11 q7: the weight file name is not certain (model.safetensors vs decoder_model.safetensors): glob.
    with TensorSource.from_folder(folder, module_key) as source:
        load_strict(model, source, component=component, device=device, dtype=dtype)
    assert_materialised(model, component)
    return model.eval()

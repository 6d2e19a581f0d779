"""Strict, memory-mapped loading of the backbone from the official checkpoint folder (docs/model.md §2.3, §6)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import BackboneConfig
from ..weights import TensorSource, assert_materialised, load_strict
from .model import LLaDA2MoeModelLM
from .moe import MoE

COMPONENT = "backbone"


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on accelerators (the checkpoint's own dtype); fp32 on CPU, where bf16 matmuls are slow."""
    return torch.bfloat16 if torch.device(device).type != "cpu" else torch.float32


def _keeps_fp32(name: str) -> bool:
    # §2.2 step 3: the router bias is an fp32 buffer in the files and must stay fp32 in a bf16 model.
    return name.endswith(".mlp.gate.expert_bias")


def load_backbone(
    folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> LLaDA2MoeModelLM:
    """Build on meta, fill strictly from `model.safetensors.index.json` (or the lone *.safetensors files),
    compute the rotary `inv_freq` on `device`, check nothing is left on meta, and pack each MoE layer's
    experts for grouped matmuls (their parameters become views of the packed tensors: move or cast the
    model by loading it again, not with `.to()`, which would copy them apart).

    Not packed: the file's own dtype on a CPU, where the weights stay zero-copy views of the memory-mapped
    files and a packed copy would sit beside their mapped pages (~2x RSS); there the experts run as a
    per-expert loop, which on a CPU costs the same FLOPs as the grouped matmul."""
    folder = Path(folder)
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    cfg = BackboneConfig.from_file(folder / "config.json")
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    with TensorSource.from_folder(folder) as source:
        load_strict(model, source, component=COMPONENT, device=device, dtype=dtype, keep_dtype=_keeps_fp32)
    model.model.rotary_emb.reset_inv_freq(device)
    assert_materialised(model, COMPONENT)
    if not (device.type == "cpu" and dtype == getattr(torch, cfg.torch_dtype)):
        for module in model.modules():
            if isinstance(module, MoE):
                module.pack_experts()
    return model.eval().requires_grad_(False)

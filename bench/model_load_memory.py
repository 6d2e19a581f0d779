"""Peak RSS while loading, against the size of the weights on disk (ARCHITECTURE §4: weights load once,
memory-mapped, straight to the target dtype, never held twice).

Writes a synthetic checkpoint of ~1 GB (a bf16 backbone of ~0.5 B parameters in the official sharded layout,
plus the tiny image parts), then measures in fresh processes, after the imports:
  1. `load_backbone(folder, dtype=bf16)`, then every weight read once: peak RSS increase / backbone bytes on
     disk (aim <= 1.3x);
  2. `Pipeline.from_pretrained(folder, dtype="bf16")`, every weight read once: peak RSS increase / checkpoint
     bytes on disk.
The baseline is the weights' own size: a loader that held the file and a copy at once would show ~2x.

    .venv/bin/python bench/model_load_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_common import gib, peak_rss, size_on_disk, tiny_checkpoint, write_backbone

# ~0.54 B parameters: 5 MoE layers of 64 experts (2048 -> 512 SwiGLU shapes scaled to 1024 wide).
BACKBONE_1GB = {
    "hidden_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
    "intermediate_size": 2816, "num_hidden_layers": 6, "num_experts": 64, "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "moe_intermediate_size": 512,
}


# bf16 -> bf16 loading keeps the tensors memory-mapped: their pages count in RSS only once read. Reading every
# weight once (as the first forward will) makes the measure the steady state, not an untouched mapping.
TOUCH = """
for module in {modules}:
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.sum()
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="llada-bench-") as tmp:
        folder = tiny_checkpoint(Path(tmp) / "ckpt")
        backbone_bytes = write_backbone(folder, BACKBONE_1GB)
        total_bytes = size_on_disk(folder)
        print(f"synthetic checkpoint: backbone {gib(backbone_bytes)} (bf16), whole folder {gib(total_bytes)}")

        backbone = peak_rss(
            "import torch\nfrom workers.model.backbone import load_backbone",
            f"model = load_backbone({str(folder)!r}, dtype=torch.bfloat16)" + TOUCH.format(modules="[model]"),
        )
        pipeline = peak_rss(
            "import torch\nfrom workers.model.pipeline import Pipeline",
            f"pipe = Pipeline.from_pretrained({str(folder)!r}, device='cpu', dtype='bf16')" + TOUCH.format(
                modules="[pipe.backbone, pipe.image_tokenizer.model, pipe.decoder.sigvq, pipe.decoder.vae, "
                        "pipe.decoder.transformer, pipe.turbo_decoder.transformer]"),
        )
    for title, rss, size in (("load_backbone (bf16)", backbone, backbone_bytes),
                             ("Pipeline.from_pretrained (bf16)", pipeline, total_bytes)):
        extra = rss["peak"] - rss["before"]
        print(f"{title}, every weight read once: peak RSS +{gib(extra)} for {gib(size)} on disk -> "
              f"{extra / size:.2f}x the weights' size (a loader holding file + copy would show ~2x)")


if __name__ == "__main__":
    main()

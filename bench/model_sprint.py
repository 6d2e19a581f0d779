"""SPRINT (prefix KV reuse, docs/model.md §3.6) vs the baseline block-diffusion loop (§3.1) on an
understanding-shaped request: a ~512-token prefix (an image block of 440 codes and a question) and 256
generated tokens (block 32, 32 steps per block, threshold 0.95, greedy).

Baseline: the loop recomputes the whole prefix at every step. Candidates: SPRINT without pruning
(keep_ratio 1.0, exact) and with keep_ratio 0.5, both with cache_warmup_steps 1. Backbone token-passes =
positions run through the backbone, summed over forwards. Small synthetic backbone (hidden 128, 3 layers,
16 experts), CPU fp32. The EOS stop is disabled (eos_id = -1) so that every run denoises all 256 positions
of random weights.

    .venv/bin/python bench/model_sprint.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import torch
from model_common import interleaved_medians, one_thread, tiny_checkpoint, write_backbone

SMALL_BACKBONE = {
    "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
    "intermediate_size": 352, "num_hidden_layers": 3, "num_experts": 16, "n_group": 4, "topk_group": 2,
    "num_experts_per_tok": 4, "moe_intermediate_size": 64,
}
GRID_H, GRID_W = 20, 22  # 440 image codes: with the template and question, a ~512-token prefix
GEN_LENGTH, BLOCK, STEPS = 256, 32, 32
NO_EOS = -1  # no id equals it: the stop never fires


def main() -> None:
    from workers.model import prompts as P
    from workers.model.backbone import load_backbone
    from workers.model.config import BackboneConfig
    from workers.model.sampler import GenerationRequest, SprintOptions, generate
    from workers.model.text_tokenizer import TextTokenizer

    one_thread()

    with tempfile.TemporaryDirectory(prefix="llada-bench-") as tmp:
        folder = tiny_checkpoint(Path(tmp) / "ckpt", with_image_components=False)
        write_backbone(folder, SMALL_BACKBONE)
        model = load_backbone(folder, dtype=torch.float32)
        tok = TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json"))
    codes = [random.Random(0).randrange(tok.codebook_size) for _ in range(GRID_H * GRID_W)]
    prompt = P.understand_prompt(tok, codes, GRID_H, GRID_W, "Describe the picture in detail.")

    passes = {"count": 0}

    def count(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        passes["count"] += ids.numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    variants = {
        "baseline": None,
        "SPRINT keep 1.0": SprintOptions(keep_ratio=1.0, cache_warmup_steps=1),
        "SPRINT keep 0.5": SprintOptions(keep_ratio=0.5, cache_warmup_steps=1),
    }
    outputs, token_passes = {}, {}

    def run(name: str):
        request = GenerationRequest(prompts=[prompt], gen_length=GEN_LENGTH, block_length=BLOCK, steps=STEPS,
                                    mask_id=tok.mask_id, eos_id=NO_EOS, sprint=variants[name])
        before = passes["count"]
        outputs[name] = generate(model, [request])[0].ids
        token_passes[name] = passes["count"] - before

    medians = interleaved_medians({name: (lambda n=name: run(n)) for name in variants}, repeats=1)
    print(f"prefix {len(prompt)} tokens, {GEN_LENGTH} generated, block {BLOCK}, {STEPS} steps per block")
    base = medians["baseline"]
    for name in variants:
        same = "same tokens as baseline" if outputs[name] == outputs["baseline"] else "tokens differ from baseline"
        print(f"{name:>16}: {medians[name]:6.2f} s, {token_passes[name]:>7} backbone token-passes, "
              f"{base / medians[name]:.2f}x vs baseline ({same})")


if __name__ == "__main__":
    main()

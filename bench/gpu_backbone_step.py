"""One denoising step of the full-size backbone on a device (issue 2, "On a GPU"; batching numbers for issue 6).

Random weights with the official config (docs/model.md §2.1: 20 layers, 256 experts, vocab 173568), built straight
on the device in bf16 (no files: ~32 GB of weights). Each case is the sampler's real step (`start_request` +
`step`) on a 32-token block with 2-way CFG (cond + a shorter, left-padded uncond row) after a prefix of 1k or
4k tokens: the baseline loop (the whole prefix runs again under the block-causal mask), SPRINT with the
prefix KV cached (keep 1.0) and pruned (keep 0.5); the experts as grouped matmuls (as loaded) and as the
per-expert loop; one request and 8 batched requests. Then issue 2's MoE microbenchmark (256 tokens x 16
experts, official expert shapes) on the device. Medians of timed steps after warm-up steps, synchronised.

    python bench/gpu_backbone_step.py [--out results.json]        # CUDA, bf16, full size
    python bench/gpu_backbone_step.py --small --device cpu         # a small smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from model_common import ROOT  # noqa: F401  (puts the repository on sys.path)

from workers.model.backbone.model import LLaDA2MoeModelLM
from workers.model.backbone.moe import MoE
from workers.model.config import BackboneConfig
from workers.model.sampler import GenerationRequest, SprintOptions
from workers.model.sampler.state import start_request
from workers.model.sampler.stepper import step

OFFICIAL = {  # docs/model.md §2.1
    "vocab_size": 173568, "hidden_size": 2048, "intermediate_size": 5120, "num_hidden_layers": 20,
    "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128, "use_qk_norm": True,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 8192, "rope_theta": 600000,
    "rope_parameters": {"rope_type": "default", "rope_theta": 600000, "partial_rotary_factor": 0.5},
    "partial_rotary_factor": 0.5, "num_experts": 256, "num_shared_experts": 1, "num_experts_per_tok": 8,
    "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "moe_intermediate_size": 512,
    "first_k_dense_replace": 1, "image_token_offset": 157184, "pad_token_id": 156892,
}
SMALL = dict(OFFICIAL, vocab_size=2048, image_token_offset=1024, pad_token_id=1000, hidden_size=256,
             intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
             head_dim=64, num_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4, moe_intermediate_size=64)
BLOCK = 32
SPRINT = {"baseline": None, "SPRINT keep 1.0": SprintOptions(keep_ratio=1.0, cache_warmup_steps=1),
          "SPRINT keep 0.5": SprintOptions(keep_ratio=0.5, cache_warmup_steps=1)}


def random_backbone(cfg: BackboneConfig, device: torch.device, dtype: torch.dtype) -> LLaDA2MoeModelLM:
    torch.set_default_dtype(dtype)  # parameters in the compute dtype; the router's expert_bias declares fp32
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("expert_bias"):
                tensor.normal_(0.0, 0.01)
            elif "norm" in name:
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 0.02)
    model.model.rotary_emb.reset_inv_freq(device)
    for module in model.modules():
        if isinstance(module, MoE):
            module.pack_experts()
    return model.eval().requires_grad_(False)


def set_grouped(model: LLaDA2MoeModelLM, packs: dict[MoE, object], grouped: bool) -> None:
    for module, packed in packs.items():
        module.packed = packed if grouped else None  # the experts keep their views: same weights either way


def time_steps(model, cfg, device, prefix: int, batch: int, sprint, warmup: int, repeats: int) -> float:
    gen = torch.Generator().manual_seed(prefix + batch)
    mask_id = cfg.image_token_offset - 1  # a text id no prompt uses
    requests = []
    for _ in range(batch):
        cond = torch.randint(0, 1000, (prefix,), generator=gen).tolist()
        requests.append(GenerationRequest(prompts=[cond, cond[: prefix - 40]], gen_length=BLOCK, block_length=BLOCK,
                                          steps=BLOCK, threshold=1.0, cfg_scale=2.0, mask_id=mask_id, eos_id=-1,
                                          seed=len(requests), sprint=sprint))
    states = [start_request(r, device, max_positions=cfg.max_position_embeddings) for r in requests]
    seconds = []
    for i in range(warmup + repeats):
        synchronise(device)
        started = time.perf_counter()
        step(model, states)
        synchronise(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def moe_microbench(device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Issue 2's grouped-vs-loop case: 256 tokens x 16 experts (4 groups, top-2 groups, 4 per token), 2048 -> 512."""
    cfg = BackboneConfig.from_dict(dict(OFFICIAL, num_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4))
    moe = MoE(cfg).to(device=device, dtype=dtype)
    with torch.no_grad():
        for tensor in moe.parameters():
            tensor.normal_(0.0, 0.02)
        moe.gate.expert_bias = torch.randn(16, device=device) * 0.1
    x = torch.randn(256, cfg.hidden_size, device=device, dtype=dtype)
    loop_out = moe(x)
    assert moe.pack_experts(), f"no grouped matmul for {dtype} on {device}"
    packed = moe.packed
    torch.testing.assert_close(moe(x), loop_out, rtol=2e-2, atol=2e-2)
    result = {}
    for name, grouped in (("per-expert loop", False), ("grouped matmul", True)):
        moe.packed = packed if grouped else None
        for _ in range(3):
            moe(x)
        times = []
        for _ in range(repeats):
            synchronise(device)
            started = time.perf_counter()
            moe(x)
            synchronise(device)
            times.append(time.perf_counter() - started)
        result[name] = statistics.median(times)
    return result


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a small config (smoke run on a CPU)")
    parser.add_argument("--prefixes", default="1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = BackboneConfig.from_dict(SMALL if args.small else OFFICIAL)
    started = time.perf_counter()
    model = random_backbone(cfg, device, dtype)
    packs = {m: m.packed for m in model.modules() if isinstance(m, MoE)}
    print(f"{'small' if args.small else 'official'} config, {dtype}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}); "
          f"built in {time.perf_counter() - started:.1f} s, grouped matmul: {all(packs.values())}", flush=True)

    rows = []
    for prefix in (int(p) for p in args.prefixes.split(",")):
        for name, sprint in SPRINT.items():
            for batch in (1, 8):
                for grouped in (True, False):
                    if not grouped and (batch > 1 or name != "baseline"):
                        continue  # the loop once per prefix is enough to show what grouping buys
                    set_grouped(model, packs, grouped)
                    seconds = time_steps(model, cfg, device, prefix, batch, sprint, warmup=2, repeats=args.repeats)
                    rows.append({"prefix": prefix, "variant": name, "requests": batch,
                                 "experts": "grouped" if grouped else "loop", "step_s": seconds})
                    print(f"prefix {prefix:5d} {name:>16} x{batch} ({rows[-1]['experts']:>7} experts): "
                          f"{seconds * 1000:8.1f} ms/step, {batch / seconds:7.1f} request-steps/s", flush=True)
    set_grouped(model, packs, True)
    moe = moe_microbench(device, dtype, args.repeats)
    print(f"MoE 256 tokens x 16 experts: loop {moe['per-expert loop'] * 1000:.2f} ms, grouped "
          f"{moe['grouped matmul'] * 1000:.2f} ms -> {moe['per-expert loop'] / moe['grouped matmul']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(device), "dtype": str(dtype), "steps": rows, "moe": moe}, f, indent=1)


if __name__ == "__main__":
    main()

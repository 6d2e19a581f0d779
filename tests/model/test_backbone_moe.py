"""The MoE layer against naive per-token references (docs/model.md §2.2, MoE block)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workers.model.backbone import load_backbone
from workers.model.backbone.moe import MoE


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_backbone(tiny_ckpt)


@pytest.fixture(scope="module")
def hidden(model):
    # Router inputs as the layer sees them: RMS-normalised activations.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(48, model.config.hidden_size, generator=gen)
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def reference_route(gate, x_token: torch.Tensor, cfg, use_bias: bool = True):
    """Group-limited top-k for one token, with plain Python lists."""
    scores = [1 / (1 + math.exp(-v)) for v in (gate.weight.double() @ x_token.double()).tolist()]
    bias = gate.expert_bias.tolist() if use_bias else [0.0] * len(scores)
    routing = [s + b for s, b in zip(scores, bias)]
    size = cfg.num_experts // cfg.n_group
    group_score = [sum(sorted(routing[g * size:(g + 1) * size])[-2:]) for g in range(cfg.n_group)]
    kept = sorted(range(cfg.n_group), key=lambda g: group_score[g])[-cfg.topk_group:]
    candidates = [e for g in kept for e in range(g * size, (g + 1) * size)]
    chosen = sorted(candidates, key=lambda e: routing[e])[-cfg.num_experts_per_tok:]
    total = sum(scores[e] for e in chosen)
    return {e: scores[e] / total * cfg.routed_scaling_factor for e in chosen}


def swiglu(module, x):
    return module.down_proj.weight @ (F.silu(module.gate_proj.weight @ x) * (module.up_proj.weight @ x))


def test_router_matches_group_limited_reference(model, hidden):
    cfg, gate = model.config, model.model.layers[1].mlp.gate
    ids, weights = gate(hidden)
    for t in range(hidden.shape[0]):
        expected = reference_route(gate, hidden[t], cfg)
        got = dict(zip(ids[t].tolist(), weights[t].tolist()))
        assert set(got) == set(expected)
        assert all(abs(got[e] - expected[e]) < 1e-5 for e in got)
    assert weights.dtype == torch.float32
    assert torch.allclose(weights.sum(-1), torch.full((hidden.shape[0],), cfg.routed_scaling_factor))


def test_expert_bias_changes_some_routes(model, hidden):
    cfg = model.config
    for layer in model.model.layers[cfg.first_k_dense_replace:]:
        gate = layer.mlp.gate
        assert gate.expert_bias.abs().min() > 0  # non-zero, loaded from the file
        with_bias = [set(reference_route(gate, hidden[t], cfg)) for t in range(hidden.shape[0])]
        without = [set(reference_route(gate, hidden[t], cfg, use_bias=False)) for t in range(hidden.shape[0])]
        assert with_bias != without
        ids, _ = gate(hidden)
        assert [set(r) for r in ids.tolist()] == with_bias


def test_grouped_experts_equal_per_token_reference(model, hidden):
    moe: MoE = model.model.layers[2].mlp
    cfg = model.config
    x = hidden.view(6, 8, -1)  # any leading shape
    out = moe(x)
    for t in range(hidden.shape[0]):
        route = reference_route(moe.gate, hidden[t], cfg)
        expected = sum(w * swiglu(moe.experts[e], hidden[t]) for e, w in route.items())
        expected = expected + swiglu(moe.shared_experts, hidden[t])
        assert torch.allclose(out.view(-1, cfg.hidden_size)[t], expected, atol=1e-6, rtol=1e-4), t
    assert out.shape == x.shape and out.dtype == x.dtype


def test_tokens_that_share_no_expert_and_a_single_token(model, hidden):
    moe = model.model.layers[1].mlp
    single = moe(hidden[:1])
    assert torch.allclose(single, moe(hidden)[:1], atol=1e-6)


def test_bf16_moe_close_to_fp32(tiny_ckpt, hidden):
    moe32 = load_backbone(tiny_ckpt).model.layers[1].mlp
    moe16 = load_backbone(tiny_ckpt, dtype=torch.bfloat16).model.layers[1].mlp
    # bf16 on a CPU is the files' dtype: weights stay memory-mapped, so the experts are left unpacked.
    assert moe32.packed is not None and moe16.packed is None
    a, b = moe32(hidden), moe16(hidden.bfloat16())
    assert b.dtype == torch.bfloat16
    assert (a - b.float()).abs().max() < 0.05 * a.abs().max()


def unpacked_copy(moe: MoE, cfg) -> MoE:
    """The same layer with its experts as separate modules (the per-expert loop path)."""
    copy = MoE(cfg).requires_grad_(False).to(moe.experts[0].down_proj.weight.dtype)
    copy.load_state_dict(moe.state_dict())
    return copy


def test_loaded_experts_are_packed_as_views(model):
    """One copy of the weights: each expert's Linear is a slice of its layer's stacked tensors."""
    cfg = model.config
    for layer in model.model.layers[cfg.first_k_dense_replace:]:
        moe = layer.mlp
        assert moe.packed is not None
        storages = {moe.packed.gate_up.untyped_storage().data_ptr(), moe.packed.down.untyped_storage().data_ptr()}
        for e, expert in enumerate(moe.experts):
            for linear in (expert.gate_proj, expert.up_proj, expert.down_proj):
                assert linear.weight.untyped_storage().data_ptr() in storages
            assert torch.equal(moe.packed.gate_up[e, cfg.moe_intermediate_size:], expert.up_proj.weight)
    assert "model.layers.2.mlp.experts.31.up_proj.weight" in model.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_matmul_equals_the_expert_loop(model, hidden, dtype):
    loop = unpacked_copy(model.model.layers[1].mlp, model.config).to(dtype)
    packed = unpacked_copy(loop, model.config)
    assert loop.packed is None and packed.pack_experts()
    torch.testing.assert_close(packed(hidden.to(dtype)), loop(hidden.to(dtype)), rtol=1e-5, atol=1e-6)


def test_each_expert_runs_once_per_forward_in_the_loop(model, hidden):
    """Unpacked, tokens are still grouped by expert: one call per expert that received tokens."""
    moe = unpacked_copy(model.model.layers[1].mlp, model.config)
    calls: dict[int, int] = {}
    handles = [
        expert.register_forward_hook(lambda mod, args, out, e=e: calls.__setitem__(e, calls.get(e, 0) + 1))
        for e, expert in enumerate(moe.experts)
    ]
    try:
        moe(hidden)
    finally:
        for handle in handles:
            handle.remove()
    ids, _ = moe.gate(hidden)
    assert set(calls) == set(ids.flatten().tolist())
    assert set(calls.values()) == {1}


def test_no_grouped_matmul_keeps_the_loop(model, hidden):
    """fp64 has no grouped matmul: packing declines, the experts stay as loaded and the layer still runs."""
    moe = unpacked_copy(model.model.layers[1].mlp, model.config).double()
    before = moe.experts[3].down_proj.weight
    assert moe.pack_experts() is False and moe.packed is None
    assert moe.experts[3].down_proj.weight is before
    reference = model.model.layers[1].mlp(hidden)
    torch.testing.assert_close(moe(hidden.double()).float(), reference, rtol=1e-4, atol=1e-5)

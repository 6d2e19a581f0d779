"""The backbone forward: RoPE, the KV cache, logits_to_keep, key importance, masks, and a naive whole-model
reference written from docs/model.md §2.2 (explicit loops, float64)."""

from __future__ import annotations

import math

import pytest
import torch

from workers.model.backbone import load_backbone
from workers.model.backbone.rope import RotaryEmbedding, apply_partial_rope
from workers.model.errors import ModelInputError

BLOCK = 4


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_backbone(tiny_ckpt)


def block_causal(length: int, block: int = BLOCK) -> torch.Tensor:
    """Additive [1, 1, L, L] mask: a token in block b sees every token in blocks ≤ b (§3.1 step 2)."""
    blocks = torch.arange(length) // block
    visible = blocks[None, :] <= blocks[:, None]
    return torch.zeros(length, length).masked_fill(~visible, float("-inf"))[None, None]


def tokens(model, length: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)


def positions(length: int, batch: int = 1, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + length).expand(batch, length)


# ---- RoPE ----------------------------------------------------------------------------------------------
def test_partial_rope_matches_pairwise_rotation():
    head_dim, rotary_dim, theta = 16, 8, 600000.0
    x = torch.randn(1, 2, 5, head_dim, dtype=torch.float64)
    pos = torch.tensor([[0, 1, 7, 100, 4000]])
    cos, sin = RotaryEmbedding(rotary_dim, theta)(pos, torch.float64)
    got = apply_partial_rope(x, cos, sin)
    half = rotary_dim // 2
    expected = x.clone()
    for p_i, p in enumerate(pos[0].tolist()):
        for i in range(half):  # dims i and i + half rotate together by p / theta^(2i / rotary_dim)
            angle = p / theta ** (2 * i / rotary_dim)
            a, b = x[0, :, p_i, i], x[0, :, p_i, i + half]
            expected[0, :, p_i, i] = a * math.cos(angle) - b * math.sin(angle)
            expected[0, :, p_i, i + half] = b * math.cos(angle) + a * math.sin(angle)
    # Angles are computed in fp32 as in the reference (position × inv_freq), so large positions carry
    # ~1e-5 absolute error against this float64 rotation.
    assert torch.allclose(got[..., :4, :], expected[..., :4, :], atol=1e-6)
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(got[..., rotary_dim:], x[..., rotary_dim:])  # the other dims pass through


# ---- whole-model reference -------------------------------------------------------------------------------
def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def reference_logits(model, ids: list[int], mask: torch.Tensor) -> torch.Tensor:
    """One sequence, float64, loops over heads and tokens; mask [L, L] additive."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    eps, hd, rd = cfg.rms_norm_eps, cfg.head_dim, cfg.rotary_dim
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    length = len(ids)
    x = sd["model.word_embeddings.weight"][ids]

    def rope(v, p):
        out = v.clone()
        for i in range(rd // 2):
            angle = p / cfg.rope_theta ** (2 * i / rd)
            a, b = v[i], v[i + rd // 2]
            out[i] = a * math.cos(angle) - b * math.sin(angle)
            out[i + rd // 2] = b * math.cos(angle) + a * math.sin(angle)
        return out

    def ffn(prefix, v):
        g, u, d = (sd[f"{prefix}.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        return d @ (torch.nn.functional.silu(g @ v) * (u @ v))

    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        h = rms(x, sd[f"{p}.input_layernorm.weight"], eps)
        qkv = (h @ sd[f"{p}.attention.query_key_value.weight"].T).view(length, nh + 2 * nkv, hd)
        q_norm, k_norm = sd[f"{p}.attention.query_layernorm.weight"], sd[f"{p}.attention.key_layernorm.weight"]
        # heads: q = the first nh, k = the next nkv, v = the last nkv; q/k RMSNorm per head, then RoPE
        q = [[rope(rms(qkv[t, j], q_norm, eps), t) for t in range(length)] for j in range(nh)]
        k = [[rope(rms(qkv[t, nh + j], k_norm, eps), t) for t in range(length)] for j in range(nkv)]
        v = [[qkv[t, nh + nkv + j] for t in range(length)] for j in range(nkv)]
        heads = []
        for j in range(nh):
            kv = j // (nh // nkv)
            rows = []
            for t in range(length):
                s = torch.stack([q[j][t] @ k[kv][u] / math.sqrt(hd) for u in range(length)]) + mask[t].double()
                rows.append(torch.softmax(s, -1) @ torch.stack(v[kv]))
            heads.append(torch.stack(rows))
        attn = torch.cat(heads, -1) @ sd[f"{p}.attention.dense.weight"].T
        x = x + attn
        h = rms(x, sd[f"{p}.post_attention_layernorm.weight"], eps)
        out = []
        for t in range(length):
            if i < cfg.first_k_dense_replace:
                out.append(ffn(f"{p}.mlp", h[t]))
                continue
            scores = torch.sigmoid(sd[f"{p}.mlp.gate.weight"] @ h[t])
            routing = scores + sd[f"{p}.mlp.gate.expert_bias"]
            groups = routing.view(cfg.n_group, -1)
            kept = groups.topk(2, -1).values.sum(-1).topk(cfg.topk_group).indices
            allowed = torch.full_like(groups, float("-inf"))
            allowed[kept] = groups[kept]
            chosen = allowed.flatten().topk(cfg.num_experts_per_tok).indices
            w = scores[chosen] / scores[chosen].sum() * cfg.routed_scaling_factor
            y = sum(w[n] * ffn(f"{p}.mlp.experts.{int(e)}", h[t]) for n, e in enumerate(chosen))
            out.append(y + ffn(f"{p}.mlp.shared_experts", h[t]))
        x = x + torch.stack(out)
    return rms(x, sd["model.norm.weight"], eps) @ sd["lm_head.weight"].T


def test_forward_matches_naive_reference(model):
    ids = tokens(model, 12)
    mask = block_causal(12)
    got = model(ids, positions(12), mask).logits[0]
    expected = reference_logits(model, ids[0].tolist(), mask[0, 0])
    assert torch.allclose(got.double(), expected, atol=2e-5, rtol=1e-4)


# ---- KV cache, logits_to_keep, key importance ------------------------------------------------------------
def test_cached_prefix_then_block_equals_full_forward(model):
    length, prefix = 3 * BLOCK, 2 * BLOCK
    ids, mask = tokens(model, length, batch=2), block_causal(length)
    full = model(ids, positions(length, 2), mask).logits
    first = model(ids[:, :prefix], positions(prefix, 2), mask[..., :prefix, :prefix], use_cache=True)
    cache = first.past_key_values
    assert len(cache) == model.config.num_hidden_layers
    assert cache[0][0].shape == (2, model.config.num_key_value_heads, prefix, model.config.head_dim)
    step = model(ids[:, prefix:], positions(BLOCK, 2, start=prefix), mask[..., prefix:, :], past_key_values=cache,
                 use_cache=True)
    assert torch.allclose(step.logits, full[:, prefix:], atol=1e-5)
    assert torch.allclose(first.logits, full[:, :prefix], atol=1e-5)  # block-causal: prefix ignores the future
    assert step.past_key_values[0][0].shape[2] == length
    assert model(ids[:, prefix:], positions(BLOCK, 2, prefix), None, past_key_values=cache).past_key_values is None


def test_logits_to_keep_returns_the_last_positions(model):
    ids = tokens(model, 10)
    full = model(ids, positions(10)).logits
    kept = model(ids, positions(10), logits_to_keep=3).logits
    assert kept.shape == (1, 3, model.config.vocab_size) and kept.dtype == torch.float32
    assert torch.allclose(kept, full[:, -3:], atol=1e-6)


def test_key_importance_is_a_distribution_over_visible_keys(model):
    length = 3 * BLOCK
    ids, mask = tokens(model, length, batch=2), block_causal(length)
    fast = model(ids, positions(length, 2), mask)
    explicit = model(ids, positions(length, 2), mask, key_importance=True)
    assert fast.key_importance is None
    imp = explicit.key_importance
    assert imp.shape == (2, length)
    assert torch.allclose(imp.sum(-1), torch.ones(2), atol=1e-5)
    assert (imp > 0).all()  # block-causal: every key is seen by its own block
    assert torch.allclose(explicit.logits, fast.logits, atol=1e-5)  # both attention paths agree
    blocked = mask.clone()
    blocked[..., 5] = float("-inf")  # hide key 5 from every query
    imp = model(ids, positions(length, 2), blocked, key_importance=True).key_importance
    assert torch.all(imp[:, 5] == 0) and torch.allclose(imp.sum(-1), torch.ones(2), atol=1e-5)


def test_key_importance_with_cache_covers_past_and_current_keys(model):
    ids, mask = tokens(model, 8), block_causal(8)
    cache = model(ids[:, :4], positions(4), mask[..., :4, :4], use_cache=True).past_key_values
    imp = model(ids[:, 4:], positions(4, start=4), mask[..., 4:, :], past_key_values=cache,
                key_importance=True).key_importance
    assert imp.shape == (1, 8) and torch.allclose(imp.sum(), torch.tensor(1.0), atol=1e-5)


def test_key_importance_from_the_last_queries_only(model):
    """importance_queries=n: the mass the last n queries (a block, as SPRINT asks) give each key; the
    output still comes from the fused attention and equals the plain forward."""
    length = 3 * BLOCK
    ids, mask = tokens(model, length, batch=2), block_causal(length)
    fast = model(ids, positions(length, 2), mask)
    everyone = model(ids, positions(length, 2), mask, key_importance=True).key_importance
    tail = model(ids, positions(length, 2), mask, key_importance=True, importance_queries=BLOCK)
    assert torch.allclose(tail.logits, fast.logits, atol=1e-5)
    assert torch.allclose(tail.key_importance.sum(-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(tail.key_importance, everyone, atol=1e-3)  # other queries, other mass
    whole = model(ids, positions(length, 2), mask, key_importance=True, importance_queries=length)
    assert torch.allclose(whole.key_importance, everyone, atol=1e-6)

    # Per row: each row's own tail, exactly as if it ran alone with that tail.
    per_row = model(ids, positions(length, 2), mask, key_importance=True,
                    importance_queries=torch.tensor([BLOCK, 2 * BLOCK])).key_importance
    for row, n in ((0, BLOCK), (1, 2 * BLOCK)):
        alone = model(ids[row : row + 1], positions(length), mask, key_importance=True, importance_queries=n)
        assert torch.allclose(per_row[row], alone.key_importance[0], atol=1e-6)

    with pytest.raises(ModelInputError, match="importance_queries"):
        model(ids, positions(length, 2), mask, key_importance=True, importance_queries=length + 1)


# ---- masks --------------------------------------------------------------------------------------------
def test_left_padding_with_fully_hidden_rows_stays_finite_and_exact(model):
    """A CFG-style left-padded row whose first block is all padding: pad keys hidden from every query."""
    length, pad = 3 * BLOCK, BLOCK + 1
    ids = tokens(model, length)
    real = ids[:, : length - pad]
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), real], dim=1)
    mask = block_causal(length).clone()
    mask[..., :pad] = float("-inf")
    pos = torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(length - pad)])[None]
    out = model(padded, pos, mask).logits
    assert torch.isfinite(out).all()
    importance = model(padded, pos, mask, key_importance=True).key_importance
    assert torch.all(importance[:, :pad] == 0)  # padding rows add no mass to the hidden pad keys
    assert torch.allclose(importance.sum(), torch.tensor(1.0), atol=1e-5)
    # The real tokens see exactly what an unpadded run with the same blocks would show them.
    alone_mask = mask[..., pad:, pad:]
    alone = model(real, positions(length - pad), alone_mask).logits
    assert torch.allclose(out[:, pad:], alone, atol=1e-5)


def test_bool_mask_equals_additive_mask(model):
    ids, mask = tokens(model, 8), block_causal(8)
    a = model(ids, positions(8), mask).logits
    b = model(ids, positions(8), torch.isfinite(mask)).logits
    assert torch.allclose(a, b)


def test_public_call_form_with_default_positions_and_attention_allowed(model):
    """Issue 2's form: model(input_ids, position_ids=None, attention_allowed=bool [B, Lq, Lk])."""
    ids, mask = tokens(model, 8, batch=2), block_causal(8)
    expected = model(ids, positions(8, batch=2), mask).logits
    allowed = torch.isfinite(mask)[0].expand(2, 8, 8)
    got = model(ids, attention_allowed=allowed).logits
    assert got.shape == (2, 8, model.config.vocab_size)
    assert torch.allclose(got, expected)
    # with a cache, default positions continue after the cached keys (blocks of 4: prefix, then block)
    cache = model(ids[:, :4], use_cache=True).past_key_values
    tail = model(ids[:, 4:], past_key_values=cache).logits
    assert torch.allclose(tail, model(ids, attention_mask=block_causal(8, block=4)).logits[:, 4:], atol=1e-5)


def test_attention_allowed_must_be_bool_and_alone(model):
    ids, mask = tokens(model, 8), block_causal(8)
    with pytest.raises(ModelInputError, match="attention_allowed"):
        model(ids, attention_allowed=mask[0])  # additive floats, not bool
    with pytest.raises(ModelInputError, match="attention_allowed"):
        model(ids, attention_mask=mask, attention_allowed=torch.isfinite(mask)[0])


def test_bad_shapes_name_the_argument(model):
    ids = tokens(model, 8)
    with pytest.raises(ModelInputError, match="attention_mask"):
        model(ids, positions(8), block_causal(7))
    with pytest.raises(ModelInputError, match="position_ids"):
        model(ids, positions(7))
    cache = model(ids, positions(8), use_cache=True).past_key_values
    with pytest.raises(ModelInputError, match="past_key_values"):
        model(ids, positions(8), None, past_key_values=cache[:1])
    with pytest.raises(ModelInputError, match="attention_mask"):
        model(ids, positions(8, start=8), block_causal(8), past_key_values=cache)  # keys are 16, not 8

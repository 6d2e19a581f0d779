"""The explicit attention path (SPRINT's key importance) against SDPA and against itself unchunked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workers.model.backbone.attention import explicit_attention


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 16, generator=gen) for _ in range(3))
    blocked = torch.rand(2, 1, 37, 37, generator=gen) < 0.3
    blocked[..., 0] = False  # every query sees at least one key
    blocked[..., 5] = True  # and no query sees key 5
    mask = torch.zeros(2, 1, 37, 37).masked_fill(blocked, float("-inf"))
    weights = torch.rand(2, 1, 37, 1, generator=gen)
    return q, k, v, mask, weights / weights.sum(dim=2, keepdim=True)


def test_chunked_equals_whole(inputs):
    q, k, v, mask, weights = inputs
    whole_out, whole_mass = explicit_attention(q, k, v, mask, weights, 0.25, scores_per_chunk=10**9)
    # 2·4·37 scores per query row: a budget of 1000 scores gives chunks of 3 queries (13 chunks)
    out, mass = explicit_attention(q, k, v, mask, weights, 0.25, scores_per_chunk=1000)
    torch.testing.assert_close(out, whole_out)
    torch.testing.assert_close(mass, whole_mass)
    torch.testing.assert_close(mass.sum(dim=-1), torch.ones(2))


def test_output_equals_sdpa_and_mass_is_the_softmax_mean(inputs):
    q, k, v, mask, weights = inputs
    out, mass = explicit_attention(q, k, v, mask, weights, 0.25, scores_per_chunk=1000)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25))
    probs = torch.softmax(q @ k.transpose(2, 3) * 0.25 + mask, dim=-1)
    torch.testing.assert_close(mass, (probs * weights).sum(dim=2).mean(dim=1))
    assert (mass[:, 5] == 0).all()

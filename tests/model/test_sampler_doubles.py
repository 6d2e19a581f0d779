"""`ScriptedBackboneDouble`: a test double that follows the backbone forward contract exactly.

Two tiny attention layers with learned position embeddings and random weights (so every output depends
on which keys a query may see and at which positions), plus a *script* of logit biases by position id
that lets a test force a token (for example EOS) at a chosen place. The tests in this file check that the
double itself honours the contract the sampler relies on (additive masks, past KV, logits_to_keep,
key_importance).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from torch import nn

VOCAB = 48
IMAGE_OFFSET = 32  # ids >= 32 are "image codes"
EOS_ID = 2
MASK_ID = 3
PAD_FREE_IDS = list(range(4, 32))  # ordinary text ids for prompts


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    """Tiny tensors on a shared 2-core machine: torch's thread pool only adds contention (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class DoubleOutput(NamedTuple):
    logits: torch.Tensor
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None
    key_importance: torch.Tensor | None


class ScriptedBackboneDouble(nn.Module):
    def __init__(
        self,
        *,
        seed: int = 0,
        hidden: int = 16,
        layers: int = 2,
        max_positions: int = 1024,
        script: dict[int, int] | None = None,
        script_bias: float = 12.0,
        forbidden: tuple[int, ...] = (EOS_ID, MASK_ID),
        sharpness: float = 3.0,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(
            vocab_size=VOCAB, image_token_offset=IMAGE_OFFSET, pad_token_id=EOS_ID, num_hidden_layers=layers
        )
        self.embed = nn.Parameter(torch.randn(VOCAB, hidden, generator=g))
        self.pos = nn.Parameter(torch.randn(max_positions, hidden, generator=g) * 0.5)
        self.qkv = nn.ParameterList(
            nn.Parameter(torch.randn(3, hidden, hidden, generator=g) / hidden**0.5) for _ in range(layers)
        )
        self.head = nn.Parameter(torch.randn(hidden, VOCAB, generator=g) * sharpness / hidden**0.5)
        # Script: a bias table by position id. Forbidden ids (EOS, mask) are pushed down everywhere except
        # where the script asks for them, so random weights never end a generation by accident.
        table = torch.zeros(max_positions, VOCAB)
        table[:, list(forbidden)] = -script_bias
        for position, token in (script or {}).items():
            table[position, token] += 2 * script_bias
        self.register_buffer("script", table)
        self.calls: list[dict] = []

    def forward(
        self,
        input_ids,
        position_ids,
        attention_mask=None,
        past_key_values=None,
        use_cache=False,
        logits_to_keep=0,
        key_importance=False,
        importance_queries=0,
    ) -> DoubleOutput:
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        self.calls.append(
            dict(
                input_ids=input_ids.clone(),
                position_ids=position_ids.clone(),
                attention_mask=None if attention_mask is None else attention_mask.clone(),
                past_len=past_len,
                use_cache=use_cache,
                key_importance=key_importance,
                importance_queries=importance_queries,
            )
        )
        h = self.embed[input_ids] + self.pos[position_ids]
        presents, importance = [], None
        for layer, w in enumerate(self.qkv):
            q, k, v = (h @ w[i] for i in range(3))
            k, v = k.unsqueeze(1), v.unsqueeze(1)  # [B, 1 kv head, L, d]
            if past_key_values is not None:
                k = torch.cat((past_key_values[layer][0], k), dim=2)
                v = torch.cat((past_key_values[layer][1], v), dim=2)
            scores = q.unsqueeze(1) @ k.transpose(2, 3) / k.shape[-1] ** 0.5
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = torch.softmax(scores.float(), dim=-1)
            h = h + (probs @ v).squeeze(1)
            presents.append((k, v))
            # the largest tail for every row: rows in these tests share one block length
            tail = int(torch.as_tensor(importance_queries).max()) or probs.shape[2]
            mass = probs[:, :, -tail:].mean(dim=(1, 2))
            importance = mass if importance is None else importance + mass
        if logits_to_keep:
            h, position_ids = h[:, -logits_to_keep:], position_ids[:, -logits_to_keep:]
        logits = (h @ self.head + self.script[position_ids]).float()
        return DoubleOutput(
            logits,
            presents if use_cache else None,
            importance / len(self.qkv) if key_importance else None,
        )


def block_causal_mask(length: int, block: int) -> torch.Tensor:
    """The reference's additive block-causal mask [1, 1, L, L] (docs/model.md §3.1 step 2)."""
    blocks = -(-length // block)
    tril = torch.tril(torch.ones(blocks, blocks))
    full = tril.repeat_interleave(block, 0).repeat_interleave(block, 1)[:length, :length]
    return full.log()[None, None]


# -- the double honours the forward contract -----------------------------------------------------------


def test_masked_keys_do_not_influence_visible_rows():
    model = ScriptedBackboneDouble()
    ids = torch.tensor([PAD_FREE_IDS[:8]])
    pos = torch.arange(8)[None]
    mask = block_causal_mask(8, 4)
    changed = ids.clone()
    changed[0, 6] = PAD_FREE_IDS[20]  # a token in the second block
    a = model(ids, pos, mask).logits
    b = model(changed, pos, mask).logits
    assert torch.equal(a[0, :4], b[0, :4])  # the first block cannot see the second
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_past_kv_reproduces_full_forward_and_logits_to_keep():
    model = ScriptedBackboneDouble()
    ids = torch.tensor([PAD_FREE_IDS[:8]])
    pos = torch.arange(8)[None]
    full = model(ids, pos, block_causal_mask(8, 4), use_cache=True)
    prefix_kv = [(k[:, :, :4], v[:, :, :4]) for k, v in full.past_key_values]
    tail = model(ids[:, 4:], pos[:, 4:], torch.zeros(1, 1, 4, 8), past_key_values=prefix_kv, logits_to_keep=4)
    assert torch.allclose(tail.logits, full.logits[:, 4:], atol=1e-5)


def test_key_importance_is_a_distribution_over_keys():
    model = ScriptedBackboneDouble()
    ids = torch.tensor([PAD_FREE_IDS[:8]])
    out = model(ids, torch.arange(8)[None], block_causal_mask(8, 4), key_importance=True)
    assert out.key_importance.shape == (1, 8)
    assert torch.allclose(out.key_importance.sum(-1), torch.ones(1))

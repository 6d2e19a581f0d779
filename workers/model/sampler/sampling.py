"""Token choice per position: greedy or temperature / top-k / top-p sampling, plus confidence scores.

Follows the reference sampler (docs/model.md §3.1 step 4a): filter the logits, softmax in fp32, argmax
(temperature 0) or one multinomial draw; the probability of the chosen token is its confidence.
"""

from __future__ import annotations

import torch


def _top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    if not top_k or top_k >= logits.shape[-1]:  # None or 0: off, as in the reference
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p_filter(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    # As the reference: drop a token once the mass strictly before it exceeds top_p (the most likely token
    # always stays).
    drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) > top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [..., V] -> (token ids [...], their probabilities [...], the filtered distribution [..., V]).

    Every op works per position over the vocabulary; a draw (temperature > 0) takes [B, V], one request's
    positions with that request's generator."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logits = _top_p_filter(_top_k_filter(logits, top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    else:
        tokens = probs.argmax(dim=-1)
    token_probs = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, token_probs, probs


def confidence_scores(strategy: str, token_probs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Ranking score for unmasking (§3.6 `remasking`); higher = more confident.

    docs/model.md §11 open question 1: the exact HF definitions are unseen. Chosen: `low_confidence` = the
    chosen token's probability (the baseline), `top_k_margin` = top-1 minus top-2 probability,
    `neg_entropy` = sum p log p (the negative entropy) of the filtered distribution.
    """
    if strategy == "low_confidence":
        return token_probs
    if strategy == "top_k_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if strategy == "neg_entropy":
        return (probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1)
    raise ValueError(f"unknown remasking strategy {strategy!r}")

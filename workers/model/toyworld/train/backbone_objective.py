"""The masked-diffusion objective matched to the runtime's block-diffusion sampler (docs/model.md §3.1).

At inference block b is denoised with every earlier block clean and nothing after it in the window; inside
the block the response positions go from all masked to all filled. So each training row is:
* one response block b, drawn with probability ∝ its number of response positions (every response token
  gets equal weight; the EOS that fills a block's tail counts too);
* the row cut after block b, blocks before it clean (the prompt, and response tokens of earlier blocks);
* a mask ratio t ~ U(0, 1) per row; each response position of block b masked with probability t (at least
  one), the prompt never;
* attention exactly as the sampler builds it (`sampler.batch.batch_visibility`: block-causal over blocks of
  32, CFG left pads hidden), position ids as the sampler gives the row;
* loss: plain cross-entropy averaged over all masked positions of the batch (not LLaDA's 1/t weighting:
  with t ~ U(0, 1) that weight is unbounded near t = 0 and made short runs noisy).
Rows of equal cut length (always a multiple of 32) share one forward, so there is no right padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workers.model.sampler.batch import RowInput, batch_visibility

from .backbone_data import BLOCK, Example


@dataclass
class NoisedRow:
    task: str
    ids: np.ndarray  # inputs, masked positions replaced by the mask id
    targets: np.ndarray
    loss_mask: np.ndarray  # bool: masked response positions of block b
    positions: np.ndarray
    pad: int


def noise_row(example: Example, rng: np.random.Generator, mask_id: int) -> NoisedRow:
    length, p = len(example.ids), example.prompt_length
    blocks = np.arange(p // BLOCK, length // BLOCK)
    counts = np.array([min((b + 1) * BLOCK, length) - max(b * BLOCK, p) for b in blocks], dtype=np.float64)
    b = int(rng.choice(blocks, p=counts / counts.sum()))
    end = (b + 1) * BLOCK
    start = max(b * BLOCK, p)
    t = rng.random()
    masked = np.zeros(end, dtype=bool)
    masked[start:end] = rng.random(end - start) < t
    if not masked.any():
        masked[start + int(rng.integers(end - start))] = True
    ids = example.ids[:end].copy()
    ids[masked] = mask_id
    return NoisedRow(example.task, ids, example.ids[:end], masked, example.positions[:end], example.pad)


def row_inputs(rows: list[NoisedRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, position_ids, attention_allowed) for rows of one length, as the sampler's batch builder
    computes them for rows that run their whole window (no cache)."""
    ids = torch.from_numpy(np.stack([r.ids for r in rows]))
    positions = torch.from_numpy(np.stack([r.positions for r in rows]))
    specs = [RowInput(ids[i], positions[i], start=0, pad=r.pad, block_length=BLOCK, past=None)
             for i, r in enumerate(rows)]
    return ids, positions, batch_visibility(specs, ids.shape[1], 0, ids.device)


def batch_loss(model: torch.nn.Module, rows: list[NoisedRow]) -> tuple[torch.Tensor, dict[str, tuple[float, int]]]:
    """Mean CE over every masked position of `rows`, and per task (sum of CE, count) for reporting."""
    by_length: dict[int, list[NoisedRow]] = {}
    for row in rows:
        by_length.setdefault(len(row.ids), []).append(row)
    total = torch.zeros(())
    count = 0
    per_task: dict[str, list] = {}
    for group in by_length.values():
        ids, positions, allowed = row_inputs(group)
        logits = model(ids, positions, attention_allowed=allowed).logits
        targets = torch.from_numpy(np.stack([r.targets for r in group]))
        where = torch.from_numpy(np.stack([r.loss_mask for r in group]))
        ce = F.cross_entropy(logits[where], targets[where], reduction="none")
        total = total + ce.sum()
        count += int(where.sum())
        row_of = where.nonzero()[:, 0]
        sums = torch.zeros(len(group)).index_add_(0, row_of, ce.detach())
        for r, s in zip(group, sums.tolist()):
            entry = per_task.setdefault(r.task.split("/")[0], [0.0, 0])
            entry[0] += s
            entry[1] += int(r.loss_mask.sum())
    return total / max(count, 1), {k: (v[0], v[1]) for k, v in per_task.items()}

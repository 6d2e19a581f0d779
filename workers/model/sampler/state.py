"""Per-request decoding state of the block-diffusion loop (docs/model.md §3.1, §3.2).

A `RequestState` holds the sequence rows of one request in its own coordinates (the conditional prompt,
then the masked generation area, padded to whole blocks), the block and step it is at, its random
generator and, with SPRINT, its prefix KV cache. `apply` writes one step's accepted tokens; the batched
forward lives in `stepper.py`, the token choice in `advance.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from workers.model.errors import ModelInputError
from workers.model.sampler import sprint as sprint_ops
from workers.model.sampler.batch import RowInput
from workers.model.sampler.request import GenerationRequest, GenerationResult, SprintOptions
from workers.model.sampler.schedule import block_count, effective_steps, transfer_schedule

log = logging.getLogger(__name__)

# docs/model.md §3.2 / README: SPRINT is not supported with 3-way editing CFG; the request silently runs the
# baseline loop instead (recorded in GenerationResult.sprint_used).
SPRINT_MAX_BRANCHES = 2
# `GenerationRequest.prefix_cache`: SPRINT's prefix KV reuse with nothing pruned, the baseline's schedule and
# its confidence (the chosen token's probability), which gives the baseline's tokens (tested).
EXACT_PREFIX_CACHE = SprintOptions(keep_ratio=1.0, cache_warmup_steps=1, adaptive_unmasking=False)


@dataclass
class RequestState:
    request: GenerationRequest
    x: torch.Tensor  # Long[R, L], own coordinates; companions left-padded with mask ids
    positions: torch.Tensor  # Long[R, L]; 0 on pads, restarting at 0 at a row's first real token
    pads: list[int]  # CFG left padding per row
    unfilled: torch.Tensor  # Bool[L]: generation positions still masked (shared by all rows)
    confidence: torch.Tensor  # Float[L]: 1 for the prompt, acceptance probability for generated tokens
    prompt_length: int
    steps: int
    schedule: list[int]
    num_blocks: int
    first_block: int
    generator: torch.Generator | None
    sprint: SprintOptions | None
    stop_ids: frozenset[int]
    block: int = 0
    step_in_block: int = 0
    done: bool = False
    stop_length: int | None = None  # generated ids up to and including the stop token, when one ended it
    forward_steps: int = 0
    cache: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None  # SPRINT prefix KV per row
    extra: dict = field(default_factory=dict)

    # -- layout ---------------------------------------------------------------------------------------
    @property
    def block_length(self) -> int:
        return self.request.block_length

    @property
    def num_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def window_end(self) -> int:
        return (self.block + 1) * self.block_length

    @property
    def block_start(self) -> int:
        return self.window_end - self.block_length

    def progress(self) -> tuple[int, int]:
        """(steps done, planned steps); a block that finishes early counts as all of its steps."""
        total = (self.num_blocks - self.first_block) * self.steps
        if self.done:
            return total, total
        return (self.block - self.first_block) * self.steps + self.step_in_block, total

    # -- forward inputs -------------------------------------------------------------------------------
    def uses_cache(self) -> bool:
        return self.cache is not None

    def row_input(self, row: int) -> RowInput:
        end, start = self.window_end, self.block_start
        if not self.uses_cache():
            return RowInput(self.x[row, :end], self.positions[row, :end], start=0, pad=self.pads[row],
                            block_length=self.block_length, past=None)
        # SPRINT after warm-up: only the active block is run; the prefix comes from the cache, and under the
        # block-causal mask every real query of the block sees all of it.
        return RowInput(self.x[row, start:end], self.positions[row, start:end], start=start, pad=self.pads[row],
                        block_length=self.block_length, past=self.cache[row])

    # -- one step -------------------------------------------------------------------------------------
    def apply(self, tokens: torch.Tensor, token_probs: torch.Tensor, chosen: torch.Tensor, *,
              block_open: bool) -> None:
        """Write this step's accepted tokens (bool `chosen` [B] over the active block; `tokens` and
        `token_probs` [B]), then stop or finish the block as §3.1 says. `block_open`: a masked position of
        the block is left after this step (the caller knows it for a whole batch at once)."""
        start, end = self.block_start, self.window_end
        block_ids, confidence = self.x[:, start:end], self.confidence[start:end]
        block_ids.copy_(torch.where(chosen, tokens, block_ids))  # where, not boolean indexing: fewer ops
        confidence.copy_(torch.where(chosen, token_probs, confidence))
        self.unfilled[start:end] &= ~chosen
        self.step_in_block += 1
        self.forward_steps += 1

        if self.request.eos_early_stop and self._stop_at_once():
            return
        if not block_open or self.step_in_block >= self.steps:
            self._finish_block()

    def _first_stop(self, end: int) -> int | None:
        """Offset (from the prompt end) of the first stop token in the generated area before `end`."""
        generated = self.x[0, self.prompt_length : end]
        hits = torch.isin(generated, torch.tensor(sorted(self.stop_ids), device=generated.device))
        hits &= ~self.unfilled[self.prompt_length : end]
        found = hits.nonzero()
        return int(found[0, 0]) if found.numel() else None

    def _stop_at_once(self) -> bool:
        """§3.1 step 4c, as the spec words it: after a step, a stop token in the generated area with every
        position before it filled finishes at once (checked every step, not only when the stop token itself
        was just written as `MINI` does, so a late-filled gap before it cannot defer the stop)."""
        first = self._first_stop(self.window_end)
        if first is None or bool(self.unfilled[self.prompt_length : self.prompt_length + first].any()):
            return False
        self._finish(first)
        return True

    def _finish_block(self) -> None:
        # §3.1 step 4b: always-on stop after a block that holds a stop token in x[P:e].
        first = self._first_stop(self.window_end)
        if first is not None:
            self._finish(first)
            return
        self.block += 1
        self.step_in_block = 0
        self.cache = None  # the prefix grows by the finished block: SPRINT warms up again
        if self.block >= self.num_blocks:
            self._finish(None)

    def _finish(self, first_stop: int | None) -> None:
        self.done = True
        self.stop_length = None if first_stop is None else first_stop + 1
        self.cache = None

    def settled_ids(self) -> list[int]:
        """The generated ids no later step can change: those of the finished blocks (§3.1: a block's tokens
        are final once it closes), or the whole result once done. An answer can be shown growing by these."""
        if self.done:
            return self.result().ids
        end = min(self.block_start, self.prompt_length + self.request.gen_length)
        return self.x[0, self.prompt_length:end].tolist() if end > self.prompt_length else []

    def result(self) -> GenerationResult:
        """§3.1 step 5: generated ids only, cut after the first stop token (included).

        docs/model.md §3.1 step 5 / open question 14: a first stop token in the final block's overhang
        (beyond P + G) is clamped away: the result is then the G generated ids, finish_reason "length".
        """
        gen = self.request.gen_length
        stopped = self.stop_length is not None and self.stop_length <= gen
        n = self.stop_length if stopped else gen
        ids = self.x[0, self.prompt_length : self.prompt_length + n].tolist()
        return GenerationResult(
            ids=ids,
            finish_reason="stop" if stopped else "length",
            forward_steps=self.forward_steps,
            sprint_used=self.request.sprint is not None and self.sprint is not None,
            extra=self.extra,
        )


def start_request(
    request: GenerationRequest, device: torch.device | str = "cpu", *, max_positions: int | None = None
) -> RequestState:
    """Validate a request and lay out its rows (docs/model.md §3.1 steps 1-2, §3.2 padding).

    `max_positions`: the backbone's `max_position_embeddings`; a prompt plus `gen_length` beyond it is
    refused (RoPE positions past it were never trained). None skips that check.
    """
    request.validate()
    if max_positions is not None:
        needed = len(request.prompts[0]) + request.gen_length
        if needed > max_positions:
            raise ModelInputError(
                "gen_length", f"prompt ({len(request.prompts[0])}) + gen_length ({request.gen_length}) = {needed} "
                              f"positions exceed the backbone's max_position_embeddings ({max_positions})")
    device = torch.device(device)
    branches = [list(p) for p in request.prompts]
    if len(branches) == 2 and request.cfg_scale == 1.0:
        # §3.2: CFG is active only when cfg_scale != 1, and then u + 1 (c - u) = c: skip the uncond row.
        branches = branches[:1]
    prompt_length = len(branches[0])
    block_length = request.block_length
    steps = effective_steps(request.steps, request.gen_length, request.minimal_topk)
    num_blocks = block_count(prompt_length, request.gen_length, block_length)
    total = num_blocks * block_length

    x = torch.full((len(branches), total), request.mask_id, dtype=torch.long, device=device)
    positions = torch.zeros((len(branches), total), dtype=torch.long, device=device)
    pads = []
    for row, ids in enumerate(branches):
        pad = prompt_length - len(ids)
        pads.append(pad)
        x[row, pad:prompt_length] = torch.tensor(ids, dtype=torch.long, device=device)
        positions[row, pad:] = torch.arange(total - pad, device=device)
    unfilled = torch.zeros(total, dtype=torch.bool, device=device)
    unfilled[prompt_length:] = True
    confidence = torch.full((total,), sprint_ops.PROMPT_TOKEN_CONFIDENCE, dtype=torch.float32, device=device)

    generator = None
    if request.temperature > 0:
        generator = torch.Generator(device=device)
        if request.seed is None:
            generator.seed()
        else:
            generator.manual_seed(request.seed)

    sprint = request.sprint
    if sprint is not None and len(request.prompts) > SPRINT_MAX_BRANCHES:
        log.info("SPRINT is not supported with 3-way CFG; running the baseline loop")
        sprint = None
    elif sprint is None and request.prefix_cache and len(request.prompts) <= SPRINT_MAX_BRANCHES:
        sprint = EXACT_PREFIX_CACHE

    stop_ids = frozenset({request.eos_id, *request.stop_ids})
    first_block = prompt_length // block_length  # §3.1 step 4: blocks the prompt fills are skipped
    return RequestState(
        request=request,
        x=x,
        positions=positions,
        pads=pads,
        unfilled=unfilled,
        confidence=confidence,
        prompt_length=prompt_length,
        steps=steps,
        schedule=transfer_schedule(block_length, steps),
        num_blocks=num_blocks,
        first_block=first_block,
        generator=generator,
        sprint=sprint,
        stop_ids=stop_ids,
        block=first_block,
    )

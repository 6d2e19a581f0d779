"""What every training stage shares: its folder, resumable state, time budget, seeded draws and report.

A stage's folder is `work_dir/<stage>/`: `state.pt` (weights, optimiser, step, elapsed seconds) is written
every `save_every_s` and at the end; `report.json` with `"done": true` marks a finished stage, which is then
skipped. Data for step k come from `rng(k)` (a generator seeded by (seed, k)), so a resumed run draws the same
batches as an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

SAVE_EVERY_S = 60.0


class Stage:
    def __init__(self, work_dir: str | Path, name: str, seed: int, *, save_every_s: float = SAVE_EVERY_S):
        self.name = name
        self.seed = seed
        self.dir = Path(work_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save_every_s = save_every_s
        self._started = time.monotonic()
        self._elapsed_before = 0.0
        self._last_save = self._started

    # ---- finished stages ------------------------------------------------------------------------------
    @property
    def report_path(self) -> Path:
        return self.dir / "report.json"

    def finished(self) -> dict | None:
        if self.report_path.is_file():
            report = json.loads(self.report_path.read_text())
            if report.get("done"):
                return report
        return None

    def finish(self, report: dict) -> dict:
        report = {"stage": self.name, "seed": self.seed, "done": True,
                  "wall_s": round(self.elapsed, 1), **report}
        self.report_path.write_text(json.dumps(report, indent=2) + "\n")
        log(self.name, f"done in {report['wall_s']:.0f} s: " + json.dumps({k: v for k, v in report.items()
                                                                          if k not in ("stage", "done")}))
        return report

    # ---- resumable state --------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def load(self) -> dict | None:
        if not self.state_path.is_file():
            return None
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        self._elapsed_before = float(state.get("elapsed", 0.0))
        log(self.name, f"resuming at step {state.get('step')} ({self._elapsed_before:.0f} s already spent)")
        return state

    def save(self, state: dict) -> None:
        state = {**state, "elapsed": self.elapsed}
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)  # atomic: a kill mid-save leaves the previous state
        self._last_save = time.monotonic()

    def write_seeded(self, state: dict, *, elapsed_s: float) -> None:
        """Write `state` as this stage's, `elapsed_s` seconds of training already spent (warm_start)."""
        self._elapsed_before, self._started = float(elapsed_s), time.monotonic()
        self.save(state)

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.save_every_s

    @property
    def elapsed(self) -> float:
        """Seconds spent in this stage over all runs (what the report records as its wall time)."""
        return self._elapsed_before + time.monotonic() - self._started

    # ---- seeded draws --------------------------------------------------------------------------------
    def rng(self, step: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, stream])

    def torch_generator(self, step: int, stream: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step) * 7919 + stream)


def optimise(optimiser: torch.optim.Optimizer, loss: torch.Tensor, params) -> None:
    """One optimiser step on `loss`, the gradient norm of `params` clipped to 1 (every image stage's recipe)."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimiser.step()


class Losses:
    """A stage's loss record: its first loss (kept in its state across resumes) and the mean of the losses since
    the last log line, logged every `log_every` steps."""

    def __init__(self, stage: str, log_every: int, first: float | None = None):
        self.stage, self.log_every, self.first = stage, log_every, first
        self.recent: list[float] = []

    def add(self, step: int, loss: float, elapsed: float, detail: str = "") -> None:
        self.first = loss if self.first is None else self.first
        self.recent.append(loss)
        if step % self.log_every == 0:
            log(self.stage, f"step {step} loss {np.mean(self.recent):.4f}{detail} ({elapsed:.0f} s)")
            self.recent = []

    @property
    def last(self) -> float | None:
        """The mean since the last log line (None right after one), as the reports record it."""
        return float(np.mean(self.recent)) if self.recent else None


def log(stage: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {message}", flush=True)


def lr_at(base: float, step: int, fraction: float, *, warmup: int = 50, floor: float = 0.05) -> float:
    """Linear warm-up, then linear decay over the stage's budget (`fraction` of it spent) to `floor`·base."""
    return base * min(1.0, (step + 1) / warmup) * max(floor, 1.0 - fraction)


def budget_fraction(stage: Stage, step: int, *, minutes: float | None, steps: int | None) -> float:
    """How much of the budget (time, steps, or whichever runs out first) is spent, in [0, 1]."""
    parts = []
    if minutes is not None:
        parts.append(stage.elapsed / (60.0 * minutes))
    if steps is not None:
        parts.append(step / steps)
    return min(1.0, max(parts)) if parts else 0.0

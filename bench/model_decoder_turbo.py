"""Turbo (distilled, 8 steps, CFG-free) vs normal (50-step Euler with CFG against zero features) decoding of
the same image tokens (docs/model.md §5.4), on the tiny checkpoint's decoders (synthetic weights, CPU, fp32).

Baseline: the normal decoder at its default 50 steps (49 DiT calls on a batch of 2). Candidate: the turbo
decoder at its default 8 steps (8 calls on a batch of 1). Both decode one 4x4 grid to 128x128 pixels
through the same SigVQ embedder and VAE; medians over interleaved runs.

    .venv/bin/python bench/model_decoder_turbo.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from model_common import interleaved_medians, one_thread, tiny_checkpoint

GRID = 4  # 4x4 tokens -> 128x128 pixels with resolution_multiplier 2
REPEATS = 2


def main() -> None:
    from workers.model.pipeline import Pipeline

    one_thread()

    with tempfile.TemporaryDirectory(prefix="llada-bench-") as tmp:
        pipe = Pipeline.from_pretrained(tiny_checkpoint(Path(tmp) / "ckpt"), device="cpu")
    codebook = pipe.turbo_decoder.sigvq.codebook_size
    codes = [random.Random(0).randrange(codebook) for _ in range(GRID * GRID)]
    calls = {"normal": 0, "turbo": 0}
    for mode, decoder in (("normal", pipe.decoder), ("turbo", pipe.turbo_decoder)):
        decoder.transformer.register_forward_pre_hook(lambda *_, m=mode: calls.__setitem__(m, calls[m] + 1))

    medians = interleaved_medians({
        "normal": lambda: pipe.decoder.decode(codes, GRID, GRID, seed=0),
        "turbo": lambda: pipe.turbo_decoder.decode(codes, GRID, GRID, seed=0),
    }, REPEATS)
    size = GRID * 16 * 2
    for mode in ("normal", "turbo"):
        print(f"{mode:>6}: {medians[mode]:.2f} s per {size}x{size} image, {calls[mode] // REPEATS} DiT calls")
    print(f"turbo is {medians['normal'] / medians['turbo']:.1f}x faster than normal (baseline: normal, 50 steps)")


if __name__ == "__main__":
    main()

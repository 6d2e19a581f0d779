"""A resident decoder vs loading the decoder for every call, as the reference `decode_vq_tokens` does
(docs/model.md §5; ARCHITECTURE §4: weights load once per actor, never per request).

Baseline: `load_decoder(path, mode="turbo")` (SigVQ + DiT + VAE, strict, from a warm page cache — the
baseline's best case) followed by one decode, per request. Candidate: the same decode on a decoder loaded
once. Tiny checkpoint, 8x8 grid -> 256x256, turbo 8 steps, CPU fp32; medians over interleaved runs. The ratio
grows with the weights' size against the decode's compute: the official DiT is 12 GB.

    .venv/bin/python bench/model_decoder_resident.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from model_common import interleaved_medians, one_thread, tiny_checkpoint

GRID = 8
REPEATS = 5


def main() -> None:
    from workers.model.decoder import load_decoder

    one_thread()

    with tempfile.TemporaryDirectory(prefix="llada-bench-") as tmp:
        folder = tiny_checkpoint(Path(tmp) / "ckpt")
        resident = load_decoder(folder, mode="turbo")
        codes = [random.Random(0).randrange(resident.sigvq.codebook_size) for _ in range(GRID * GRID)]
        load_seconds = []

        def load_per_call():
            started = time.perf_counter()
            decoder = load_decoder(folder, mode="turbo")
            load_seconds.append(time.perf_counter() - started)
            return decoder.decode(codes, GRID, GRID, seed=0)

        medians = interleaved_medians({
            "load per call": load_per_call,
            "resident": lambda: resident.decode(codes, GRID, GRID, seed=0),
        }, REPEATS)
    load = sorted(load_seconds)[len(load_seconds) // 2]
    print(f"load per call: {medians['load per call']:.3f} s per request (of which loading ~{load:.3f} s)")
    print(f"     resident: {medians['resident']:.3f} s per request")
    print(f"resident is {medians['load per call'] / medians['resident']:.2f}x faster per request "
          "(baseline: load per call)")


if __name__ == "__main__":
    main()

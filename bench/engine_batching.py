"""Step-level batching: N concurrent understanding jobs through one engine replica vs the same jobs one at a
time through the same replica. Prints the throughput ratio, how many requests each forward carried and the
denoiser's mean step time at batch 1 (one at a time) and at batch N (concurrent), as the actor measured it.

    python bench/engine_batching.py [--checkpoint PATH] [--jobs 8]
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

from engine_common import Clock, arguments, checkpoint, p50, start_engine
from PIL import Image

# Small but several blocks long, so the batched steps dominate (tiny checkpoint, CPU); once without SPRINT
# (the exact prefix cache that every task request uses: the baseline's tokens) and once with SPRINT (pruned
# prefix cache, adaptive unmasking).
BASE = dict(gen_length=96, steps=8, block_length=16, threshold=1.0)
CONFIGS = {"no SPRINT": dict(BASE, sprint=None), "SPRINT": dict(BASE, sprint=True)}


def image_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (128, 128), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def step_ms(before: dict, after: dict, size: int) -> float:
    """Mean milliseconds of the denoiser's forwards of `size` requests between two stats readings."""
    count = after["batch_sizes"].get(size, 0) - before["batch_sizes"].get(size, 0)
    seconds = after["step_seconds"].get(size, 0.0) - before["step_seconds"].get(size, 0.0)
    return 1000 * seconds / max(count, 1)


def measure(engine, source, questions, name, options) -> None:
    import ray

    def job(question):
        with Clock() as clock:
            engine.understand_image(source, question, **options)
        return clock.seconds

    n = len(questions)
    job(questions[0])  # warm-up: first calls pay one-off costs in every actor
    denoiser = engine.replicas[0].denoiser
    start = ray.get(denoiser.stats.remote())
    with Clock() as one_at_a_time:
        alone = [job(q) for q in questions]
    before = ray.get(denoiser.stats.remote())
    with Clock() as concurrent, ThreadPoolExecutor(n) as pool:
        together = list(pool.map(job, questions))
    after = ray.get(denoiser.stats.remote())

    forwards = after["forwards"] - before["forwards"]
    request_steps = after["request_steps"] - before["request_steps"]
    print(f"[{name}] {n} understanding jobs (gen_length {BASE['gen_length']}, block {BASE['block_length']}, "
          f"{BASE['steps']} steps/block), tiny checkpoint, CPU")
    print(f"  one at a time : {one_at_a_time.seconds:6.2f} s  ({n / one_at_a_time.seconds:5.2f} jobs/s, "
          f"p50 latency {p50(alone):.2f} s)")
    print(f"  concurrent    : {concurrent.seconds:6.2f} s  ({n / concurrent.seconds:5.2f} jobs/s, "
          f"p50 latency {p50(together):.2f} s)")
    print(f"  denoiser forwards {forwards}, requests per forward {request_steps / max(forwards, 1):.2f}")
    print(f"  denoiser step: {step_ms(start, before, 1):.1f} ms at batch 1 (one at a time), "
          f"{step_ms(before, after, n):.1f} ms at batch {n} (concurrent); torch threads {after['torch_threads']}")
    print(f"  throughput ratio (batched / one at a time): {one_at_a_time.seconds / concurrent.seconds:.2f}x")


def main() -> None:
    args = arguments(__doc__)
    engine = start_engine(checkpoint(args.checkpoint), args.placement, max_batch=args.jobs, max_inflight=args.jobs)
    source = image_bytes()
    questions = [f"Question {i}: what is in this picture?" for i in range(args.jobs)]

    for name, options in CONFIGS.items():
        measure(engine, source, questions, name, options)
    engine.close()


if __name__ == "__main__":
    main()

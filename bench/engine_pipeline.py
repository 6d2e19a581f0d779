"""Three-stage pipelining: a stream of N text-to-image jobs through one engine replica (tokenizer,
denoiser and decoder actors; jobs in flight together) vs the same work sequentially in one process (the
in-process Pipeline). Prints the throughput ratio, per-stage seconds, p50 latency and p50 time to the first
progress event under that load.

    python bench/engine_pipeline.py [--checkpoint PATH] [--jobs 8] [--placement tokenizer=0,denoiser=1,decoder=0]
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from engine_common import Clock, arguments, checkpoint, p50, start_engine

# Tiny checkpoint, 256 px (an 8x8 backbone grid), turbo decoder with 4 steps, denoise with 8 steps a block.
# The slower stage bounds the pipelined throughput; the per-stage means printed below say which
# (on a 2-core CPU decode weighs ~4x denoise, so overlap can gain at most ~1.25x there).
T2I = dict(width=256, height=256, steps=8, block_length=16, decoder="turbo", decoder_steps=4)
STAGES = ("tokenize", "denoise", "decode")


def stage_means(results) -> str:
    return ", ".join(f"{s} {sum(r.timings.get(s, 0.0) for r in results) / len(results):.3f}" for s in STAGES)


def latencies(runs) -> str:
    return (f"p50 latency {p50([t for _, t, _ in runs]):.3f} s, p50 first progress event "
            f"{p50([f['any'] for _, _, f in runs]):.3f} s, "
            f"first denoise step {p50([f['denoise'] for _, _, f in runs]):.3f} s")


def main() -> None:
    args = arguments(__doc__)
    path = checkpoint(args.checkpoint)
    prompts = [f"picture {i}: a small red boat on a lake" for i in range(args.jobs)]

    import torch

    from workers.model import Pipeline

    # Ray runs each actor with one intra-op thread (OMP_NUM_THREADS=1); the baseline gets the same, so the
    # ratio measures the stages overlapping, not thread over-subscription on a small shared CPU.
    torch.set_num_threads(1)
    pipe = Pipeline.from_pretrained(path, device="cpu", decoders=("turbo",))
    pipe.generate_image(prompts[0], **T2I, seed=0)  # warm-up
    with Clock() as sequential:
        baseline = [pipe.generate_image(p, **T2I, seed=i) for i, p in enumerate(prompts)]

    engine = start_engine(path, args.placement, max_batch=args.jobs, max_inflight=args.jobs)
    engine.generate_image(prompts[0], **T2I, seed=0)  # warm-up

    def job(i):
        submitted = time.perf_counter()
        first: dict[str, float] = {}
        lock = threading.Lock()

        def progress(stage, step, total):
            with lock:
                first.setdefault("any", time.perf_counter() - submitted)
                if stage == "denoise":
                    first.setdefault("denoise", time.perf_counter() - submitted)

        result = engine.generate_image(prompts[i], **T2I, seed=i, progress=progress)
        return result, time.perf_counter() - submitted, first

    with Clock() as alone_clock:
        alone = [job(i) for i in range(args.jobs)]
    with Clock() as streamed, ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(job, range(args.jobs)))
    results = [r for r, _, _ in runs]
    assert [r.codes for r in results] == [r.codes for r in baseline], "engine and Pipeline disagree"

    n = args.jobs
    print(f"CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (stages overlap only on idle cores)")
    print(f"{n} text-to-image jobs, {T2I['width']}x{T2I['height']} px, {T2I['steps']} steps, turbo decoder "
          f"{T2I['decoder_steps']} steps; tiny checkpoint, CPU; placement {args.placement}")
    print(f"  Pipeline, one process, sequential : {sequential.seconds:6.2f} s ({n / sequential.seconds:5.2f} img/s); "
          f"mean stage s: {stage_means(baseline)}")
    print(f"  engine, one job at a time         : {alone_clock.seconds:6.2f} s ({n / alone_clock.seconds:5.2f} img/s); "
          f"{latencies(alone)}")
    print(f"  engine, {n} in flight              : {streamed.seconds:6.2f} s ({n / streamed.seconds:5.2f} img/s); "
          f"{latencies(runs)}")
    print(f"    mean stage s in flight (incl. waiting for the actor): {stage_means(results)}")
    print(f"throughput ratio (engine pipelined / Pipeline sequential): {sequential.seconds / streamed.seconds:.2f}x")
    engine.close()


if __name__ == "__main__":
    main()

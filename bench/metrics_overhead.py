"""What the worker's step metrics and traces cost: the same understanding generation with a progress callback
that only counts (the baseline) and with one that also feeds the step clock (`workers.metrics.StepClock`, a
histogram observation per step), as the worker's ProgressReporter does; then the spans tracing adds per job (a
run, its stages, upload and finish, with the SDK's batch processor), next to that generation's time. Tracing adds
nothing inside the step loop.

The tiny random checkpoint (CPU, fp32, one thread), 128 generated tokens in blocks of 8 with 8 steps each
(128 steps), the two alternating so that machine noise hits both alike; median seconds per run and the ratio.

    .venv/bin/python bench/metrics_overhead.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from model_common import interleaved_medians, one_thread, tiny_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs of each, alternating")
    args = parser.parse_args(argv)
    one_thread()
    from PIL import Image

    from workers.metrics import StepClock
    from workers.model import Pipeline

    with tempfile.TemporaryDirectory() as folder:
        pipe = Pipeline.from_pretrained(str(tiny_checkpoint(Path(folder))), device="cpu")
        image = Image.new("RGB", (64, 64), (200, 30, 30))
        options = dict(gen_length=128, steps=8, block_length=8, threshold=1.0)
        calls = [0]

        def counting(stage, step, total):
            calls[0] += 1

        def measured():
            clock = StepClock("UNDERSTAND")

            def progress(stage, step, total):
                calls[0] += 1
                clock.report(stage, step)
            return progress

        runs = {"baseline": lambda: pipe.understand_image(image, "What is it?", progress=counting, **options),
                "step metrics": lambda: pipe.understand_image(image, "What is it?", progress=measured(), **options)}
        medians = interleaved_medians(runs, args.repeats)
    spans_s = job_spans_seconds()
    steps = calls[0] // (2 * args.repeats)
    base, measured_s = medians["baseline"], medians["step metrics"]
    print(f"understanding on the tiny checkpoint, ~{steps} progress reports a run, median of {args.repeats}")
    print(f"baseline      {base * 1e3:8.2f} ms")
    print(f"step metrics  {measured_s * 1e3:8.2f} ms   ratio {measured_s / base:.4f} "
          f"({(measured_s - base) / max(steps, 1) * 1e6:+.1f} µs a step)")
    print(f"tracing       {spans_s * 1e3:8.2f} ms of spans a job, {spans_s / base:.4f} of this generation")
    return 0


def job_spans_seconds(jobs: int = 500) -> float:
    """Seconds per job of the worker's spans (llada.run_job, three stages, upload, finish) with tracing on."""
    import time

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared import tracing

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    tracing.install(provider)
    try:
        tracer, started = tracing.tracer(), time.perf_counter()
        for _ in range(jobs):
            with tracer.start_as_current_span("llada.run_job"):
                tracing.trace_stages(time.time_ns(), {"tokenize": 0.01, "denoise": 0.02, "decode": 0.03})
                with tracer.start_as_current_span("llada.upload"):
                    pass
                with tracer.start_as_current_span("llada.finish"):
                    pass
        return (time.perf_counter() - started) / jobs
    finally:
        tracing.install(None)
        provider.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())

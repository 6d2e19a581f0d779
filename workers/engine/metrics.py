"""The engine's batching as Prometheus families, for the worker's endpoint: the actors open no ports of their own;
at each scrape the worker asks each replica's denoiser for its counters (a Ray call, bounded by a short timeout;
a replica that does not answer in time is left out of that scrape)."""

from __future__ import annotations

import logging

import ray
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("llada.worker")

STATS_TIMEOUT_S = 2.0


class EngineCollector:
    """Reports the engine it is given (`engine`, a workers.engine.executor.EngineExecutor), none while None."""

    def __init__(self, engine=None):
        self.engine = engine

    def collect(self):
        forwards = CounterMetricFamily("llada_engine_denoise_forwards", "Batched denoising steps the denoiser ran, "
                                       "by replica and the batch size they ran with", labels=["replica", "batch_size"])
        seconds = CounterMetricFamily("llada_engine_denoise_step_seconds", "Seconds of those steps, by replica and "
                                      "batch size (over forwards: the time a step took at that size)",
                                      labels=["replica", "batch_size"])
        slots = GaugeMetricFamily("llada_engine_batch_requests", "Denoising requests in the batcher now: active "
                                  "(in the batch slots) or pending, and its max_batch", labels=["replica", "state"])
        engine = self.engine
        for index, replica in enumerate(engine.replicas if engine is not None else ()):
            try:
                stats = ray.get(replica.denoiser.stats.remote(), timeout=STATS_TIMEOUT_S)
            except Exception as err:  # restarting, or gone: this scrape goes without it
                log.warning("engine stats unavailable", extra={"replica": index, "error": type(err).__name__})
                continue
            for size, count in sorted(stats["batch_sizes"].items()):
                forwards.add_metric([str(index), str(size)], count)
                seconds.add_metric([str(index), str(size)], stats["step_seconds"].get(size, 0.0))
            for state in ("active", "pending", "max_batch"):
                slots.add_metric([str(index), state], stats[state])
        yield forwards
        yield seconds
        yield slots

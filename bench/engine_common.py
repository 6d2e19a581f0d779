"""Helpers for the engine benchmarks: a tiny checkpoint, a local Ray instance, an engine, timing summaries."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/engine_x.py` from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", help="checkpoint folder (default: a tiny one made in a temporary folder)")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--placement", default="tokenizer=0,denoiser=0,decoder=0",
                        help="stage=slot,... (slots are devices of the replica)")
    return parser.parse_args()


def checkpoint(path: str | None) -> str:
    if path:
        return path
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="llada-bench-")) / "tiny"
    make_tiny_checkpoint(folder, seed=0)
    return str(folder)


def start_engine(model_path: str, placement: str, **config):
    """A local Ray instance (CPU devices as custom resources) and one engine replica, loaded and ready."""
    import ray

    from workers.engine import EngineConfig, EngineExecutor
    from workers.engine.placement import local_init_resources

    slots = dict((stage, int(slot)) for stage, slot in (item.split("=") for item in placement.split(",")))
    engine_config = EngineConfig(model_path=model_path, placement=slots, device="cpu", **config)
    ray.init(include_dashboard=False, resources=local_init_resources(engine_config), log_to_driver=False,
             logging_level="WARNING")
    engine = EngineExecutor(engine_config)
    engine.describe(timeout_s=300)
    return engine


def p50(values) -> float:
    return statistics.median(values)


class Clock:
    """Wall time of a block: `with Clock() as c: ...; c.seconds`."""

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started

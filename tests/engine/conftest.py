"""Engine test fixtures: one tiny checkpoint and one local Ray instance per test session.

Ray starts once (it costs seconds) with two CPU "devices" per replica as custom resources, so a two-device
placement is exercised without GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

# Tokenizer and decoder share device slot 0, the denoiser has slot 1 to itself.
TWO_DEVICE_PLACEMENT = {"tokenizer": 0, "denoiser": 1, "decoder": 0}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-llada2-uni")
    make_tiny_checkpoint(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from workers.engine.placement import CPU_DEVICE_RESOURCE

    ray.init(num_cpus=2, include_dashboard=False, resources={CPU_DEVICE_RESOURCE: 2}, logging_level="WARNING",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def engine(tiny_ckpt, ray_session):
    from workers.engine import EngineConfig, EngineExecutor

    config = EngineConfig(model_path=str(tiny_ckpt), placement=TWO_DEVICE_PLACEMENT, max_batch=8, max_inflight=8,
                          device="cpu", poll_interval_s=0.02)
    executor = EngineExecutor(config)
    executor.describe(timeout_s=120)  # every actor has loaded its weights
    yield executor
    executor.close()

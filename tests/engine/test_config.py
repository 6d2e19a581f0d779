"""Engine layout from the `LLADA_ENGINE_*` settings, and refusals that name the setting."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from workers.engine.config import DEFAULT_PLACEMENT, EngineConfig


def test_layout_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLADA_ENGINE_PLACEMENT", '{"tokenizer": 0, "denoiser": 1, "decoder": 0}')
    monkeypatch.setenv("LLADA_ENGINE_REPLICAS", "2")
    monkeypatch.setenv("LLADA_ENGINE_MAX_BATCH", "4")
    monkeypatch.setenv("LLADA_MODEL_PATH", str(tmp_path))
    config = EngineConfig.from_settings(Settings(data_dir=tmp_path))
    assert config.placement == {"tokenizer": 0, "denoiser": 1, "decoder": 0}
    assert (config.replicas, config.max_batch, config.devices_per_replica) == (2, 4, 2)
    assert config.stages_on(0) == ["tokenizer", "decoder"] and config.model_path == str(tmp_path)


def test_defaults_put_every_stage_on_one_device(tmp_path):
    config = EngineConfig.from_settings(Settings(data_dir=tmp_path))
    assert config.placement == DEFAULT_PLACEMENT and config.devices_per_replica == 1 and config.device == "auto"


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(placement={"tokenizer": 0, "denoiser": 0}), "engine_placement"),
        (dict(placement={"tokenizer": 0, "denoiser": 0, "decoder": 0, "vae": 1}), "engine_placement"),
        (dict(placement={"tokenizer": 0, "denoiser": 2, "decoder": 0}), "engine_placement"),
        (dict(placement={"tokenizer": -1, "denoiser": 0, "decoder": 0}), "engine_placement.tokenizer"),
        (dict(replicas=0), "engine_replicas"),
        (dict(max_batch=0), "engine_max_batch"),
        (dict(device="tpu"), "engine_device"),
    ],
)
def test_a_bad_layout_is_refused_naming_the_setting(kwargs, named):
    with pytest.raises(ValueError, match=f"^{named}"):
        EngineConfig(model_path="/models/x", **kwargs)


def test_a_local_ray_instance_gets_a_cpu_device_per_slot_of_every_replica():
    from workers.engine.placement import CPU_DEVICE_RESOURCE, local_init_resources

    config = EngineConfig(model_path="/models/x", placement={"tokenizer": 0, "denoiser": 1, "decoder": 0}, replicas=3)
    assert local_init_resources(config) == {CPU_DEVICE_RESOURCE: 6.0}

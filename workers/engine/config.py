"""`EngineConfig`: how the engine lays out its actors, read from `Settings` (the `LLADA_ENGINE_*` fields)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

STAGES = ("tokenizer", "denoiser", "decoder")
DEVICE_KINDS = ("auto", "gpu", "cpu")
# Everything on the replica's one device: the right layout for one GPU, and for a CPU machine.
DEFAULT_PLACEMENT = {"tokenizer": 0, "denoiser": 0, "decoder": 0}


@dataclass(frozen=True)
class EngineConfig:
    """Engine layout and limits.

    `placement` maps each stage to a device slot *of its replica* (0, 1, …): {"tokenizer": 0, "denoiser": 1,
    "decoder": 0} gives every replica two devices, the denoiser alone on its second one. Each replica
    reserves its own devices (one Ray placement-group bundle per slot), so several replicas share a node
    when it has enough devices. `device` chooses GPUs (`num_gpus`) or CPU "devices" (a Ray custom
    resource, `CPU_DEVICE_RESOURCE`); "auto" uses GPUs when the cluster has any.
    """

    model_path: str
    placement: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PLACEMENT))
    replicas: int = 1
    max_batch: int = 8  # requests advanced by one denoiser forward
    max_inflight: int = 8  # jobs one replica holds at once (all stages together)
    device: str = "auto"
    ray_address: str | None = None  # None: start a local Ray instance
    poll_interval_s: float = 0.05  # how often a caller collects progress and checks cancellation
    # -1: restart a crashed actor every time. A job that keeps killing it is bounded by the worker's
    # max_attempts; an actor whose constructor fails (bad weights) is not restarted by Ray at all.
    actor_max_restarts: int = -1

    def __post_init__(self) -> None:
        missing = [s for s in STAGES if s not in self.placement]
        unknown = sorted(set(self.placement) - set(STAGES))
        if missing or unknown:
            raise ValueError(
                f"engine_placement: needs exactly the stages {STAGES}; missing {missing}, unknown {unknown}"
            )
        for stage, slot in self.placement.items():
            if isinstance(slot, bool) or not isinstance(slot, int) or slot < 0:
                raise ValueError(f"engine_placement.{stage}: device slot must be an integer >= 0, got {slot!r}")
        slots = sorted(set(self.placement.values()))
        if slots != list(range(len(slots))):
            raise ValueError(f"engine_placement: device slots must be 0..n-1 without gaps, got {slots}")
        for name in ("replicas", "max_batch", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine_{name}: must be >= 1, got {getattr(self, name)}")
        if self.device not in DEVICE_KINDS:
            raise ValueError(f"engine_device: must be one of {DEVICE_KINDS}, got {self.device!r}")
        if self.poll_interval_s <= 0:
            raise ValueError(f"engine_poll_interval_s: must be > 0, got {self.poll_interval_s}")

    @property
    def devices_per_replica(self) -> int:
        return len(set(self.placement.values()))

    def stages_on(self, slot: int) -> list[str]:
        return [s for s in STAGES if self.placement[s] == slot]

    @classmethod
    def from_settings(cls, settings) -> "EngineConfig":
        def get(name, default):
            value = getattr(settings, name, None)
            return default if value is None else value

        return cls(
            model_path=str(settings.model_path),
            placement=dict(get("engine_placement", DEFAULT_PLACEMENT)),
            replicas=get("engine_replicas", 1),
            max_batch=get("engine_max_batch", 8),
            max_inflight=get("engine_max_inflight", 8),
            device=get("engine_device", "auto"),
            ray_address=get("engine_ray_address", None),
        )

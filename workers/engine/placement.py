"""Where each replica's actors run: one Ray placement group per replica, one bundle per device slot.

A bundle reserves one whole device — a GPU (`"GPU": 1`) or, on a machine without GPUs, one unit of the
custom resource `CPU_DEVICE_RESOURCE` that a local Ray instance is started with — and the stages placed
on that slot share it (`num_gpus` / the custom resource split evenly between them). A replica therefore
never shares its devices with another, and a node holds as many replicas as it has devices for.
"""

from __future__ import annotations

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from workers.engine.config import EngineConfig
from workers.engine.errors import PlacementError

# A Ray custom resource standing for one "device" on a CPU-only cluster (ARCHITECTURE §4: CPU with Ray
# custom resources when there are no GPUs); a local instance gets one unit per slot of every replica.
CPU_DEVICE_RESOURCE = "llada_cpu_device"
PLACEMENT_TIMEOUT_S = 60.0
# "PACK": a replica's stages prefer one node (they pass tensors through the object store) but may span
# nodes when no single node has all its devices (the KubeRay route past one node per replica).
PLACEMENT_STRATEGY = "PACK"


def device_kind(config: EngineConfig) -> str:
    """"gpu" or "cpu": what the cluster offers, unless the config forces one."""
    if config.device != "auto":
        return config.device
    return "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def local_init_resources(config: EngineConfig) -> dict[str, float]:
    """Custom resources for a local Ray instance on a CPU machine: a device unit per slot per replica."""
    return {CPU_DEVICE_RESOURCE: float(config.devices_per_replica * config.replicas)}


def device_resource(kind: str) -> str:
    return "GPU" if kind == "gpu" else CPU_DEVICE_RESOURCE


def reserve_replica(config: EngineConfig, kind: str, index: int,
                    timeout_s: float = PLACEMENT_TIMEOUT_S) -> PlacementGroup:
    """Reserve one replica's devices; a clear error when the cluster cannot hold them within `timeout_s`
    (devices held by other replicas may free up meanwhile)."""
    bundles = [{device_resource(kind): 1.0} for _ in range(config.devices_per_replica)]
    group = placement_group(bundles, strategy=PLACEMENT_STRATEGY, name=f"llada-replica-{index}-{id(config):x}")
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        available = ray.cluster_resources().get(device_resource(kind), 0)
        raise PlacementError(
            f"engine_placement: replica {index} needs {config.devices_per_replica} x {device_resource(kind)} "
            f"(engine_placement {dict(config.placement)}); the cluster has {available} in all"
        ) from None
    return group


def actor_options(config: EngineConfig, kind: str, group: PlacementGroup, stage: str) -> dict:
    """Ray actor options that put `stage` on its device slot of the replica's placement group."""
    slot = config.placement[stage]
    share = 1.0 / len(config.stages_on(slot))
    options = {
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=slot
        ),
        # Actors hold a device, not a CPU core: with num_cpus=0 a small CPU node still fits every actor.
        "num_cpus": 0,
        # A crashed actor restarts and reloads its weights; its in-flight calls fail (no silent re-run:
        # the job is retried under the worker's contract instead).
        "max_restarts": config.actor_max_restarts,
        "max_task_retries": 0,
        # Several jobs in flight per actor: progress polls and cancels must get through during a long call.
        "max_concurrency": max(16, 4 * config.max_inflight),
    }
    if kind == "gpu":
        options["num_gpus"] = share
    else:
        options["resources"] = {CPU_DEVICE_RESOURCE: share}
    return options


def torch_device(kind: str) -> str:
    """The device an actor uses: Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU, so it is always cuda:0."""
    return "cuda" if kind == "gpu" else "cpu"

"""What an actor reports about itself: stage, device, the Ray resources it holds, where it runs."""

from __future__ import annotations

import os
import re

import ray
import torch

# Ray names a placement-group resource "<name>_group_<bundle index>_<group id>" on the bundle it came from.
_BUNDLE_RESOURCE = re.compile(r"^(?P<name>.+)_group_(?P<bundle>\d+)_(?P<group>[0-9a-f]+)$")


def granted_bundles() -> dict[str, list[int]]:
    """Resource name → the placement-group bundle indices Ray granted it from. The public
    `get_assigned_resources` folds the bundle index away; the core worker's raw grant keeps it."""
    raw = ray._private.worker.global_worker.core_worker.resource_ids()
    bundles: dict[str, set[int]] = {}
    for name in raw:
        match = _BUNDLE_RESOURCE.match(name)
        if match:
            bundles.setdefault(match["name"], set()).add(int(match["bundle"]))
    return {name: sorted(indices) for name, indices in bundles.items()}


def describe(stage: str, device: torch.device | str, **extra) -> dict:
    context = ray.get_runtime_context()
    group = ray.util.get_current_placement_group()
    return {
        "stage": stage,
        "device": str(device),
        # Ray's own record of what it granted this actor (placement-group resources carry the bundle index).
        "resources": dict(context.get_assigned_resources()),
        "bundles": granted_bundles(),
        "accelerator_ids": {k: list(v) for k, v in context.get_accelerator_ids().items() if v},
        "placement_group": None if group is None else group.id.hex(),
        "node_id": context.get_node_id(),
        "pid": os.getpid(),
        "actor_id": context.get_actor_id(),
        "restarted": context.was_current_actor_reconstructed,
        **extra,
    }


def compute_dtype(device: torch.device | str, dtype: str | None) -> torch.dtype:
    """bf16 on accelerators, fp32 on CPU (the model runtime's own defaults), unless configured."""
    if dtype is not None:
        return getattr(torch, dtype)
    return torch.bfloat16 if torch.device(device).type != "cpu" else torch.float32

"""Strict, memory-mapped checkpoint loading shared by every model component.

A component builds its module on the meta device (no memory), then `load_strict` fills every parameter
and persistent buffer straight from the checkpoint files to the target device and dtype. Nothing is held
twice: each tensor is read from a memory-mapped file, cast once, and *assigned* into the module.

Strictness (docs/model.md "How to use this spec" 1): every tensor in the files is consumed, every
parameter/persistent buffer is filled and every shape matches; otherwise one `CheckpointError` names the
component and file(s) and lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

_SHOW = 8  # keys listed per category in an error; the rest are counted


class CheckpointError(RuntimeError):
    """A checkpoint file does not match the module it should fill."""


def _listing(title: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:_SHOW])
    more = f" … and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return f"\n  {title} ({len(keys)}): {shown}{more}"


def check_keys(
    component: str,
    where: str,
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected)
    misshaped = sorted(
        f"{k} file {list(found[k])} vs model {list(expected[k])}"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    )
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{component}: checkpoint {where} does not match the model"
            + _listing("missing", missing)
            + _listing("unexpected", unexpected)
            + _listing("mis-shaped", misshaped)
        )


def safetensors_key_map(folder: Path, index_name: str = "model.safetensors.index.json") -> dict[str, Path]:
    """Map every tensor name to its file: via the shard index when present, else every *.safetensors."""
    folder = Path(folder)
    index = folder / index_name
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {key: folder / name for key, name in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors file and no {index_name} in {folder}")
    keys: dict[str, Path] = {}
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                keys[key] = path
    return keys


class TensorSource:
    """Read-only, lazily opened view over named tensors in safetensors files (memory-mapped)."""

    def __init__(self, key_to_file: Mapping[str, Path], rename: Callable[[str], str | None] | None = None):
        # rename maps a file key to a module key; None drops a key that belongs to another component.
        self._files: dict[str, tuple[Path, str]] = {}
        for file_key, path in key_to_file.items():
            name = rename(file_key) if rename else file_key
            if name is not None:
                self._files[name] = (Path(path), file_key)
        self._stack = ExitStack()
        self._open: dict[tuple[Path, str], object] = {}

    @classmethod
    def from_folder(cls, folder: Path, rename: Callable[[str], str | None] | None = None) -> "TensorSource":
        return cls(safetensors_key_map(folder), rename)

    def keys(self) -> Iterable[str]:
        return self._files.keys()

    @property
    def where(self) -> str:
        paths = sorted({str(p) for p, _ in self._files.values()})
        return paths[0] if len(paths) == 1 else f"{Path(paths[0]).parent} ({len(paths)} files)"

    def _handle(self, path: Path, device: str):
        handle = self._open.get((path, device))
        if handle is None:
            handle = self._stack.enter_context(safe_open(path, framework="pt", device=device))
            self._open[(path, device)] = handle
        return handle

    def shape(self, name: str) -> tuple[int, ...]:
        path, file_key = self._files[name]
        return tuple(self._handle(path, "cpu").get_slice(file_key).get_shape())

    def get(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
        path, file_key = self._files[name]
        return self._handle(path, str(torch.device(device))).get_tensor(file_key)

    def close(self) -> None:
        self._stack.close()
        self._open.clear()

    def __enter__(self) -> "TensorSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameters and persistent buffers, as the checkpoint must contain them."""
    return {name: tuple(t.shape) for name, t in module.state_dict(keep_vars=True).items()}


def load_strict(
    module: nn.Module,
    source: TensorSource,
    *,
    component: str,
    device: torch.device | str,
    dtype: torch.dtype,
    keep_dtype: Callable[[str], bool] = lambda name: False,
) -> nn.Module:
    """Fill `module` (usually built on the meta device) from `source`, strictly.

    Floating tensors are cast to `dtype`, except those for which `keep_dtype(name)` is true, which keep
    the dtype the module declares (e.g. the router's fp32 `expert_bias`). Non-floating tensors are kept.
    """
    expected = expected_shapes(module)
    found = {name: source.shape(name) for name in source.keys()}
    check_keys(component, source.where, expected, found)
    declared = {name: t.dtype for name, t in module.state_dict(keep_vars=True).items()}
    device = torch.device(device)
    state: dict[str, torch.Tensor] = {}
    for name in expected:
        tensor = source.get(name, device)
        if tensor.is_floating_point():
            target = declared[name] if keep_dtype(name) else dtype
            tensor = tensor.to(dtype=target)
        state[name] = tensor
    module.load_state_dict(state, strict=True, assign=True)
    return module


def assert_materialised(module: nn.Module, component: str) -> None:
    """Fail if any parameter or buffer is still on the meta device (e.g. a forgotten computed buffer)."""
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{component}: tensors never filled (still on meta)" + _listing("meta", left))

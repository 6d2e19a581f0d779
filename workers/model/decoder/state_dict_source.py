"""A `weights.TensorSource`-compatible view over a torch state-dict file (`sigvq_embedding.pt`).

`weights.load_strict` reads only `keys()`, `shape()`, `get()` and `where` from its source, so the one
component shipped as a pickle-free torch state dict goes through the same strict loader as the safetensors
ones. The file is opened memory-mapped with `weights_only=True` (no code execution).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from workers.model.weights import CheckpointError


class StateDictSource:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"missing file {self.path}")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{self.path}: expected a state dict of tensors")
        self._state: dict[str, torch.Tensor] = state

    def keys(self) -> Iterable[str]:
        return self._state.keys()

    @property
    def where(self) -> str:
        return str(self.path)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def get(self, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
        return self._state[name].to(device)

    def close(self) -> None:
        self._state = {}

    def __enter__(self) -> "StateDictSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

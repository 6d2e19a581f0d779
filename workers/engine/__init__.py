"""Ray engine (ARCHITECTURE §1, §4): per replica a TokenizerActor, a DenoiserActor with step-level batching
across jobs and a DecoderActor, placed on the replica's devices and pipelined across jobs.

`EngineExecutor` offers the Pipeline's API; `engine_backed_executor(settings)` is the Celery worker's factory.
Imports are lazy so that `import workers.engine` does not start Ray or load torch.
"""

from __future__ import annotations

_EXPORTS = {
    "EngineExecutor": ("workers.engine.executor", "EngineExecutor"),
    "EngineConfig": ("workers.engine.config", "EngineConfig"),
    "EngineCrashed": ("workers.engine.errors", "EngineCrashed"),
    "engine_backed_executor": ("workers.engine.engine_backed", "engine_backed_executor"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workers.engine' has no attribute {name!r}")
    import importlib

    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(module), attr)

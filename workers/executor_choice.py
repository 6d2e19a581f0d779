"""Which executor a worker runs (`Settings.worker_executor`) and how many jobs it admits at once with it.

"engine" (default) sends the work to the Ray engine (`workers.engine.engine_backed`), "pipeline" runs the
in-process `workers.model.Pipeline` (`workers.executor.PipelineExecutor`, loaded once, kept resident), and
anything with the same `run` method can stand in for them ("module:factory"), e.g. the benchmark's no-compute
executor in `bench/`. This module sits above both executors; neither imports it.
"""

from __future__ import annotations

import importlib

from shared.settings import Settings
from workers.executor import Executor, PipelineExecutor

# Values of Settings.worker_executor besides "module:factory".
ENGINE_EXECUTOR = "engine"
PIPELINE_EXECUTOR = "pipeline"


def jobs_at_once(settings: Settings) -> int:
    """How many jobs one worker process runs at the same time with the configured executor.

    The engine pipelines jobs across its replicas (tokenize one while another denoises, several denoising
    in one batch): the worker admits exactly as many as it holds, replicas × max_inflight. The in-process
    Pipeline runs one at a time."""
    if settings.worker_executor == ENGINE_EXECUTOR:
        from workers.engine.config import EngineConfig  # plain dataclass: no Ray import

        engine = EngineConfig.from_settings(settings)
        return engine.replicas * engine.max_inflight
    return 1


def executor_from_settings(settings: Settings) -> Executor:
    """The executor `settings.worker_executor` names: the Ray engine, the in-process Pipeline on
    `settings.model_path`, or what a "module:factory" callable returns for the settings."""
    spec = settings.worker_executor
    if spec == ENGINE_EXECUTOR:
        from workers.engine.engine_backed import engine_backed_executor  # Ray is imported only when chosen

        return engine_backed_executor(settings)
    if spec == PIPELINE_EXECUTOR:
        return PipelineExecutor(settings.model_path, edit_crop_base=settings.edit_crop_base)
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)(settings)

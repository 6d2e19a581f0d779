"""The Celery worker's job runner over the engine: `LLADA_WORKER_EXECUTOR=workers.engine:engine_job_executor`.

The worker's `PipelineExecutor` already turns a job (kind, params, input bytes) into Pipeline calls and
their results into outputs; here the engine stands in for the Pipeline, loaded on first use.
"""

from __future__ import annotations

from workers.engine.config import EngineConfig
from workers.engine.executor import EngineExecutor
from workers.executor import REFERENCE_EDIT_CROP_BASE, PipelineExecutor


class EngineJobExecutor(PipelineExecutor):
    def __init__(self, config: EngineConfig, engine: EngineExecutor | None = None, *,
                 edit_crop_base: int = REFERENCE_EDIT_CROP_BASE):
        super().__init__(config.model_path, edit_crop_base=edit_crop_base)
        self.engine_config = config
        self._pipeline = engine  # None: started on first use

    def pipeline(self) -> EngineExecutor:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = EngineExecutor(self.engine_config)
            return self._pipeline


def engine_job_executor(settings) -> EngineJobExecutor:
    return EngineJobExecutor(EngineConfig.from_settings(settings), edit_crop_base=settings.edit_crop_base)

"""The Celery worker's job runner over the engine: `LLADA_WORKER_EXECUTOR=workers.engine:engine_job_executor`.

The worker's `PipelineExecutor` already turns a job (kind, params, input bytes) into Pipeline calls and
their results into outputs; here the engine stands in for the Pipeline, loaded on first use.
"""

from __future__ import annotations

from workers.engine.config import EngineConfig
from workers.engine.executor import EngineExecutor, stop_ray
from workers.executor import REFERENCE_EDIT_CROP_BASE, ModelUnavailable, PipelineExecutor


class EngineJobExecutor(PipelineExecutor):
    def __init__(self, config: EngineConfig, engine: EngineExecutor | None = None, *,
                 edit_crop_base: int = REFERENCE_EDIT_CROP_BASE):
        super().__init__(config.model_path, edit_crop_base=edit_crop_base)
        self.engine_config = config
        self._pipeline = engine  # None: started on first use

    def _load_pipeline(self) -> EngineExecutor:
        return EngineExecutor(self.engine_config)

    def load(self) -> None:
        """Starts the engine and returns once every actor has loaded its weights (ModelUnavailable if not)."""
        engine = self.pipeline()
        try:
            engine.describe()
        except Exception as err:
            raise ModelUnavailable(f"the engine's actors could not load the model at {self.model_path}: "
                                   f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        """Stops the actors, then Ray (before the process exits, in that order)."""
        with self._lock:
            engine, self._pipeline = self._pipeline, None
        if engine is not None:
            engine.close()
        stop_ray()


def engine_job_executor(settings) -> EngineJobExecutor:
    return EngineJobExecutor(EngineConfig.from_settings(settings), edit_crop_base=settings.edit_crop_base)

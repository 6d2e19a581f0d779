"""The Celery worker's executor over the Ray engine (`LLADA_WORKER_EXECUTOR=engine`, the default).

`ModelExecutor` turns a job into calls of the Pipeline's API and their results into outputs; the engine offers
that API across its actors, so here it is the model, started on first use.
"""

from __future__ import annotations

from workers import metrics
from workers.engine.config import EngineConfig
from workers.engine.executor import EngineExecutor, stop_ray
from workers.engine.metrics import EngineCollector

# On the worker's metrics endpoint (one engine per worker process): empty until an engine has loaded.
ENGINE_METRICS = EngineCollector()
metrics.REGISTRY.register(ENGINE_METRICS)
from workers.executor import REFERENCE_EDIT_CROP_BASE, ModelExecutor, ModelUnavailable


class EngineBackedExecutor(ModelExecutor):
    def __init__(self, config: EngineConfig, engine: EngineExecutor | None = None, *,
                 edit_crop_base: int = REFERENCE_EDIT_CROP_BASE):
        super().__init__(config.model_path, edit_crop_base=edit_crop_base)
        self.engine_config = config
        self._model = engine  # None: started on first use

    def _load_model(self) -> EngineExecutor:
        return EngineExecutor(self.engine_config)

    def load(self) -> None:
        """Starts the engine and returns once every actor has loaded its weights (ModelUnavailable if not)."""
        engine = self.model()
        try:
            engine.describe()
        except Exception as err:
            raise ModelUnavailable(f"the engine's actors could not load the model at {self.model_path}: "
                                   f"{type(err).__name__}: {err}") from err
        ENGINE_METRICS.engine = engine  # the worker's endpoint shows the engine's batching

    def close(self) -> None:
        """Stops the actors, then Ray (before the process exits, in that order)."""
        with self._lock:
            engine, self._model = self._model, None
        if engine is not None and ENGINE_METRICS.engine is engine:
            ENGINE_METRICS.engine = None
        if engine is not None:
            engine.close()
        stop_ray()


def engine_backed_executor(settings) -> EngineBackedExecutor:
    return EngineBackedExecutor(EngineConfig.from_settings(settings), edit_crop_base=settings.edit_crop_base)

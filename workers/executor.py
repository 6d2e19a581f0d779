"""The step that runs one job through the model: params + input bytes in, encoded outputs out.

`ModelExecutor` turns a job (kind, params, input bytes) into a typed task (`task_for`) for the Pipeline's API
and its result into outputs, on a model it loads on first use; `PipelineExecutor` is it over the in-process
`workers.model.Pipeline` (the Ray engine's is `workers.engine.engine_backed`). Which one a worker runs is
`workers.executor_choice`'s business: this module knows no executor above it.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from shared.jobs import EditParams, JobKind, TextToImageParams, UnderstandParams
from workers.model.hooks import Answer, Progress, ShouldCancel


# docs/model.md §3.5's reference crop base; a deployment sets another through `Settings.edit_crop_base`.
REFERENCE_EDIT_CROP_BASE = 512
IMAGE_OUTPUT = "image.png"


@dataclass
class JobOutput:
    """What a job produced: encoded objects by file name, the answer text, the thinking text, timings, and
    the seed an image was made with (the request's, or the one the model drew: kept so it can be replayed)."""

    objects: dict[str, bytes] = field(default_factory=dict)
    text: str | None = None
    thinking: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    seed: int | None = None


class Executor(Protocol):
    # `answer(text)`: an UNDERSTAND job's answer so far, as its blocks settle (executors that cannot tell it
    # early never call it; the final answer is the JobOutput's text either way).
    def run(self, kind: JobKind, params: Any, inputs: Mapping[str, bytes], *,
            progress: Progress, should_cancel: ShouldCancel, answer: Answer | None = None) -> JobOutput: ...

    # Optional (looked up with getattr): `load()` loads the model now, raising ModelUnavailable when it
    # cannot; `close()` releases it (the engine stops its actors and Ray) as the worker shuts down.


class ModelUnavailable(Exception):
    """The model could not be loaded: no job can run on this worker (a wrong path, missing or corrupt
    files, too little memory). Not the job's fault: the job is handed back and the worker stops."""


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sprint_kwargs(sprint) -> dict[str, Any]:
    """shared SprintOptions → the Pipeline's `sprint` mapping (None when off) and acceptance threshold.

    The service's `sprint.threshold` is the confidence threshold of the sampler (docs/model.md §3.1/§3.6);
    the model keeps it apart from the SPRINT options, so it is passed on as `threshold`.
    """
    if not sprint.enabled:
        return {"sprint": None}
    options = sprint.model_dump(exclude={"enabled", "threshold"})
    return {"sprint": options, "threshold": sprint.threshold}


class ModelExecutor:
    """Runs jobs on a model with the Pipeline's typed API (`text_to_image`, `understand`, `edit`), loaded by
    `_load_model` on first use and kept for the life of the process."""

    def __init__(self, model_path: str, *, edit_crop_base: int = REFERENCE_EDIT_CROP_BASE):
        self.model_path = model_path
        self.edit_crop_base = edit_crop_base
        self._model = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    def _load_model(self):
        raise NotImplementedError

    def model(self):
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                try:
                    self._model = self._load_model()
                except Exception as err:
                    raise ModelUnavailable(f"the model at {self.model_path} could not be loaded: "
                                           f"{type(err).__name__}: {err}") from err
                self.load_seconds = time.perf_counter() - started
            return self._model

    def load(self) -> None:
        self.model()

    def close(self) -> None:
        with self._lock:
            self._model = None

    def run(self, kind: JobKind, params: Any, inputs: Mapping[str, bytes], *,
            progress: Progress, should_cancel: ShouldCancel, answer: Answer | None = None) -> JobOutput:
        model = self.model()
        task = task_for(kind, params, edit_crop_base=self.edit_crop_base)
        hooks = {"progress": progress, "should_cancel": should_cancel}
        if kind is JobKind.TEXT_TO_IMAGE:
            result = model.text_to_image(task, **hooks)
        elif kind is JobKind.UNDERSTAND:
            # Encoded bytes as stored: the model's own input path decodes them (bomb guard, 16-bit, EXIF,
            # alpha) and names the field "image" in its errors; the runner prefixes the job kind.
            result = model.understand(inputs["image"], task, answer=answer, **hooks)
        else:
            result = model.edit(inputs["image"], task, **hooks)
        return output_of(result)


class PipelineExecutor(ModelExecutor):
    """Runs jobs on the in-process `workers.model.Pipeline`."""

    def __init__(self, model_path: str, *, device: str | None = None, dtype: str | None = None,
                 edit_crop_base: int = REFERENCE_EDIT_CROP_BASE):
        super().__init__(model_path, edit_crop_base=edit_crop_base)
        self.device = device
        self.dtype = dtype

    def _load_model(self):
        from workers.model.pipeline import Pipeline

        return Pipeline.from_pretrained(self.model_path, device=self.device, dtype=self.dtype)


def output_of(result) -> JobOutput:
    image = getattr(result, "image", None)
    objects = {IMAGE_OUTPUT: encode_png(image)} if image is not None else {}
    timings = {str(k): float(v) for k, v in (getattr(result, "timings", None) or {}).items()}
    return JobOutput(objects=objects, text=getattr(result, "text", None),
                     thinking=getattr(result, "thinking", None), timings=timings,
                     seed=getattr(result, "seed", None))


def task_for(kind: JobKind, params: TextToImageParams | UnderstandParams | EditParams, *, edit_crop_base: int):
    """The model's typed task (workers.model.tasks) for a job's checked params: the fields they share by name,
    SPRINT as the sampler takes it, and the deployment's edit crop base."""
    from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask

    task_type = {JobKind.TEXT_TO_IMAGE: TextToImageTask, JobKind.UNDERSTAND: UnderstandTask,
                 JobKind.EDIT: EditTask}[kind]
    shared = {f.name for f in fields(task_type)} & set(type(params).model_fields)
    values = {name: getattr(params, name) for name in shared}
    if "sprint" in type(params).model_fields:  # replaces the service's SprintOptions with the model's mapping
        values.update(sprint_kwargs(params.sprint))
    if kind is JobKind.UNDERSTAND:
        values["threshold"] = params.threshold  # understanding's own threshold wins over sprint.threshold
    if kind is JobKind.EDIT:
        values["crop_base"] = edit_crop_base
    return task_type(**values)


class JobFailure(Exception):
    """A job that cannot succeed, whatever the retry: ends FAILED with `code`, `message` and `field`."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


def is_cancellation(err: BaseException) -> bool:
    from workers.model.errors import Cancelled

    return isinstance(err, Cancelled)


def classify_failure(err: BaseException) -> JobFailure | None:
    """The FAILED outcome of an error raised while running a job, or None for an infrastructure error
    (database, object store, broker unreachable) that a later attempt may get past."""
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db.errors import is_transient_db_error
    from workers.model.errors import ModelInputError

    if isinstance(err, JobFailure):
        return err
    if isinstance(err, ModelInputError):
        return JobFailure("INVALID_ARGUMENT", err.message, err.field)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError
        return JobFailure("RESOURCE_EXHAUSTED", f"out of memory while running the job: {err}")
    if is_transient_db_error(err) or isinstance(err, (ConnectionError, TimeoutError)):
        return None
    if isinstance(err, SQLAlchemyError):  # its text holds SQL and parameters: for the log, not for the tenant
        return JobFailure("INTERNAL", "a database error stopped the job; the worker's log has the details")
    # Any other error of the model run is deterministic for these inputs: retrying would fail again.
    return JobFailure("INTERNAL", f"{type(err).__name__}: {err}")

"""ModelExecutor between a job and the model's API (workers.executor): what each kind hands the model (the task,
the encoded input image, the progress, cancel and answer hooks) and what comes back into the job's outputs, on a
recording double of the model; and how an error of the run ends the job."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image
from sqlalchemy import exc

from shared.jobs import JobKind, validate_params
from workers.executor import (IMAGE_OUTPUT, JobFailure, ModelExecutor, ModelUnavailable, PipelineExecutor,
                              classify_failure)
from workers.model.errors import ModelInputError
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask


class RecordingModelDouble:
    """The Pipeline's typed API: records each call, answers with what a real result carries."""

    def __init__(self):
        self.calls = []

    def text_to_image(self, task, **hooks):
        self.calls.append(("text_to_image", task, None, hooks))
        return SimpleNamespace(image=Image.new("RGB", (8, 4), (200, 10, 10)), text=None, thinking="a red square",
                               seed=1234, timings={"denoise": 2, "decode": 0.5})

    def understand(self, image, task, **hooks):
        self.calls.append(("understand", task, image, hooks))
        return SimpleNamespace(text="a fox", timings={"denoise": 3})

    def edit(self, image, task, **hooks):
        self.calls.append(("edit", task, image, hooks))
        return SimpleNamespace(image=Image.new("RGB", (4, 4)), seed=99)


class DoubleBackedExecutor(ModelExecutor):
    def __init__(self, model=None, error: Exception | None = None):
        super().__init__("/models/llada-test", edit_crop_base=384)
        self.double, self.error, self.loads = model or RecordingModelDouble(), error, 0

    def _load_model(self):
        self.loads += 1
        if self.error is not None:
            raise self.error
        return self.double


def progress(stage, step, total):
    pass


def should_cancel():
    return False


def answer(text):
    pass


def run(executor, kind, params, inputs=None, **hooks):
    checked = validate_params(kind, params, max_prompt_chars=100)
    return executor.run(kind, checked, inputs or {}, progress=progress, should_cancel=should_cancel, **hooks)


def test_a_text_to_image_job_hands_the_model_its_task_and_hooks_and_keeps_the_image_thinking_and_seed():
    executor = DoubleBackedExecutor()
    output = run(executor, JobKind.TEXT_TO_IMAGE, {"prompt": "a red square", "width": 256, "height": 256,
                                                   "mode": "thinking"})
    [(method, task, image, hooks)] = executor.double.calls
    assert method == "text_to_image" and isinstance(task, TextToImageTask) and image is None
    assert (task.prompt, task.width, task.mode) == ("a red square", 256, "thinking")
    assert hooks == {"progress": progress, "should_cancel": should_cancel}
    with Image.open(io.BytesIO(output.objects[IMAGE_OUTPUT])) as png:
        assert (png.format, png.size, png.getpixel((0, 0))) == ("PNG", (8, 4), (200, 10, 10))
    assert (output.text, output.thinking, output.seed) == (None, "a red square", 1234)
    assert output.timings == {"denoise": 2.0, "decode": 0.5}


def test_an_understanding_job_hands_the_model_the_stored_image_bytes_and_the_answer_hook():
    executor = DoubleBackedExecutor()
    output = run(executor, JobKind.UNDERSTAND, {"question": "what is it?", "threshold": 0.9},
                 {"image": b"encoded bytes"}, answer=answer)
    [(method, task, image, hooks)] = executor.double.calls
    assert method == "understand" and isinstance(task, UnderstandTask) and image == b"encoded bytes"
    assert task.threshold == 0.9
    assert hooks == {"progress": progress, "should_cancel": should_cancel, "answer": answer}
    assert (output.objects, output.text, output.thinking, output.seed) == ({}, "a fox", None, None)
    assert output.timings == {"denoise": 3.0}


def test_an_edit_job_hands_the_model_the_image_and_the_deployments_crop_base():
    executor = DoubleBackedExecutor()
    output = run(executor, JobKind.EDIT, {"instruction": "make it blue"}, {"image": b"the picture"})
    [(method, task, image, hooks)] = executor.double.calls
    assert method == "edit" and isinstance(task, EditTask) and image == b"the picture"
    assert (task.instruction, task.crop_base) == ("make it blue", 384)
    assert hooks == {"progress": progress, "should_cancel": should_cancel}
    assert set(output.objects) == {IMAGE_OUTPUT} and output.seed == 99 and output.timings == {}


def test_the_model_loads_once_and_is_timed():
    executor = DoubleBackedExecutor()
    executor.load()
    run(executor, JobKind.UNDERSTAND, {"question": "q"}, {"image": b"x"})
    assert executor.loads == 1 and executor.model() is executor.double
    assert 0 <= executor.load_seconds < 60
    executor.close()
    executor.load()
    assert executor.loads == 2


def test_a_model_that_will_not_load_is_unavailable_naming_the_path_and_the_error():
    executor = DoubleBackedExecutor(error=FileNotFoundError("config.json"))
    with pytest.raises(ModelUnavailable) as info:
        executor.load()
    assert str(info.value) == "the model at /models/llada-test could not be loaded: FileNotFoundError: config.json"
    assert isinstance(info.value.__cause__, FileNotFoundError) and executor.load_seconds is None


def test_the_pipeline_executor_keeps_its_path_device_and_dtype():
    executor = PipelineExecutor("/models/real", device="cpu", dtype="bfloat16", edit_crop_base=640)
    assert (executor.model_path, executor.device, executor.dtype, executor.edit_crop_base) == (
        "/models/real", "cpu", "bfloat16", 640)


def test_the_pipeline_executor_loads_the_pipeline_from_its_path_on_its_device_and_dtype(monkeypatch):
    from workers.model import pipeline

    loaded = []
    monkeypatch.setattr(pipeline.Pipeline, "from_pretrained",
                        classmethod(lambda cls, path, **kw: loaded.append((path, kw)) or "the pipeline"))
    executor = PipelineExecutor("/models/real", device="cpu", dtype="bfloat16")
    assert executor.model() == "the pipeline"
    assert loaded == [("/models/real", {"device": "cpu", "dtype": "bfloat16"})]


def database_error(kind, invalidated=False):
    return kind("SELECT 1", {"p": 1}, Exception("server closed the connection"), connection_invalidated=invalidated)


# (what the model run raised, the job's FAILED (code, message, field); None: an outage, retried by a later attempt)
FAILURES = [
    (JobFailure("DEADLINE_EXCEEDED", "too slow", "steps"), ("DEADLINE_EXCEEDED", "too slow", "steps")),
    (ModelInputError("image", "is not a PNG or JPEG"), ("INVALID_ARGUMENT", "is not a PNG or JPEG", "image")),
    (MemoryError("32 GiB"), ("RESOURCE_EXHAUSTED", "out of memory while running the job: 32 GiB", None)),
    (database_error(exc.OperationalError), None),
    (database_error(exc.DBAPIError, invalidated=True), None),
    (ConnectionError("object store unreachable"), None),
    (TimeoutError("broker"), None),
    (database_error(exc.IntegrityError),
     ("INTERNAL", "a database error stopped the job; the worker's log has the details", None)),
    (ValueError("no such token"), ("INTERNAL", "ValueError: no such token", None)),
]


@pytest.mark.parametrize("error, expected", FAILURES, ids=[type(error).__name__ for error, _ in FAILURES])
def test_a_model_run_error_fails_the_job_with_its_code_or_is_retried(error, expected):
    failure = classify_failure(error)
    assert (None if failure is None else (failure.code, failure.message, failure.field)) == expected
    if failure is not None:
        assert str(failure) == f"{failure.code}: {failure.message}"

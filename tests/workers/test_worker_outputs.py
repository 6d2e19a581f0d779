"""What a finished job stores (workers.tasks): each output object under the attempt's key, with the content type a
browser needs to show it; the answer or the thinking text; the model's own timings; and a job whose stored params
no longer validate fails naming the field, without running the model; so does a field the model refuses at run
time."""

from __future__ import annotations

import dataclasses

import pytest

from tests.store_doubles import ContentTypeRecordingStoreDouble
from tests.workers.worker_harness import make_settings
from shared.jobs import PARAMS_FIELD, InvalidArgument, JobKind, validate_params
from workers.executor import JobOutput
from workers.model.errors import ModelInputError


class FixedOutputExecutorDouble:
    """Returns the JobOutput it was given, as a model would after its last step."""

    def __init__(self, output: JobOutput):
        self.output = output
        self.runs = 0

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        self.runs += 1
        return self.output


def run_with(harness, tmp_path, output: JobOutput, kind=JobKind.TEXT_TO_IMAGE, **params):
    store = ContentTypeRecordingStoreDouble(tmp_path / "typed")
    executor = FixedOutputExecutorDouble(output)
    harness.ctx = dataclasses.replace(harness.ctx, store=store, executor=executor)
    job_id = harness.submit(kind, **params)
    assert harness.runner().run(job_id) == "SUCCEEDED"
    return harness.job(job_id), store


def test_each_output_is_stored_under_its_name_with_its_content_type(harness, tmp_path):
    output = JobOutput(objects={"image.png": b"\x89PNG fake", "mask.v2.bin": b"\x00\x01"}, timings={"decode": 0.5})

    job, store = run_with(harness, tmp_path, output, prompt="a fox")

    image_key, mask_key = f"results/{job.id}/1/image.png", f"results/{job.id}/1/mask.v2.bin"
    assert job.output_keys == {"image": image_key, "mask.v2": mask_key}  # named without the last suffix only
    assert store.content_types == {image_key: "image/png", mask_key: "application/octet-stream"}
    assert store.get(mask_key) == b"\x00\x01"


def test_the_models_own_total_is_kept_and_a_missing_one_is_measured(harness, tmp_path):
    measured, _ = run_with(harness, tmp_path, JobOutput(objects={"image.png": b"x"}, timings={"decode": 0.25}),
                           prompt="a fox")
    reported, _ = run_with(harness, tmp_path, JobOutput(objects={"image.png": b"x"}, timings={"total": 7.5}),
                           prompt="a fox")

    assert measured.timings["decode"] == 0.25 and 0 < measured.timings["total"] < 7.5
    assert reported.timings == {"total": 7.5}


def test_a_text_to_image_job_keeps_its_thinking_and_an_understanding_job_its_answer(harness, tmp_path):
    both = dict(objects={}, text="the answer", thinking="the plan")

    image_job, _ = run_with(harness, tmp_path, JobOutput(**both), prompt="a fox")
    answer_job, _ = run_with(harness, tmp_path, JobOutput(**both), kind=JobKind.UNDERSTAND, question="what?")

    assert image_job.output_text == "the plan"
    assert answer_job.output_text == "the answer"
    assert answer_job.output_keys == {}


@pytest.mark.parametrize("kind, params, limit", [
    (JobKind.TEXT_TO_IMAGE, {"prompt": "a fox in the snow"}, 10),
    (JobKind.UNDERSTAND, {"question": "what is in the picture?"}, 5),
])
def test_stored_params_that_no_longer_validate_fail_the_job_naming_the_field(harness, tmp_path, kind, params, limit):
    """A job queued before its limit was tightened (a redeploy with a smaller prompt limit)."""
    job_id = harness.submit(kind, **params)
    with pytest.raises(InvalidArgument) as refused:
        validate_params(kind, params, max_prompt_chars=limit)
    executor = FixedOutputExecutorDouble(JobOutput())
    tightened = make_settings(tmp_path, max_prompt_chars=limit)
    harness.ctx = dataclasses.replace(harness.ctx, settings=tightened, executor=executor)

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    # Named the way the gateway names it: under the kind's params message.
    assert (job.error_code, job.error_message, job.error_field) == (
        "INVALID_ARGUMENT", refused.value.message, f"{PARAMS_FIELD[kind]}.{next(iter(params))}")
    assert executor.runs == 0


class RefusingInputExecutorDouble(FixedOutputExecutorDouble):
    """Refuses the job's input at run time, naming the field as the model does."""

    def __init__(self, field: str):
        super().__init__(JobOutput())
        self.field = field

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        raise ModelInputError(self.field, "is larger than this model allows")


@pytest.mark.parametrize("field", ["steps", "text_to_image.steps"])
def test_a_field_refused_at_run_time_is_named_under_the_kinds_params_once(harness, field):
    harness.ctx = dataclasses.replace(harness.ctx, executor=RefusingInputExecutorDouble(field))
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a fox")

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    assert (job.error_code, job.error_field) == ("INVALID_ARGUMENT", "text_to_image.steps")

"""The service's params (shared.jobs, the API boundary) and the model's tasks (workers.model.tasks) declare the
same defaults, and every parameter a client can set reaches the model's task by its name."""

from __future__ import annotations

import dataclasses

import pytest

from shared.jobs import DEFAULT_DECODER_STEPS, EditParams, JobKind, TextToImageParams, UnderstandParams
from shared.jobs import SprintOptions as ServiceSprint
from workers.executor import task_for
from workers.model.decoder import MODES as DECODER_MODES
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask

PAIRS = [(JobKind.TEXT_TO_IMAGE, TextToImageParams, TextToImageTask, {"prompt": "p"}),
         (JobKind.UNDERSTAND, UnderstandParams, UnderstandTask, {"question": "q"}),
         (JobKind.EDIT, EditParams, EditTask, {"instruction": "i"})]


@pytest.mark.parametrize("kind, params_type, task_type, required", PAIRS)
def test_every_service_parameter_is_a_task_field_with_the_same_default(kind, params_type, task_type, required):
    task_fields = {f.name: f for f in dataclasses.fields(task_type)}
    for name, info in params_type.model_fields.items():
        if name == "sprint":
            continue
        assert name in task_fields, f"{params_type.__name__}.{name} has no field in {task_type.__name__}"
        if name in required or name == "decoder_steps":  # the service fills the decoder's default in
            continue
        assert info.default == task_fields[name].default, name


def test_the_decoders_default_steps_agree():
    assert DEFAULT_DECODER_STEPS == {mode: spec.default_steps for mode, spec in DECODER_MODES.items()}


def test_sprint_off_by_default_and_its_threshold_is_the_tasks():
    assert not ServiceSprint().enabled and ServiceSprint().threshold == TextToImageTask("p").threshold


@pytest.mark.parametrize("kind, params_type, task_type, required", PAIRS)
def test_a_jobs_params_become_its_task_field_by_field(kind, params_type, task_type, required):
    values = {**required, "steps": 4, "block_length": 16}
    if kind is not JobKind.UNDERSTAND:
        values.update(seed=7, decoder="normal")
    if kind is JobKind.TEXT_TO_IMAGE:
        values.update(width=256, height=128, mode="thinking", sprint={"enabled": True, "keep_ratio": 0.6,
                                                                        "threshold": 0.9})
    params = params_type(**values)
    task = task_for(kind, params, edit_crop_base=128)
    for name in set(params_type.model_fields) - {"sprint"}:
        assert getattr(task, name) == getattr(params, name), name
    if kind is JobKind.TEXT_TO_IMAGE:
        # The model takes SPRINT's options apart from the sampler's threshold (workers.executor.sprint_kwargs).
        assert task.sprint["keep_ratio"] == 0.6 and task.threshold == 0.9
        assert "enabled" not in task.sprint and "threshold" not in task.sprint
    if kind is JobKind.EDIT:
        assert task.crop_base == 128

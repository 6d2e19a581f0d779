"""The worker app's reliability settings, and how the executor hands a job's params to the Pipeline."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image
from pydantic import ValidationError

from tests.workers.worker_harness import png_bytes
from shared.jobs import JobKind, validate_params
from shared.queue import RUN_JOB_TASK
from shared.settings import Settings
from workers.celery_app import make_celery_app
from workers.executor import PipelineExecutor
from workers.executor_choice import executor_from_settings


def test_worker_app_acks_late_prefetches_one_and_registers_run_job(tmp_path):
    app = make_celery_app(Settings(data_dir=tmp_path, visibility_timeout_s=7200))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == "llada.jobs"
    assert conf.broker_transport_options["polling_interval"] <= 0.05
    assert RUN_JOB_TASK in app.tasks


def test_redis_broker_gets_the_visibility_timeout_from_settings(tmp_path):
    app = make_celery_app(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0",
                                   visibility_timeout_s=7200))
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200
    assert "polling_interval" not in app.conf.broker_transport_options


class PipelineRecorderDouble:
    """Stands in for workers.model.Pipeline: records each task it is given (as its fields) and returns a fixed
    result."""

    def __init__(self):
        self.calls = []

    def _result(self, **extra):
        return SimpleNamespace(image=Image.new("RGB", (64, 32)), text=None, thinking=None,
                               timings={"denoise": 1.5, "decode": 0.5}, **extra)

    def text_to_image(self, task, **hooks):
        self.calls.append(("text_to_image", task.prompt, vars(task)))
        return self._result()

    def understand(self, image, task, **hooks):
        self.calls.append(("understand", image, task.question, vars(task)))
        return SimpleNamespace(image=None, text="a blue square", thinking=None, timings={"denoise": 0.1})

    def edit(self, image, task, **hooks):
        self.calls.append(("edit", image, task.instruction, vars(task)))
        return self._result()


def executor_with_double() -> tuple[PipelineExecutor, PipelineRecorderDouble]:
    executor = PipelineExecutor("/nonexistent")
    double = PipelineRecorderDouble()
    executor._model = double  # as if loaded: the real load is covered end to end
    return executor, double


def hooks():
    return {"progress": lambda *a: None, "should_cancel": lambda: False}


def test_text_to_image_params_reach_the_pipeline_and_the_image_is_png():
    executor, double = executor_with_double()
    params = validate_params(JobKind.TEXT_TO_IMAGE, {"prompt": "a fox", "width": 256, "height": 128, "seed": 3,
                                                     "sprint": {"enabled": True, "keep_ratio": 0.6}},
                             max_prompt_chars=100)

    output = executor.run(JobKind.TEXT_TO_IMAGE, params, {}, **hooks())

    name, prompt, kwargs = double.calls[0]
    assert (name, prompt) == ("text_to_image", "a fox")
    assert (kwargs["width"], kwargs["height"], kwargs["steps"], kwargs["cfg_scale"], kwargs["seed"]) == (256, 128, 8, 2.0, 3)
    assert (kwargs["decoder"], kwargs["decoder_steps"], kwargs["mode"]) == ("turbo", 8, "normal")
    assert kwargs["sprint"]["keep_ratio"] == 0.6 and "enabled" not in kwargs["sprint"]
    assert Image.open(io.BytesIO(output.objects["image.png"])).format == "PNG"
    assert output.timings == {"denoise": 1.5, "decode": 0.5}


def test_understanding_hands_the_stored_image_bytes_to_the_pipeline_and_returns_text():
    executor, double = executor_with_double()
    params = validate_params(JobKind.UNDERSTAND, {"question": "what?", "gen_length": 64}, max_prompt_chars=100)

    image_bytes = png_bytes((20, 10))
    output = executor.run(JobKind.UNDERSTAND, params, {"image": image_bytes}, **hooks())

    _, image, question, kwargs = double.calls[0]
    assert image == image_bytes and question == "what?"  # decoded by the Pipeline's own input checks
    assert kwargs["gen_length"] == 64 and kwargs["sprint"] is None and kwargs["threshold"] == 0.95
    assert output.text == "a blue square" and output.objects == {}


def test_edit_passes_both_guidance_scales():
    executor, double = executor_with_double()
    params = validate_params(JobKind.EDIT, {"instruction": "night", "cfg_image_scale": 1.5}, max_prompt_chars=100)

    executor.run(JobKind.EDIT, params, {"image": png_bytes()}, **hooks())

    _, _, instruction, kwargs = double.calls[0]
    assert instruction == "night" and (kwargs["cfg_text_scale"], kwargs["cfg_image_scale"]) == (4.0, 1.5)
    assert kwargs["crop_base"] == 512  # docs/model.md §3.5's reference crop unless a deployment lowers it


def test_edit_crop_base_is_a_setting_read_from_the_environment_without_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LLADA_EDIT_CROP_BASE", "128")
    with caplog.at_level("WARNING", logger="llada.settings"):
        settings = Settings(data_dir=tmp_path)
    assert "LLADA_EDIT_CROP_BASE" not in caplog.text
    assert settings.edit_crop_base == 128
    assert executor_from_settings(settings).edit_crop_base == 128
    assert Settings(data_dir=tmp_path, edit_crop_base=512).edit_crop_base == 512


def test_edit_crop_base_that_is_not_a_multiple_of_32_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValidationError, match="edit_crop_base"):
        Settings(data_dir=tmp_path, edit_crop_base=100)


def test_worker_app_with_the_engine_admits_replicas_times_inflight_jobs_on_threads(tmp_path):
    app = make_celery_app(Settings(data_dir=tmp_path, worker_executor="engine", engine_replicas=2,
                                   engine_max_inflight=3))
    assert (app.conf.worker_pool, app.conf.worker_concurrency) == ("threads", 6)
    assert app.conf.worker_prefetch_multiplier == 1  # 6 messages reserved at most, one per slot
    default = make_celery_app(Settings(data_dir=tmp_path))  # the engine is the default, 1 x 8
    assert (default.conf.worker_pool, default.conf.worker_concurrency) == ("threads", 8)


def test_worker_app_with_the_in_process_pipeline_runs_one_job_per_process(tmp_path):
    app = make_celery_app(Settings(data_dir=tmp_path, worker_executor="pipeline", engine_replicas=2))
    assert (app.conf.worker_pool, app.conf.worker_concurrency) == ("prefork", 1)


def test_worker_executor_that_is_neither_a_known_name_nor_module_factory_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="worker_executor"):
        Settings(data_dir=tmp_path, worker_executor="ray")

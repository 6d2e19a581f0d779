"""Input images reach the model's own input path as the stored bytes: a decompression bomb ends the job
FAILED with INVALID_ARGUMENT naming the field, and a 16-bit PNG keeps its grey instead of turning white."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from shared.jobs import JobKind
from workers.executor import PipelineExecutor
from workers.model import pipeline_inputs


class InputCheckingPipelineDouble:
    """Stands in for the Pipeline's compute only: decodes its image argument with the model package's real
    `open_image` (as Pipeline.understand does first) and records the picture it got."""

    def __init__(self):
        self.images = []

    def understand(self, image, task, **hooks):
        from types import SimpleNamespace

        self.images.append(pipeline_inputs.open_image(image, "image"))
        return SimpleNamespace(image=None, text="grey", thinking=None, timings={})


def use_pipeline_double(harness) -> InputCheckingPipelineDouble:
    executor = PipelineExecutor("/nonexistent")
    double = InputCheckingPipelineDouble()
    executor._model = double  # as if loaded
    harness.ctx.executor = executor
    return double


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_decompression_bomb_fails_the_job_as_invalid_argument_naming_the_field(harness, monkeypatch):
    use_pipeline_double(harness)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32)  # a 64x64 picture is then over twice the guard
    job_id = harness.submit(JobKind.UNDERSTAND, question="what?", image=png(Image.new("RGB", (64, 64))))

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    assert (job.error_code, job.error_field) == ("INVALID_ARGUMENT", "understand.image")
    assert "decompression bomb" in job.error_message


def test_sixteen_bit_png_is_scaled_to_eight_bits_not_clipped_to_white(harness):
    double = use_pipeline_double(harness)
    mid_grey = Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16))  # half of 65535
    job_id = harness.submit(JobKind.UNDERSTAND, question="what?", image=png(mid_grey))

    assert harness.runner().run(job_id) == "SUCCEEDED"

    picture = double.images[0]
    assert picture.mode == "RGB"
    assert picture.getpixel((3, 3)) == (128, 128, 128)

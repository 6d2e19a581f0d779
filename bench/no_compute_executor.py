"""An executor that does no compute, for measuring what the queue and the service cost around a job.

Named as what it is: it returns a fixed 1×1 PNG (or a fixed answer) at once, with no model. Used only by
bench/queue_overhead.py through LLADA_WORKER_EXECUTOR=no_compute_executor:NoComputeExecutor.
"""

from __future__ import annotations

import io

from PIL import Image

from shared.jobs import JobKind
from workers.executor import IMAGE_OUTPUT, JobOutput


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


class NoComputeExecutor:
    def __init__(self, settings=None):
        self._png = _tiny_png()

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None) -> JobOutput:
        if kind is JobKind.UNDERSTAND:
            return JobOutput(text="no compute")
        return JobOutput(objects={IMAGE_OUTPUT: self._png})

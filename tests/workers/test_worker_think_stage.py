"""A thinking-mode text-to-image job shows its thinking pass as stage `think`, apart from `denoise`:
in the recorded progress events, in the job row while it thinks, and in the per-stage timings."""

from __future__ import annotations

import io
import json
import sqlite3

from PIL import Image

from shared import repository as repo
from shared.jobs import JobKind
from workers.executor import IMAGE_OUTPUT, JobOutput

THINK_STEPS, IMAGE_STEPS = 3, 4


class ThinkingExecutorDouble:
    """Reports the stages as the Pipeline does in thinking mode: think, then denoise, then decode; and
    records the job row's stage as the worker stored it right after the last thinking step."""

    def __init__(self, ctx, job_id: str):
        self.ctx, self.job_id = ctx, job_id
        self.stage_while_thinking = None

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        progress("tokenize", 1, 1)
        for step in range(1, THINK_STEPS + 1):
            progress("think", step, THINK_STEPS)
        self.stage_while_thinking = self.ctx.db(repo.load_job, self.job_id).stage
        for step in range(1, IMAGE_STEPS + 1):
            progress("denoise", step, IMAGE_STEPS)
        progress("decode", 1, 1)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        return JobOutput(objects={IMAGE_OUTPUT: buffer.getvalue()}, thinking="a plan",
                         timings={"tokenize": 0.01, "think": 0.2, "denoise": 0.3, "decode": 0.1}, seed=1)


def progress_events(harness, job_id: str) -> list[tuple[str, int, int]]:
    conn = sqlite3.connect(harness.ctx.events.path)
    rows = conn.execute("SELECT payload FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    conn.close()
    events = [json.loads(row[0]) for row in rows]
    return [(e["stage"], e["step"], e["total"]) for e in events if e["type"] == "progress"]


def test_thinking_pass_is_reported_as_the_think_stage(harness):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a lighthouse", width=256, height=256, mode="thinking")
    double = ThinkingExecutorDouble(harness.ctx, job_id)
    harness.ctx.executor = double

    assert harness.runner().run(job_id) == "SUCCEEDED"

    events = progress_events(harness, job_id)
    stages = [stage for stage, _, _ in events]
    assert stages == sorted(stages, key=["tokenize", "think", "denoise", "decode"].index), events
    assert ("think", THINK_STEPS, THINK_STEPS) in events
    assert ("denoise", IMAGE_STEPS, IMAGE_STEPS) in events
    assert not any(stage == "think" and total == IMAGE_STEPS for stage, _, total in events)
    assert double.stage_while_thinking == "think"
    job = harness.job(job_id)
    assert job.timings["think"] == 0.2 and job.timings["denoise"] == 0.3
    assert job.output_text == "a plan"

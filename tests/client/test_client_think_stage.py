"""`llada get` and the progress line name the thinking pass `think`, not `denoise`."""

import io

from client.cli_commands import ProgressLine, summary
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


def thinking_job() -> pb.Job:
    job = pb.Job(id="j1", kind=pb.JOB_KIND_TEXT_TO_IMAGE, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_THINK)
    job.progress.step, job.progress.total = 3, 6
    return job


def test_summary_names_the_think_stage():
    assert "think 3/6" in summary(thinking_job())


def test_progress_line_names_the_think_stage():
    out = io.StringIO()
    ProgressLine(out)(thinking_job())
    assert out.getvalue().split()[:2] == ["RUNNING", "think"]

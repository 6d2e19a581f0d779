"""A job in its thinking pass shows STAGE_THINK over gRPC (apart from STAGE_DENOISE), and a finished job keeps
the worker's `think` timing in stage_seconds."""

from client import stage_name
from shared import attempts
from shared.objectstore import result_key
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

WORKER = "worker-think-1"


def test_thinking_and_image_denoising_are_told_apart(gw):
    md = gw.key("think-stage")
    params = pb.TextToImageParams(prompt="fox", mode=pb.GENERATION_MODE_THINKING)
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=params), metadata=md)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)

    gw.db(attempts.record_progress, attempt, "think", 2, 6)
    thinking = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert (thinking.stage, thinking.progress.step, thinking.progress.total) == (pb.STAGE_THINK, 2, 6)
    assert stage_name(thinking) == "think"

    gw.db(attempts.record_progress, attempt, "denoise", 1, 9)
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).stage == pb.STAGE_DENOISE

    gw.db(attempts.finish_job, attempt, output_keys={"image": result_key(job.id, 1, "image.png")},
          timings={"tokenize": 0.1, "think": 1.25, "denoise": 2.5, "decode": 0.5})
    done = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert done.stage_seconds["think"] == 1.25 and done.stage_seconds["denoise"] == 2.5

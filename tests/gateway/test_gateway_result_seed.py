"""GetJob returns the seed a finished image job ran with (outputs.seed, from the worker's record), and no
seed for a job that has none."""

from shared import attempts
from shared.objectstore import result_key
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

WORKER = "worker-seed-1"
DRAWN_SEED = 2**63 - 1  # the largest seed the model can draw: must survive the uint64 field intact


def test_get_job_returns_the_seed_the_worker_recorded(gw):
    md = gw.key("seed-drawn")
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="fox")), metadata=md)
    before = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert not before.outputs.HasField("seed")  # nothing has run yet

    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.db(attempts.finish_job, attempt, output_keys={"image": result_key(job.id, 1, "image.png")}, seed=DRAWN_SEED)
    done = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)

    assert done.state == pb.JOB_STATE_SUCCEEDED
    assert done.outputs.HasField("seed") and done.outputs.seed == DRAWN_SEED


def test_a_job_finished_without_a_seed_reports_none(gw):
    md = gw.key("seed-none")
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="fox")), metadata=md)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.db(attempts.finish_job, attempt, output_keys={}, output_text="answer")

    done = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert not done.outputs.HasField("seed")

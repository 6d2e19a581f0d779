"""Small readers for Job messages: enum names without their proto prefixes, terminal states."""

from __future__ import annotations

from shared.proto.llada.serve.v1 import jobs_pb2 as pb

TERMINAL_STATES = frozenset({
    pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_EXPIRED,
})


def _short(enum, prefix: str, value: int) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def state_name(job: pb.Job) -> str:
    """"QUEUED", "RUNNING", ... as the shared layer spells them."""
    return _short(pb.JobState, "JOB_STATE_", job.state)


def kind_name(job: pb.Job) -> str:
    return _short(pb.JobKind, "JOB_KIND_", job.kind)


def stage_name(job: pb.Job) -> str:
    return "" if job.stage == pb.STAGE_UNSPECIFIED else _short(pb.Stage, "STAGE_", job.stage).lower()


def is_terminal(job: pb.Job) -> bool:
    return job.state in TERMINAL_STATES


def parse_state(name: str) -> int:
    """"succeeded" / "SUCCEEDED" / "JOB_STATE_SUCCEEDED" -> enum value; ValueError if unknown."""
    return pb.JobState.Value("JOB_STATE_" + name.upper().removeprefix("JOB_STATE_"))


KIND_ALIASES = {"t2i": "TEXT_TO_IMAGE", "text_to_image": "TEXT_TO_IMAGE", "understand": "UNDERSTAND",
                "edit": "EDIT"}


def parse_kind(name: str) -> int:
    key = name.lower().removeprefix("job_kind_")
    return pb.JobKind.Value("JOB_KIND_" + KIND_ALIASES.get(key, key.upper()))

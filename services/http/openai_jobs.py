"""What the OpenAI-compatible routes share: the model they answer for, running a request as a normal job and
waiting for it (bounded by http_wait_timeout_s), and a failed or refused job told in OpenAI's terms."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from client.async_client import AsyncLladaClient
from client.errors import LladaError
from client.jobs import is_terminal
from client.messages import fill_message, webhook_message
from services.http.errors import ApiError, field_path, validation_message
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

# The one model this service serves, as /v1/models lists it; a request may name it or leave `model` out.
MODEL_ID = "llada2.0-uni"
# The header every answer about a job carries, so a caller can follow the job through the job API.
JOB_ID_HEADER = "X-Llada-Job-Id"
# How often a waiting call checks that its caller is still there. One that left stops waiting (its job runs on):
# an abandoned wait would otherwise hold one of the tenant's watch slots on the gateway until its timeout.
DISCONNECT_POLL_S = 1.0


def check_model(model: str | None) -> None:
    if model is not None and model.lower() != MODEL_ID:
        raise ApiError(404, f"model: the model {model!r} does not exist; this service serves {MODEL_ID!r}",
                       param="model", code="model_not_found")


def fill(message, values: dict, prefix: str = "") -> None:
    """Sets proto fields from request values (None: the server default); a refused option names its param
    (under ``prefix`` for a nested message: "sprint.")."""
    try:
        fill_message(message, values)
    except ValueError as err:  # an unknown enum value: "remasking: unknown value …"
        raise ApiError(400, f"{prefix}{err}", param=prefix + str(err).split(":", 1)[0]) from None
    except TypeError as err:  # an unknown option of a nested message
        raise ApiError(400, f"{prefix.rstrip('.') or 'body'}: {err}", param=prefix.rstrip(".") or None) from None


def webhook(spec: dict | None) -> pb.Webhook | None:
    """The service's ``webhook`` extra field ({"url": …, "events": ["started", …]}) as the job's Webhook."""
    try:
        return webhook_message(spec)
    except ValueError as err:  # an unknown event
        raise ApiError(400, f"webhook.{err}", param="webhook.events") from None
    except TypeError as err:
        raise ApiError(400, f"webhook: {err}", param="webhook") from None


def pydantic_error(err: ValidationError) -> ApiError:
    first = err.errors()[0]
    param = field_path(tuple(first.get("loc", ())))
    return ApiError(400, validation_message(first, param), param=param)


def job_param(field: str | None, renames: dict[str, str]) -> str | None:
    """A gateway field ("text_to_image.width") as the OpenAI request named it ("size")."""
    if not field:
        return None
    for prefix in ("text_to_image.", "understand.", "edit."):
        if field.startswith(prefix):
            inner = field.removeprefix(prefix)
            return renames.get(inner, inner)
    return renames.get(field, field)


async def run_job(llada: AsyncLladaClient, message: pb.SubmitJobRequest, request: Request,
                  renames: dict[str, str]) -> pb.Job | JSONResponse:
    """Submits and waits: the terminal Job, or — past http_wait_timeout_s, or once the caller has gone — a 202
    answer naming the job to follow."""
    try:
        job = await llada.submit(message)
    except LladaError as err:
        raise _renamed(ApiError.from_llada(err), renames) from None
    waiting = asyncio.ensure_future(llada.wait(job.id))
    left = asyncio.ensure_future(_caller_left(request))
    done, _ = await asyncio.wait({waiting, left}, timeout=request.app.state.settings.http_wait_timeout_s,
                                 return_when=asyncio.FIRST_COMPLETED)
    for task in (waiting, left):
        task.cancel()
    await asyncio.gather(waiting, left, return_exceptions=True)  # the watch stream is closed before we go on
    if waiting not in done or waiting.cancelled():
        job = await llada.get(job.id)
        if not is_terminal(job):
            return pending_response(job)
    else:
        job = waiting.result()  # a LladaError of the watch (the job deleted meanwhile) is the answer
    check_succeeded(job, renames)
    return job


async def _caller_left(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


def pending_response(job: pb.Job) -> JSONResponse:
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
    body = {"id": job.id, "object": "llada.job", "state": state, "queue_position": job.queue_position,
            "url": f"/v1/jobs/{job.id}", "events_url": f"/v1/jobs/{job.id}/events",
            "message": f"job {job.id} is still {state}: follow it at /v1/jobs/{job.id}"}
    return JSONResponse(body, status_code=202, headers={JOB_ID_HEADER: job.id, "Location": f"/v1/jobs/{job.id}"})


def check_succeeded(job: pb.Job, renames: dict[str, str]) -> None:
    if job.state == pb.JOB_STATE_SUCCEEDED:
        return
    headers = {JOB_ID_HEADER: job.id}
    if job.state == pb.JOB_STATE_FAILED:
        code = job.error.code or "INTERNAL"
        status = 400 if job.error.field or code == "INVALID_ARGUMENT" else 500
        param = job_param(job.error.field, renames)
        raise ApiError(status, f"job {job.id} failed: {job.error.message}", param=param, code=code.lower(),
                       headers=headers)
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
    raise ApiError(409, f"job {job.id} ended {state}", code=state.lower(), headers=headers)


def _renamed(error: ApiError, renames: dict[str, str]) -> ApiError:
    param = job_param(error.param, renames)
    if param and error.param and param != error.param:
        error.message = error.message.replace(error.param, param, 1)
    error.param = param
    return error

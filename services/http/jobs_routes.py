"""The job API as JSON: JobService's RPCs as HTTP routes, bodies in the proto's canonical JSON mapping.

  POST   /v1/jobs                 SubmitJobRequest → Job (202, Location: /v1/jobs/{id}); Idempotency-Key → request_id
  GET    /v1/jobs/{id}            Job
  GET    /v1/jobs                 ?state=&kind=&page_size=&page_token= → ListJobsResponse
  POST   /v1/jobs/{id}:cancel     Job
  DELETE /v1/jobs/{id}            DeleteJobResponse
  GET    /v1/jobs/{id}/events     server-sent events: one Job per change until a terminal state
  GET    /v1/jobs/{id}/output     the result: the image (a redirect to its presigned URL), or an answer's text
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from client.async_client import AsyncLladaClient
from client.errors import LladaError
from client.jobs import parse_kind, parse_state
from services.http.caller import gateway, idempotency_key
from services.http.errors import ApiError, error_json
from services.http.outputs import media_type, output_object, read_output
from services.http.proto_json import parse_body, proto_response, to_json
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# EventSource reconnects after this many milliseconds when a stream breaks (a gateway or front door restart).
SSE_RETRY_MS = 1000
# A comment line this often keeps proxies from closing a quiet stream (a job waiting in a long queue).
SSE_PING_S = 15


# These two run once, at import, to describe the routes in the OpenAPI document (tests/http/test_http_service.py
# validates replies against it). mutmut turns a mutant on only while a test runs, after the import, so their
# mutants could never be judged: they are not made (issue 21).
def _json_content(name: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}  # pragma: no mutate


def _responses(name: str, status: int = 200) -> dict:  # pragma: no mutate
    return {str(status): {"description": name, **_json_content(name)}}  # pragma: no mutate


@router.post("", status_code=202, summary="Submit a job",
             openapi_extra={"requestBody": {"required": True, **_json_content("SubmitJobRequest")},
                            "responses": _responses("Job", 202)})
async def submit_job(request: Request, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    message = parse_body(await request.body(), pb.SubmitJobRequest)
    key = idempotency_key(request)
    if key and message.request_id and key != message.request_id:
        raise ApiError(400, "request_id: differs from the Idempotency-Key header; send one of them",
                       param="request_id")
    message.request_id = message.request_id or key
    job = await llada.submit(message)
    return proto_response(job, 202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("", summary="List the caller's jobs, newest first",
            openapi_extra={"responses": _responses("ListJobsResponse")})
async def list_jobs(state: str | None = None, kind: str | None = None, page_size: int = 0, page_token: str = "",
                    llada: AsyncLladaClient = Depends(gateway)) -> Response:
    _check_enum(parse_state, state, "state")
    _check_enum(parse_kind, kind, "kind")
    page = await llada.list(state=state or None, kind=kind or None, page_size=page_size, page_token=page_token)
    return proto_response(pb.ListJobsResponse(jobs=page.jobs, next_page_token=page.next_page_token))


def _check_enum(parse, value: str | None, param: str) -> None:
    if not value:
        return
    try:
        parse(value)
    except ValueError:
        raise ApiError(400, f"{param}: unknown value {value!r}", param=param) from None


@router.get("/{job_id}", summary="Get a job", openapi_extra={"responses": _responses("Job")})
async def get_job(job_id: str, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    return proto_response(await llada.get(job_id))


@router.post("/{job_id}:cancel", summary="Cancel a job", openapi_extra={"responses": _responses("Job")})
async def cancel_job(job_id: str, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    return proto_response(await llada.cancel(job_id))


@router.delete("/{job_id}", summary="Delete a job, its input and its results",
               openapi_extra={"responses": _responses("DeleteJobResponse")})
async def delete_job(job_id: str, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    await llada.delete(job_id)
    return proto_response(pb.DeleteJobResponse(job_id=job_id))


def snapshot_id(job: pb.Job) -> str:
    """The event id of a snapshot: a digest of what it says. Presigned URLs are left out (they are signed afresh on
    every read), so the same state reads as the same id on any front-door replica, before and after a reconnect."""
    stable = pb.Job()
    stable.CopyFrom(job)
    for obj in stable.outputs.objects:
        obj.ClearField("url")
        obj.ClearField("url_expires_at")
    return hashlib.sha256(stable.SerializeToString(deterministic=True)).hexdigest()[:20]


@router.get("/{job_id}/events", summary="Follow a job as server-sent events",
            description="One `job` event (data: the Job as JSON, id: a digest of it) per change, the current "
                        "snapshot first, ending after a terminal state. A client that reconnects with "
                        "`Last-Event-ID` resumes without the snapshot it already has: the first event is the "
                        "job as it is now. A failure mid-stream ends it with an `error` event (OpenAI's error shape).",
            response_class=Response,
            responses={"200": {"description": "an event stream", "content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    last_seen = request.headers.get("last-event-id")
    snapshots = llada.watch(job_id)
    try:
        # The first snapshot before the status line: a bad id, a missing job, a bad key or no free watch slot
        # is an HTTP error, not an event.
        first = await anext(snapshots)
    except BaseException:
        await snapshots.aclose()
        raise

    async def events():
        job = first
        try:
            if snapshot_id(job) != last_seen:
                yield _job_event(job)
            async for job in snapshots:
                yield _job_event(job)
        except LladaError as err:
            yield ServerSentEvent(data=error_json(ApiError.from_llada(err)), event="error")
        finally:
            await snapshots.aclose()  # the gateway's watch slot is given back as the client goes

    return EventSourceResponse(events(), ping=SSE_PING_S)


def _job_event(job: pb.Job) -> ServerSentEvent:
    return ServerSentEvent(data=to_json(job), event="job", id=snapshot_id(job), retry=SSE_RETRY_MS)


@router.get("/{job_id}/output", summary="A finished job's result",
            description="An image job's image (`name`, default `image`): a redirect to its presigned URL, or the "
                        "bytes where the object store has no http URL (the embedded stack). An understanding "
                        "job's answer as text/plain. 409 while the job has not succeeded.",
            response_class=Response,
            responses={"200": {"description": "the result", "content": {"image/png": {}, "text/plain": {}}},
                       "307": {"description": "the presigned URL of the result"}})
async def job_output(job_id: str, name: str = "image", llada: AsyncLladaClient = Depends(gateway)) -> Response:
    job = await llada.get(job_id)
    if job.state != pb.JOB_STATE_SUCCEEDED:
        state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
        raise ApiError(409, f"job_id: job {job.id} is {state}; it has no result yet", param="job_id",
                       code="failed_precondition")
    if job.kind == pb.JOB_KIND_UNDERSTAND:
        return PlainTextResponse(job.outputs.text)
    obj = output_object(job, name)
    if obj.url.startswith(("https://", "http://")):
        return RedirectResponse(obj.url, status_code=307)
    return Response(await read_output(obj), media_type=media_type(obj))

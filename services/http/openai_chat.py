"""OpenAI's Chat Completions for image understanding: one user message holding a question and one image, as
an UNDERSTAND job. ``max_tokens`` (or ``max_completion_tokens``) is the answer's gen_length; with ``stream``
the answer comes as chat.completion.chunk server-sent events.

Decoding is deterministic (confidence-ordered unmasking, docs/model.md §3.4): ``temperature`` and ``top_p`` are
accepted for the clients that always send them, and change nothing."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse

from client.async_client import AsyncLladaClient
from client.errors import LladaError
from client.jobs import is_terminal
from services.http.caller import gateway, idempotency_key
from services.http.errors import ApiError, error_json
from services.http.openai_jobs import (JOB_ID_HEADER, MODEL_ID, check_model, check_succeeded, fill, run_job,
                                       webhook)
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

router = APIRouter(prefix="/v1/chat", tags=["openai"])


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageUrl


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart | ImagePart]
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's fields, then the service's own understanding parameters."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    steps: int | None = None
    block_length: int | None = None
    threshold: float | None = None
    sprint: dict | None = None
    webhook: dict | None = None


# Gateway fields as this request names them.
CHAT_PARAMS = {"question": "messages", "image": "messages", "gen_length": "max_tokens"}


def _question_and_image(messages: list[ChatMessage]) -> tuple[str, bytes]:
    if len(messages) != 1 or messages[0].role != "user":
        raise ApiError(400, "messages: send exactly one message, from the user: the model answers one question "
                            "about one image (no system prompt, no history)", param="messages")
    content = messages[0].content
    if isinstance(content, str):
        raise ApiError(400, "messages[0].content: needs one image_url part beside the text",
                       param="messages[0].content")
    texts = [part.text for part in content if isinstance(part, TextPart)]
    images = [(i, part) for i, part in enumerate(content) if isinstance(part, ImagePart)]
    if len(images) != 1:
        raise ApiError(400, f"messages[0].content: needs exactly one image_url part, got {len(images)}",
                       param="messages[0].content")
    index, part = images[0]
    return "\n".join(texts), _data_uri_bytes(part.image_url.url, f"messages[0].content[{index}].image_url.url")


def _data_uri_bytes(url: str, param: str) -> bytes:
    if not url.startswith("data:"):
        raise ApiError(400, f"{param}: the service fetches nothing from the network; send the image inline as a "
                            "data: URI (data:image/png;base64,…)", param=param)
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        raise ApiError(400, f"{param}: expected a base64 data: URI", param=param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: the data: URI is not valid base64", param=param) from None


def _submit_request(body: ChatCompletionRequest, request: Request) -> pb.SubmitJobRequest:
    check_model(body.model)
    if body.n != 1:
        raise ApiError(400, "n: one answer per request", param="n")
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise ApiError(400, "max_completion_tokens: send max_tokens or max_completion_tokens, not both",
                       param="max_completion_tokens")
    question, image = _question_and_image(body.messages)
    message = pb.SubmitJobRequest(request_id=idempotency_key(request), webhook=webhook(body.webhook))
    gen_length = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens
    fill(message.understand, {"image": image, "question": question, "gen_length": gen_length, "steps": body.steps,
                              "block_length": body.block_length, "threshold": body.threshold})
    if body.sprint is not None:
        fill(message.understand.sprint, body.sprint, "sprint.")
    return message


def _completion(job: pb.Job) -> dict:
    return {"id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": job.created_at.seconds,
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": job.outputs.text},
                         "finish_reason": "stop", "logprobs": None}]}


def _chunk(completion_id: str, created: int, delta: dict, finish_reason: str | None = None) -> str:
    return json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]})


@router.post("/completions", summary="Answer a question about an image",
             responses={"202": {"description": "still running past the wait: the job to follow"}})
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 llada: AsyncLladaClient = Depends(gateway)) -> Response:
    message = _submit_request(body, request)
    timeout_s = request.app.state.settings.http_wait_timeout_s
    if not body.stream:
        job = await run_job(llada, message, request, CHAT_PARAMS)
        if isinstance(job, Response):
            return job
        return JSONResponse(_completion(job), headers={JOB_ID_HEADER: job.id})
    # Streaming: the submit's refusals are still plain HTTP errors; after that the status is 200 and the
    # outcome travels in the stream.
    try:
        submitted = await llada.submit(message)
    except LladaError as err:
        raise ApiError.from_llada(err) from None
    return EventSourceResponse(_stream(llada, submitted, timeout_s), headers={JOB_ID_HEADER: submitted.id},
                               ping=15)


async def _stream(llada: AsyncLladaClient, submitted: pb.Job, timeout_s: float):
    """The answer as chat.completion.chunk events: a delta each time the job's answer grows (its blocks settle
    on the worker), the rest when it succeeds, then the stop chunk and [DONE]. A failure, a cancel or the wait
    running out ends the stream with an error event instead (OpenAI's shape; the openai client raises it)."""
    completion_id, created = f"chatcmpl-{submitted.id}", submitted.created_at.seconds or int(time.time())
    yield {"data": _chunk(completion_id, created, {"role": "assistant", "content": ""})}
    sent = ""
    try:
        async with asyncio.timeout(timeout_s):
            async for job in llada.watch(submitted.id):
                if is_terminal(job):
                    check_succeeded(job, CHAT_PARAMS)
                text = job.outputs.text
                if text.startswith(sent) and len(text) > len(sent):
                    yield {"data": _chunk(completion_id, created, {"content": text[len(sent):]})}
                    sent = text
                elif is_terminal(job) and not text.startswith(sent):
                    # A retried attempt answered differently from the one already streamed: say so.
                    raise ApiError(500, f"job {job.id} was retried and its answer differs from the part already "
                                        f"sent; read the whole answer at /v1/jobs/{job.id}", code="aborted")
                if is_terminal(job):
                    break
    except TimeoutError:
        error = ApiError(504, f"job {submitted.id} is still running after {timeout_s:.0f} s: follow it at "
                              f"/v1/jobs/{submitted.id}", code="deadline_exceeded")
        yield {"data": error_json(error)}
        return
    except LladaError as err:
        yield {"data": error_json(ApiError.from_llada(err))}
        return
    except ApiError as err:
        yield {"data": error_json(err)}
        return
    yield {"data": _chunk(completion_id, created, {}, "stop")}
    yield {"data": "[DONE]"}

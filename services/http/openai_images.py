"""OpenAI's Images API: ``POST /v1/images/generations`` (text-to-image) and ``POST /v1/images/edits`` (editing),
each a normal job waited for. The service's own options travel as extra fields (the openai client's
``extra_body``); a field OpenAI has and this service cannot honour (``n`` > 1, a ``mask``) is refused by name."""

from __future__ import annotations

import base64
import re
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from client.async_client import AsyncLladaClient
from services.http.caller import gateway, idempotency_key
from services.http.errors import ApiError
from services.http.openai_jobs import JOB_ID_HEADER, check_model, fill, pydantic_error, run_job, webhook
from services.http.outputs import output_object, read_output
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

router = APIRouter(prefix="/v1/images", tags=["openai"])

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# Gateway fields as the OpenAI requests name them.
GENERATION_PARAMS = {"prompt": "prompt", "width": "size", "height": "size"}
EDIT_PARAMS = {"instruction": "prompt", "image": "image"}


class _ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int = 1
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = None  # OpenAI's end-user id for abuse monitoring: accepted, not used
    seed: int | None = None
    steps: int | None = None
    decoder: Literal["turbo", "normal"] | None = None
    decoder_steps: int | None = None
    # Called as the job starts, moves and ends, as for the job API: {"url": …, "events": ["completed", …]}.
    webhook: dict | None = None


class ImageGenerationRequest(_ImageRequest):
    """OpenAI's fields, then the service's own (docs: the text-to-image parameters of the job API)."""

    size: str | None = Field(default=None, description='"WxH" in pixels, or "auto" (the server default)')
    cfg_scale: float | None = None
    mode: Literal["normal", "thinking"] | None = None
    thinking_steps: int | None = None
    thinking_gen_length: int | None = None
    block_length: int | None = None
    resolution_multiplier: int | None = None
    sprint: dict | None = None


class ImageEditRequest(_ImageRequest):
    """The form fields beside ``image``. An edit keeps the input's framing: ``size`` may only be "auto"."""

    size: Literal["auto"] | None = None
    cfg_text_scale: float | None = None
    cfg_image_scale: float | None = None
    block_length: int | None = None
    resolution_multiplier: int | None = None


def _check_common(body: _ImageRequest) -> None:
    check_model(body.model)
    if body.n != 1:
        raise ApiError(400, "n: this service makes one image per request; send more requests for more images",
                       param="n")


def _size(size: str | None) -> dict:
    if size is None or size == "auto":
        return {}
    match = _SIZE.match(size)
    if not match:
        raise ApiError(400, f"size: expected 'WIDTHxHEIGHT' in pixels or 'auto', got {size!r}", param="size")
    return {"width": int(match.group(1)), "height": int(match.group(2))}


async def _image_response(job: pb.Job, response_format: str, request: Request) -> Response:
    obj = output_object(job)
    if response_format == "url":
        item = {"url": obj.url}
    else:
        dial = request.app.state.settings.http_object_store_address
        item = {"b64_json": base64.b64encode(await read_output(obj, dial)).decode()}
    if job.outputs.thinking_text:
        item["revised_prompt"] = job.outputs.thinking_text  # the thinking pass, where the request asked for one
    return JSONResponse({"created": job.created_at.seconds, "data": [item]}, headers={JOB_ID_HEADER: job.id})


@router.post("/generations", summary="Create an image (text-to-image)",
             responses={"202": {"description": "still running past the wait: the job to follow"}})
async def create_image(body: ImageGenerationRequest, request: Request,
                       llada: AsyncLladaClient = Depends(gateway)) -> Response:
    _check_common(body)
    params = body.model_dump(exclude={"model", "n", "response_format", "user", "size", "sprint", "webhook"},
                             exclude_none=True)
    message = pb.SubmitJobRequest(request_id=idempotency_key(request), webhook=webhook(body.webhook))
    fill(message.text_to_image, {**params, **_size(body.size)})
    if body.sprint is not None:
        fill(message.text_to_image.sprint, body.sprint, "sprint.")
    job = await run_job(llada, message, request, GENERATION_PARAMS)
    if isinstance(job, Response):
        return job
    return await _image_response(job, body.response_format, request)


EDIT_FORM_SCHEMA = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "prompt"],
        "properties": {"image": {"type": "string", "format": "binary",
                                 "description": "one PNG, JPEG or WebP image (as `image` or `image[]`)"},
                       **{name: {"type": "string"} for name in ImageEditRequest.model_fields
                          if name not in ("prompt", "webhook")},
                       "webhook[url]": {"type": "string"},
                       "webhook[events][]": {"type": "array", "items": {"type": "string"}},
                       "prompt": {"type": "string", "description": "the edit instruction"}}}}},
}


async def _edit_form(request: Request) -> tuple[bytes, ImageEditRequest]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "an edit is a multipart/form-data request with the image as a file")
    form = await request.form(max_files=2)
    images = [value for key in ("image", "image[]") for value in form.getlist(key)]
    if "mask" in form:
        raise ApiError(400, "mask: masks are not supported; the instruction says what to change", param="mask")
    if len(images) != 1 or not isinstance(images[0], UploadFile):
        raise ApiError(400, "image: send exactly one image file", param="image")
    # A nested field arrives flattened, as the openai client sends it: webhook[url], webhook[events][].
    fields = {key: value for key, value in form.multi_items()
              if key not in ("image", "image[]") and not key.startswith("webhook[")}
    if "webhook[url]" in form or "webhook[events][]" in form:
        fields["webhook"] = {"url": form.get("webhook[url]", ""), "events": form.getlist("webhook[events][]")}
    try:
        body = ImageEditRequest.model_validate(fields)
    except ValidationError as err:
        raise pydantic_error(err) from None
    return await images[0].read(), body


@router.post("/edits", summary="Edit an image", openapi_extra={"requestBody": EDIT_FORM_SCHEMA},
             responses={"202": {"description": "still running past the wait: the job to follow"}})
async def edit_image(request: Request, llada: AsyncLladaClient = Depends(gateway)) -> Response:
    image, body = await _edit_form(request)
    _check_common(body)
    params = body.model_dump(exclude={"model", "n", "response_format", "user", "size", "prompt", "webhook"},
                             exclude_none=True)
    message = pb.SubmitJobRequest(request_id=idempotency_key(request), webhook=webhook(body.webhook))
    fill(message.edit, {"image": image, "instruction": body.prompt, **params})
    job = await run_job(llada, message, request, EDIT_PARAMS)
    if isinstance(job, Response):
        return job
    return await _image_response(job, body.response_format, request)

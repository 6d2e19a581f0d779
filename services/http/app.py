"""The front door's ASGI app: the job API as JSON, OpenAI's Images and Chat Completions, the dashboard at ``/``,
``/healthz`` and ``/readyz``, and the OpenAPI document at ``/openapi.json`` (``/docs`` renders it)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from client.async_client import AsyncLladaClient
from services.http import errors, jobs_routes, models_route, openai_chat, openai_images
from services.http.metrics import RequestMetrics
from services.http.proto_json import message_schemas
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.settings import Settings

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
# Unary gateway calls (submit, get, list, cancel, delete); a wait for a job is bounded by http_wait_timeout_s.
GATEWAY_CALL_TIMEOUT_S = 30.0
READY_CHECK_TIMEOUT_S = 2.0


def gateway_target(settings: Settings) -> str:
    """http_gateway, else the gateway's own listen address (a wildcard host read as this machine)."""
    if settings.http_gateway:
        return settings.http_gateway
    host, _, port = settings.grpc_listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else settings.grpc_listen


def gateway_client(settings: Settings) -> AsyncLladaClient:
    # api_key="": the front door has no key of its own; each request sends its caller's (with_api_key).
    return AsyncLladaClient(gateway_target(settings), api_key="", root_certificates=settings.http_gateway_ca_file,
                            timeout=GATEWAY_CALL_TIMEOUT_S, max_message_bytes=settings.http_max_body_bytes)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The gRPC channel belongs to the serving event loop: made here, closed when the server stops.
        app.state.gateway = gateway_client(settings)
        try:
            yield
        finally:
            await app.state.gateway.close()

    app = FastAPI(title="llada-serve", version="1", lifespan=lifespan,
                  summary="LLaDA2.0-Uni jobs over HTTP: the job API as JSON, and OpenAI's Images and Chat "
                          "Completions. Authenticate with `Authorization: Bearer <API key>`.")
    app.state.settings = settings
    errors.install(app)
    for module in (jobs_routes, openai_images, openai_chat, models_route):
        app.include_router(module.router)
    _add_health_routes(app)
    _add_dashboard(app)
    app.openapi = lambda: _openapi(app)
    # A body past the limit is refused with 413 as it arrives (Starlette's limit), before it is held in memory.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.http_max_body_bytes)
    app.add_middleware(DeclaredBodyLimit, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app


class DeclaredBodyLimit:
    """A body whose Content-Length is already past the limit gets 413 in the error shape of every other refusal
    (Starlette's limit, which stops the bodies that only grow past it, answers these in plain text)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        declared = dict(scope.get("headers", ())).get(b"content-length", b"") if scope["type"] == "http" else b""
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = errors.ApiError(413, f"the request body exceeds {self.max_bytes} bytes (http_max_body_bytes)")
            return await errors.error_response(refusal)(scope, receive, send)
        await self.app(scope, receive, send)


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}  # the process answers: all a liveness probe asks

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready while the gateway answers SERVING: without it every route would fail."""
        serving = await app.state.gateway.serving(READY_CHECK_TIMEOUT_S)
        return JSONResponse({"status": "ok" if serving else "gateway not serving"}, status_code=200 if serving else 503)


def _add_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")


ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"], "description": "the offending request field"},
        "code": {"type": "string", "description": "the gateway's status in lower case, e.g. invalid_argument"}}}},
}


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with the proto messages the job API's routes take and give (proto_json), and the one
    error shape every refusal has (FastAPI's own 422 never happens: a bad request is a 400)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        components["Error"] = ERROR_SCHEMA
        for message in (pb.SubmitJobRequest, pb.Job, pb.ListJobsResponse, pb.DeleteJobResponse):
            message_schemas(message.DESCRIPTOR, components)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                operation["responses"]["default"] = {"description": "an error", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        app.openapi_schema = schema
    return app.openapi_schema

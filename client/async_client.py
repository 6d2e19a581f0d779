"""asyncio SDK: ``AsyncLladaClient``, the same methods as ``LladaClient`` as coroutines."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import messages as build
from client.connection import (DEFAULT_MAX_MESSAGE_BYTES, auth_metadata, channel_options, credentials,
                               resolve_target)
from client.errors import LladaError, from_rpc_error
from client.jobs import is_terminal, parse_kind, parse_state
from client.results import download_outputs
from client.sync_client import WATCH_RECONNECT_DELAY_S, WATCH_RECONNECTS, JobPage
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc


class AsyncLladaClient:
    """Use as ``async with AsyncLladaClient(server, api_key) as llada: ...``. ``api_key`` and
    ``request_id`` mean what they mean for ``LladaClient``: None takes $LLADA_API_KEY, ``""`` sends no
    key; a reused ``request_id`` returns the first job for the same request and raises
    ``LladaError("ALREADY_EXISTS", field="request_id")`` for a different one."""

    def __init__(self, server: str | None = None, api_key: str | None = None, *, tls: bool = False,
                 root_certificates=None, timeout: float | None = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        server, api_key = resolve_target(server, api_key)
        options = channel_options(max_message_bytes)
        if tls or root_certificates is not None:
            self._channel = grpc.aio.secure_channel(server, credentials(root_certificates), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(server, options=options)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._metadata = auth_metadata(api_key)
        self._timeout = timeout

    def with_api_key(self, api_key: str | None) -> "AsyncLladaClient":
        """The same client for another key, over this one's channel: a front end serving many callers keeps
        one channel and sends each request with its caller's key. ``None`` or ``""`` sends no key. Closing
        any of them closes the shared channel."""
        other = copy.copy(self)
        other._metadata = auth_metadata(api_key or None)
        return other

    async def serving(self, timeout: float = 2.0) -> bool:
        """Whether the gateway's gRPC health check answers SERVING within ``timeout`` seconds."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)  # the server as a whole
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncLladaClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, method, request):
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def submit(self, request: pb.SubmitJobRequest) -> pb.Job:
        return await self._call(self._stub.SubmitJob, request)

    async def submit_text_to_image(self, prompt: str, *, request_id: str | None = None, priority: int = 0,
                                   **params) -> pb.Job:
        return await self.submit(build.text_to_image_request(prompt, request_id=request_id,
                                                             priority=priority, **params))

    async def submit_understand(self, image, question: str, *, request_id: str | None = None,
                                priority: int = 0, **params) -> pb.Job:
        # Reading a local file is quick next to the upload; not worth a thread hop.
        return await self.submit(build.understand_request(image, question, request_id=request_id,
                                                          priority=priority, **params))

    async def submit_edit(self, image, instruction: str, *, request_id: str | None = None, priority: int = 0,
                          **params) -> pb.Job:
        return await self.submit(build.edit_request(image, instruction, request_id=request_id,
                                                    priority=priority, **params))

    async def get(self, job_id: str) -> pb.Job:
        return await self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    async def list(self, *, state: str | None = None, kind: str | None = None, page_size: int = 0,
                   page_token: str = "") -> JobPage:
        request = pb.ListJobsRequest(page_size=page_size, page_token=page_token,
                                     state=parse_state(state) if state else 0,
                                     kind=parse_kind(kind) if kind else 0)
        response = await self._call(self._stub.ListJobs, request)
        return JobPage(list(response.jobs), response.next_page_token)

    async def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[pb.Job]:
        """Snapshots until (and including) a terminal one; re-opens a broken stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        last = None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                call = self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=self._metadata,
                                           timeout=remaining)
                try:
                    async for job in call:
                        failures = 0
                        if job == last:  # a resumed stream starts with the snapshot we already have
                            continue
                        last = job
                        yield job
                        if is_terminal(job):
                            return
                finally:
                    # Also when the caller stops iterating early (closes this generator, or is cancelled): the
                    # stream holds one of the tenant's watch slots on the gateway until it is cancelled.
                    call.cancel()
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(err) from None
            failures += 1
            if failures > WATCH_RECONNECTS:
                raise LladaError("UNAVAILABLE", f"watch of job {job_id} kept breaking")
            await asyncio.sleep(WATCH_RECONNECT_DELAY_S)

    async def wait(self, job_id: str, *, progress: Callable[[pb.Job], Awaitable[None] | None] | None = None,
                   timeout: float | None = None) -> pb.Job:
        """Until terminal; ``progress`` (a function or a coroutine function) sees every snapshot."""
        async for job in self.watch(job_id, timeout=timeout):
            if progress is not None:
                result = progress(job)
                if asyncio.iscoroutine(result):
                    await result
        return job  # watch ends with the terminal snapshot, or raises

    async def cancel(self, job_id: str) -> pb.Job:
        return await self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))

    async def delete(self, job_id: str) -> None:
        await self._call(self._stub.DeleteJob, pb.DeleteJobRequest(job_id=job_id))

    async def download(self, job: pb.Job | str, dest) -> list:
        if isinstance(job, str):
            job = await self.get(job)
        # urllib blocks: keep the event loop free.
        return await asyncio.to_thread(download_outputs, job, dest)

"""Blocking SDK: ``LladaClient``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import grpc

from client import messages as build
from client.connection import (DEFAULT_MAX_MESSAGE_BYTES, auth_metadata, channel_options, credentials,
                               resolve_target)
from client.errors import LladaError, from_rpc_error
from client.jobs import is_terminal, parse_kind, parse_state
from client.results import download_outputs
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc

# A watch stream that breaks (server restart, proxy timeout) is re-opened this many times in a row;
# WatchJob always starts with the current snapshot, so resuming loses nothing.
WATCH_RECONNECTS = 5
WATCH_RECONNECT_DELAY_S = 0.5
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class JobPage(NamedTuple):
    jobs: list[pb.Job]
    next_page_token: str


class LladaClient:
    """Talks to a llada-serve gateway (``server``/``api_key`` default to $LLADA_SERVER/$LLADA_API_KEY,
    then 127.0.0.1:50051 and no key; an explicit ``api_key=""`` sends no key, whatever the environment
    holds). Jobs are ``shared.proto...jobs_pb2.Job`` messages; failures raise ``LladaError`` (with ``code``
    and, for refused input, ``field``).

    ``request_id`` (every ``submit_*``) is an idempotency key, unique per tenant: submitting again with
    the same id and the same request (kind, parameters after defaults, input image bytes) returns the
    job the first submit created, so a retry after a lost answer never runs twice; the same id with a
    different request raises ``LladaError("ALREADY_EXISTS", field="request_id")``. At most 128
    printable characters."""

    def __init__(self, server: str | None = None, api_key: str | None = None, *, tls: bool = False,
                 root_certificates=None, timeout: float | None = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        server, api_key = resolve_target(server, api_key)
        options = channel_options(max_message_bytes)
        if tls or root_certificates is not None:
            self._channel = grpc.secure_channel(server, credentials(root_certificates), options=options)
        else:
            self._channel = grpc.insecure_channel(server, options=options)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        self._metadata = auth_metadata(api_key)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "LladaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # --- submit -------------------------------------------------------------------------------
    def submit(self, request: pb.SubmitJobRequest) -> pb.Job:
        return self._call(self._stub.SubmitJob, request)

    def submit_text_to_image(self, prompt: str, *, request_id: str | None = None, priority: int = 0,
                             **params) -> pb.Job:
        """Parameters as in ``TextToImageParams`` (width, height, steps, cfg_scale, seed, mode="thinking",
        decoder="normal", sprint={"enabled": True, ...}, ...); left out = server default. Every submit also takes
        ``webhook="https://…"`` or ``webhook={"url": …, "events": ["started", "progress", "completed"]}``."""
        return self.submit(build.text_to_image_request(prompt, request_id=request_id, priority=priority,
                                                       **params))

    def submit_understand(self, image, question: str, *, request_id: str | None = None, priority: int = 0,
                          **params) -> pb.Job:
        """``image``: encoded bytes or a file path."""
        return self.submit(build.understand_request(image, question, request_id=request_id,
                                                    priority=priority, **params))

    def submit_edit(self, image, instruction: str, *, request_id: str | None = None, priority: int = 0,
                    **params) -> pb.Job:
        return self.submit(build.edit_request(image, instruction, request_id=request_id,
                                              priority=priority, **params))

    # --- read -----------------------------------------------------------------------------------
    def get(self, job_id: str) -> pb.Job:
        return self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    def list(self, *, state: str | None = None, kind: str | None = None, page_size: int = 0,
             page_token: str = "") -> JobPage:
        request = pb.ListJobsRequest(page_size=page_size, page_token=page_token,
                                     state=parse_state(state) if state else 0,
                                     kind=parse_kind(kind) if kind else 0)
        response = self._call(self._stub.ListJobs, request)
        return JobPage(list(response.jobs), response.next_page_token)

    def iter_jobs(self, *, state: str | None = None, kind: str | None = None,
                  page_size: int = 0) -> Iterator[pb.Job]:
        """Every job of the caller, page after page."""
        token = ""
        while True:
            page = self.list(state=state, kind=kind, page_size=page_size, page_token=token)
            yield from page.jobs
            if not page.next_page_token:
                return
            token = page.next_page_token

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[pb.Job]:
        """Snapshots of the job until (and including) a terminal one; re-opens a broken stream.
        ``timeout`` bounds the whole watch (None: as long as the job takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        last = None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                stream = self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=self._metadata,
                                             timeout=remaining)
                try:
                    for job in stream:
                        failures = 0
                        if job == last:  # a resumed stream starts with the snapshot we already have
                            continue
                        last = job
                        yield job
                        if is_terminal(job):
                            return
                finally:
                    stream.cancel()  # as the async client: a caller that stops early frees its watch slot
                # The server closed the stream without a terminal snapshot (e.g. shutting down): resume.
            except grpc.RpcError as err:
                if err.code() not in _RETRYABLE:
                    raise from_rpc_error(err) from None
            failures += 1
            if failures > WATCH_RECONNECTS:
                raise LladaError("UNAVAILABLE", f"watch of job {job_id} kept breaking")
            time.sleep(WATCH_RECONNECT_DELAY_S)

    def wait(self, job_id: str, *, progress: Callable[[pb.Job], None] | None = None,
             timeout: float | None = None) -> pb.Job:
        """Blocks until the job is terminal and returns its final snapshot; ``progress`` sees every
        snapshot. Raises LladaError("DEADLINE_EXCEEDED") after ``timeout`` seconds."""
        for job in self.watch(job_id, timeout=timeout):
            if progress is not None:
                progress(job)
        return job  # watch ends with the terminal snapshot, or raises

    # --- change ---------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> pb.Job:
        return self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id))

    def delete(self, job_id: str) -> None:
        self._call(self._stub.DeleteJob, pb.DeleteJobRequest(job_id=job_id))

    # --- results --------------------------------------------------------------------------------
    def download(self, job: pb.Job | str, dest) -> list:
        """Saves the result objects of a finished job (a Job or its id) under ``dest``; returns the paths.
        Presigned URLs expire, so a job id is re-read for fresh ones."""
        if isinstance(job, str):
            job = self.get(job)
        return download_outputs(job, dest)

"""JobService: the RPCs. Blocking work (database, object store, image decoding) runs in threads so the
event loop keeps serving streams."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from opentelemetry.trace import SpanKind
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.auth import current_tenant
from services.gateway.convert import (KIND_BY_FIELD, kind_from_pb, params_to_dict, state_from_pb,
                                     webhook_from_pb)
from services.gateway.errors import ResourceExhausted, rpc_errors
from services.gateway.fanout import EventFanout
from services.gateway.images import CheckedImage, ImageDecoder, read_image_header
from services.gateway.threads import in_thread, run_to_end
from services.gateway.watch_slots import WatchSlots
from shared import repository as repo
from shared.db.models import Job
from shared.idempotency import request_fingerprint
from shared.ids import validate_job_id, validate_request_id
from shared.job_message import fill_deliveries, job_to_pb
from shared.objectstore import ObjectNotFound, input_key, job_prefixes
from shared.jobs import INPUT_NAMES, InvalidArgument, validate_params, validate_priority
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from shared.settings import Settings
from shared.states import TERMINAL_STATES
from shared.webhooks.deliveries import deliveries_of
from shared.tracing import trace_id_of, traceparent, tracer
from shared.webhooks.secrets import signing_secrets

log = logging.getLogger("llada.gateway")

# Database reads WatchJob streams make at once. A burst — every stream woken when the event bus comes back —
# waits here instead of taking every thread and pooled connection from the unary calls.
WATCH_READ_SLOTS = 8
# Each stream's safety-net poll is spread over ±this fraction of watch_poll_interval_s, so that streams
# opened together do not keep reading the database together.
WATCH_POLL_JITTER = 0.25


# A factory of sessions, each used as `with read_sessions() as s:` (a sessionmaker is one).
ReadSessions = Callable[[], AbstractContextManager[Session]]


@dataclass
class GatewayDeps:
    """What the servicer talks to. ``enqueue(job_id, priority)`` sends the run_job task."""

    settings: Settings
    sessions: sessionmaker
    store: object          # shared.objectstore.ObjectStore
    events: object         # shared.events.EventBus
    enqueue: Callable[[str, int], None]
    # Sessions for the reads of GetJob, ListJobs and WatchJob; None: `sessions`. On Postgres the wiring
    # gives each read one autocommit connection: its statements alone, with no BEGIN and COMMIT round trips.
    read_sessions: ReadSessions | None = None


def _queue_full_message(err: repo.QueueFull) -> str:
    if err.scope == "tenant":
        return f"too many queued jobs for this tenant (limit {err.limit}); retry later"
    return f"the service queue is full (limit {err.limit}); retry later"


class JobServicer(pb_grpc.JobServiceServicer):
    def __init__(self, deps: GatewayDeps):
        self.deps = deps
        self.settings = deps.settings
        # Set on shutdown: open watches end (without a terminal snapshot) so the server need not wait
        # for them; clients re-call WatchJob, which resumes from the current snapshot.
        self.closing = asyncio.Event()
        self.decoder = ImageDecoder(self.settings.max_concurrent_image_decodes)
        self.fanout = EventFanout(deps.events)
        self.watch_slots = WatchSlots(self.settings.max_watches_per_tenant)
        self._watch_reads = asyncio.Semaphore(WATCH_READ_SLOTS)
        # Submits past validation, running to their end whether or not their callers still wait (held
        # here so that they are not garbage-collected once their callers are gone).
        self._submits: set[asyncio.Task] = set()

    async def aclose(self) -> None:
        """After the server stopped. Submits still under way need no wait: cancelled when the loop ends, each
        still leaves a job with its inputs (the reaper re-sends a message it did not send) or nothing
        (see _store_insert_enqueue)."""
        await self.fanout.aclose()

    # --- helpers -------------------------------------------------------------------------------------
    def _db_sync(self, fn, *args, **kwargs):
        with self.deps.sessions() as s:
            return fn(s, *args, **kwargs)

    def _read_sync(self, fn, *args):
        with (self.deps.read_sessions or self.deps.sessions)() as s:
            return fn(s, *args)

    async def _db(self, fn, *args, **kwargs):
        return await asyncio.to_thread(self._db_sync, fn, *args, **kwargs)

    def _presign(self, key: str) -> str:
        try:
            return self.deps.store.presigned_get(key, self.settings.presign_expiry_s)
        except ObjectNotFound:  # listed by the job but gone from the store: show the key without a URL
            log.warning("output object missing", extra={"key": key})
            return ""

    def _to_pb(self, job: Job | repo.JobRow, position: int = 0) -> pb.Job:
        return job_to_pb(job, queue_position=position, presign=self._presign,
                         presign_expiry_s=self.settings.presign_expiry_s)

    def _get_sync(self, s: Session, tenant: str, job_id: str) -> tuple[pb.Job, bool]:
        found = repo.get_job_and_position(s, tenant, job_id)  # one statement, however long the queue
        if found is None:
            raise repo.JobNotFound(job_id)
        job, position = found
        terminal = job.state in {st.value for st in TERMINAL_STATES}
        return self._to_pb(job, position), terminal

    async def _publish(self, job_id: str, event: dict) -> None:
        try:
            await asyncio.to_thread(self.deps.events.publish, job_id, event)
        except Exception:  # watchers fall back to re-reading the database
            log.warning("event publish failed", extra={"job_id": job_id, "event": event}, exc_info=True)

    # --- SubmitJob -----------------------------------------------------------------------------------
    async def SubmitJob(self, request: pb.SubmitJobRequest, context) -> pb.Job:
        # The job's trace starts here (shared.tracing); its context is stored with the job for every attempt.
        with tracer().start_as_current_span("llada.SubmitJob", kind=SpanKind.SERVER) as span:
            job = await self._submit(request, context, traceparent(span))
            span.set_attribute("llada.job_id", job.id)
            return job

    async def _submit(self, request: pb.SubmitJobRequest, context, trace_context: str | None) -> pb.Job:
        tenant = current_tenant()
        async with rpc_errors(context):
            member = request.WhichOneof("params")
            if member is None:
                raise InvalidArgument("params", "unknown or missing job kind: set one of "
                                      + ", ".join(KIND_BY_FIELD))
            kind = KIND_BY_FIELD[member]
            priority = validate_priority(request.priority)
            request_id = validate_request_id(request.request_id)
            webhook = webhook_from_pb(request, allow_http=self.settings.webhook_allow_http)
            if webhook is not None and not await self._db(signing_secrets, tenant):
                raise repo.FailedPrecondition(
                    f"webhook: tenant {tenant!r} has no webhook signing secret, so nothing could be signed; an "
                    f"operator creates one with `llada-server webhook-secret create --tenant {tenant}`")
            message = getattr(request, member)
            try:
                params = validate_params(kind, params_to_dict(message),
                                         max_prompt_chars=self.settings.max_prompt_chars)
            except InvalidArgument as err:
                raise InvalidArgument(f"{member}.{err.field}", err.message) from None
            images: dict[str, CheckedImage] = {}
            for name in INPUT_NAMES[kind]:
                # The header only: an image beyond the limits is refused before anything is decoded.
                images[name] = await asyncio.to_thread(
                    read_image_header, getattr(message, name), field=f"{member}.{name}",
                    max_bytes=self.settings.max_image_bytes)

            params_json = params.model_dump(mode="json")
            # What this request asks for: a reused request_id must ask for the same (shared.idempotency).
            if request_id is None:
                fingerprint = None
            elif images:  # hashing megabytes: off the event loop
                fingerprint = await asyncio.to_thread(request_fingerprint, kind, params_json,
                                                      {name: image.data for name, image in images.items()})
            else:  # a few hundred bytes of parameters: cheaper than a thread hop
                fingerprint = request_fingerprint(kind, params_json, {})
            limits = repo.QueueLimits(per_tenant=self.settings.max_queued_per_tenant,
                                      total=self.settings.max_queued_total)
            if images:
                # Before decoding and uploading images: a retried submit is answered, a full queue refused,
                # without that work (one read; submit_job below still decides atomically).
                try:
                    earlier = await self._db(repo.precheck_submit, tenant=tenant, request_id=request_id,
                                             limits=limits, fingerprint=fingerprint)
                except repo.QueueFull as err:
                    raise ResourceExhausted(_queue_full_message(err)) from None
                if earlier is not None:
                    return await asyncio.to_thread(self._submitted_to_pb, earlier)
                for name, image in images.items():
                    await self.decoder.check(image, field=f"{member}.{name}")

            try:
                submitted = await self._outliving_the_caller(self._store_insert_enqueue(
                    images, tenant=tenant, request_id=request_id, kind=kind,
                    params=params_json, priority=priority, limits=limits, fingerprint=fingerprint,
                    webhook=webhook, trace_context=trace_context))
            except repo.QueueFull as err:
                raise ResourceExhausted(_queue_full_message(err)) from None
            if submitted.created:  # no outputs to presign: build the snapshot here, without a thread hop
                return self._submitted_to_pb(submitted)
            return await asyncio.to_thread(self._submitted_to_pb, submitted)

    async def _outliving_the_caller(self, work) -> repo.Submitted:
        """Awaits ``work`` as a task that goes on when the caller goes away (a deadline, a cancel): cut off
        midway, an insert could commit after its inputs were removed — a QUEUED job that can never run,
        and that a retry would return. So a submit leaves a complete job (row, inputs, message) or nothing."""
        task = asyncio.create_task(work)
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_submit_without_caller)
            raise

    async def _store_insert_enqueue(self, images: dict[str, CheckedImage], *, tenant: str, **submit) -> repo.Submitted:
        job_id = str(uuid.uuid4())
        input_keys = await self._store_inputs(job_id, images)
        insert = in_thread(self._insert_and_enqueue_sync, tenant=tenant, input_keys=input_keys, job_id=job_id,
                           **submit)
        try:
            submitted = await asyncio.shield(insert)
        except BaseException:
            # Cancelled (the process is ending: callers going away do not cancel this task), the insert
            # still runs on in its thread, so its own outcome decides: inputs go only if no row names them.
            await asyncio.wait([insert])
            if insert.exception() is not None:
                await self._remove_objects(list(input_keys.values()))
            raise
        if not submitted.created:  # an earlier submit with the same request_id: answer with its job
            await self._remove_objects(list(input_keys.values()))
        return submitted

    def _insert_and_enqueue_sync(self, **submit) -> repo.Submitted:
        """The insert (repo.submit_job: idempotency lookup — a retry is answered even when the queue is full —,
        both backpressure checks atomic with the insert, queue position), then the run_job message, in one
        thread hop."""
        submitted = self._db_sync(repo.submit_job, **submit)
        if submitted.created:
            job = submitted.job
            trace_id = trace_id_of(job.trace_context)
            log.info("job submitted", extra={"job_id": job.id, "tenant": job.tenant, "kind": job.kind,
                                             "priority": job.priority, **({"trace_id": trace_id} if trace_id else {})})
            try:
                self.deps.enqueue(job.id, job.priority)
            except Exception:
                # The row is committed and QUEUED: the reaper re-sends queued jobs whose message was lost.
                log.exception("enqueue failed; the reaper will re-send", extra={"job_id": job.id})
        return submitted

    def _submitted_to_pb(self, submitted: repo.Submitted) -> pb.Job:
        return self._to_pb(submitted.job, submitted.queue_position)

    async def _store_inputs(self, job_id: str, images: dict[str, CheckedImage]) -> dict[str, str]:
        keys: dict[str, str] = {}
        try:
            for name, image in images.items():
                keys[name] = key = input_key(job_id, f"{name}.{image.extension}")
                # To its end even when cancelled: a put finishing after the clean-up below would stay behind.
                await run_to_end(self.deps.store.put, key, image.data, image.content_type)
        except BaseException:
            await self._remove_objects(list(keys.values()))
            raise
        return keys

    async def _remove_objects(self, keys: list[str]) -> None:
        for key in keys:
            try:
                await asyncio.to_thread(self.deps.store.delete, key)
            except Exception:
                log.warning("could not remove object", extra={"key": key}, exc_info=True)

    # --- reads ---------------------------------------------------------------------------------------
    async def GetJob(self, request: pb.GetJobRequest, context) -> pb.Job:
        tenant = current_tenant()
        async with rpc_errors(context):
            return await asyncio.to_thread(self._read_sync, self._get_with_deliveries_sync, tenant,
                                           validate_job_id(request.job_id))

    def _get_with_deliveries_sync(self, s: Session, tenant: str, job_id: str) -> pb.Job:
        snapshot, _ = self._get_sync(s, tenant, job_id)
        if snapshot.HasField("webhook"):
            fill_deliveries(snapshot, deliveries_of(s, job_id))
        return snapshot

    async def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        tenant = current_tenant()
        async with rpc_errors(context):
            try:
                state = state_from_pb(request.state)
            except ValueError:
                raise InvalidArgument("state", f"unknown job state {request.state}") from None
            try:
                kind = kind_from_pb(request.kind)
            except ValueError:
                raise InvalidArgument("kind", f"unknown job kind {request.kind}") from None

            def page(s: Session) -> pb.ListJobsResponse:
                placed, token = repo.list_jobs_and_positions(s, tenant, state=state, kind=kind,
                                                             page_size=request.page_size,
                                                             page_token=request.page_token or None)
                return pb.ListJobsResponse(jobs=[self._to_pb(job, position) for job, position in placed],
                                           next_page_token=token or "")
            return await asyncio.to_thread(self._read_sync, page)

    async def WatchJob(self, request: pb.WatchJobRequest, context):
        tenant = current_tenant()
        async with rpc_errors(context):
            job_id = validate_job_id(request.job_id)
            with self.watch_slots.hold(tenant):
                # Registered before the first read, so no change between that read and the stream is missed.
                async with self.fanout.listen(job_id) as wake:
                    last = None
                    while True:
                        wake.clear()  # before the read: an event arriving during it wakes the next wait
                        snapshot, terminal = await self._watch_read(tenant, job_id)
                        # URLs are re-signed on every read; compare snapshots without them.
                        unsigned = _without_urls(snapshot)
                        if unsigned != last:
                            last = unsigned
                            yield snapshot
                        if terminal or self.closing.is_set():
                            return
                        await self._wait_for_change(wake)

    async def _watch_read(self, tenant: str, job_id: str) -> tuple[pb.Job, bool]:
        async with self._watch_reads:  # held until the read really ends, even for a stream cancelled meanwhile
            return await run_to_end(self._read_sync, self._get_sync, tenant, job_id)

    async def _wait_for_change(self, wake: asyncio.Event) -> None:
        # Events wake the stream; the poll is the safety net for an event the bus lost (or that a process
        # without a bus never published) and for queue positions, which move without events.
        timeout = watch_poll_timeout(self.settings.watch_poll_interval_s)
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self.closing.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- changes -------------------------------------------------------------------------------------
    async def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.Job:
        tenant = current_tenant()
        async with rpc_errors(context):
            job_id = validate_job_id(request.job_id)

            def cancel(s: Session) -> pb.Job:
                # A cancelled job is never left QUEUED (QUEUED → CANCELLED at once): it has no place in the queue.
                return self._to_pb(repo.request_cancel(s, tenant, job_id))
            snapshot = await self._db(cancel)
            state = pb.JobState.Name(snapshot.state).removeprefix("JOB_STATE_")
            # Workers listen for this to stop between steps; watchers re-read on it.
            await self._publish(job_id, {"type": "cancel", "state": state})
            log.info("cancel requested", extra={"job_id": job_id, "tenant": tenant, "state": state})
            return snapshot

    async def DeleteJob(self, request: pb.DeleteJobRequest, context) -> pb.DeleteJobResponse:
        tenant = current_tenant()
        async with rpc_errors(context):
            job_id = validate_job_id(request.job_id)

            def check_deletable(s: Session) -> None:
                job = repo.get_job(s, tenant, job_id)
                if job is None:
                    raise repo.JobNotFound(job_id)
                if job.state not in {st.value for st in TERMINAL_STATES}:
                    raise repo.FailedPrecondition(f"job {job_id} is {job.state}; cancel it before deleting")
            await self._db(check_deletable)
            # Objects first: a failure here leaves the job visible (and deletable again), never a
            # row-less orphan in the bucket. Its prefixes hold every object its row names (inputs, each
            # attempt's results) and any a fenced-off attempt left behind.
            for prefix in job_prefixes(job_id):
                await asyncio.to_thread(self.deps.store.delete_prefix, prefix)
            await self._db(repo.delete_job, tenant, job_id)
            await self._publish(job_id, {"type": "deleted"})
            log.info("job deleted", extra={"job_id": job_id, "tenant": tenant})
            return pb.DeleteJobResponse(job_id=job_id)


def _log_submit_without_caller(task: asyncio.Task) -> None:
    """The outcome of a submit whose caller went away: nobody else will report it."""
    if task.cancelled():
        return
    err = task.exception()
    if err is None:
        log.info("submit completed after its caller went away", extra={"job_id": task.result().job.id})
    elif not isinstance(err, repo.QueueFull):
        log.error("submit failed after its caller went away; nothing was stored", exc_info=err)


def watch_poll_timeout(interval_s: float, rng: random.Random = random) -> float:
    """How long a stream waits for an event before it re-reads anyway: `interval_s`, ± WATCH_POLL_JITTER of it."""
    return interval_s * rng.uniform(1 - WATCH_POLL_JITTER, 1 + WATCH_POLL_JITTER)


def _without_urls(job: pb.Job) -> pb.Job:
    """The snapshot less its signed URLs (compared as messages: their maps' order does not count)."""
    copy = pb.Job()
    copy.CopyFrom(job)
    for obj in copy.outputs.objects:
        obj.ClearField("url")
        obj.ClearField("url_expires_at")
    return copy



"""Maps the shared layer's exceptions to gRPC status codes, naming the refused field in the message
and in the ``llada-error-field`` trailing metadata (the SDK turns it into ``LladaError.field``)."""

from __future__ import annotations

import contextlib
import logging

import grpc

from shared.db.errors import is_transient_db_error
from shared.jobs import InvalidArgument
from shared.repository import FailedPrecondition, JobNotFound, RequestIdReused
from shared.states import IllegalTransition

ERROR_FIELD_METADATA_KEY = "llada-error-field"
log = logging.getLogger("llada.gateway")


class ResourceExhausted(Exception):
    """Backpressure: too many queued jobs."""


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str,
                field: str | None = None):
    trailers = ((ERROR_FIELD_METADATA_KEY, field),) if field else ()
    await context.abort(code, message, trailing_metadata=trailers)


@contextlib.asynccontextmanager
async def rpc_errors(context: grpc.aio.ServicerContext):
    try:
        yield
    except InvalidArgument as err:
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{err.field}: {err.message}", err.field)
    except JobNotFound as err:
        await abort(context, grpc.StatusCode.NOT_FOUND, f"job {err.job_id} not found", "job_id")
    except RequestIdReused as err:
        await abort(context, grpc.StatusCode.ALREADY_EXISTS, f"request_id: {err}", "request_id")
    except (FailedPrecondition, IllegalTransition) as err:
        await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
    except ResourceExhausted as err:
        await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
    except grpc.aio.AbortError:
        raise
    except Exception as err:
        if is_transient_db_error(err):
            # A passing database outage: the client retries; the host and the SQL stay in the log.
            log.warning("database unavailable", exc_info=True)
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the service is temporarily unavailable; retry")
        # Details stay in the log; the caller gets a status it can retry on, not our internals.
        log.exception("request failed")
        await abort(context, grpc.StatusCode.INTERNAL, "internal error; the request was not completed")

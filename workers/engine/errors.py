"""Errors the engine raises to its caller (the Celery worker) beyond the model's own."""

from __future__ import annotations


class EngineCrashed(ConnectionError):
    """An actor died (process crash, node lost, killed) while it held this job's request.

    Retryable: the actor restarts and reloads its weights, so a later attempt of the same job can succeed.
    It subclasses `ConnectionError` because the worker's `classify_failure` treats that family as an
    infrastructure error to retry rather than a FAILED job.
    """


class PlacementError(RuntimeError):
    """The stage → device map cannot be satisfied by the Ray cluster's resources."""


class PortableInputError(Exception):
    """A `ModelInputError` on its way from an actor to the caller. Ray pickles exceptions by their args and
    `ModelInputError(field, message)` keeps only one, so it cannot travel as itself; the caller turns this
    back into a `ModelInputError` (`workers.engine.calls.unwrap`)."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.field = field
        self.message = message


def portable_errors(method):
    """Decorate an async actor method so the model's input errors reach the caller intact."""
    import functools

    from workers.model.errors import ModelInputError

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except ModelInputError as err:
            raise PortableInputError(err.field, err.message) from None

    return wrapper

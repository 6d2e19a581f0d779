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

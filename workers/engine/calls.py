"""Calling a stage actor from the worker process: wait for the result while relaying progress to the
caller's callback and cancellation to the actor, and turn Ray's errors into the engine's.

The actor's method takes the request key first; the actor answers `progress(key)` and `cancel(key)` while
the call runs (its other calls are served concurrently: async actors).
"""

from __future__ import annotations


import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

from workers.engine.errors import EngineCrashed
from workers.model.hooks import Progress, ShouldCancel

# A progress poll answers in milliseconds; beyond this the actor is busy restarting or gone, and the main
# call will tell which.
POLL_ANSWER_TIMEOUT_S = 2.0


def unwrap(err: RayTaskError) -> BaseException:
    """The exception the actor's method raised (Cancelled, ModelInputError, …), not Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def crashed(stage: str, err: BaseException) -> EngineCrashed:
    return EngineCrashed(f"the {stage} actor died while it held this job ({type(err).__name__}); retry the job")


def call_stage(
    actor,
    method: str,
    key: str,
    *args,
    stage: str,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    settled=None,
    poll_interval_s: float = 0.05,
    **kwargs,
):
    """Run `actor.<method>(key, *args, **kwargs)` to its result; raises what the method raised, or
    `EngineCrashed` when the actor died meanwhile. `settled(ids)` (the denoiser's calls) is told a request's
    settled ids each time they grew between polls."""
    ref = None
    finished = False
    try:
        ref = getattr(actor, method).remote(key, *args, **kwargs)
        last, told = None, 0
        while True:
            ready, _ = ray.wait([ref], timeout=poll_interval_s)
            if ready:
                finished = True
                result = ray.get(ref)
                if progress is not None and (last is None or last[1] < last[2]):
                    # The stage ended between polls: the actor still holds its last progress for this key.
                    final = _poll(actor, key) or last
                    if final is not None and final[2] > 0:
                        progress(final[0], final[2], final[2])  # the finished stage counts as all its steps
                return result
            if should_cancel is not None and should_cancel():
                # Fire and forget, repeated every poll: the actor may not have registered the key yet.
                actor.cancel.remote(key)
            if progress is not None:
                now = _poll(actor, key)
                if now is not None and now != last and now[2] > 0:
                    progress(*now)
                    last = now
            if settled is not None:
                ids = _poll(actor, key, "settled")
                if ids and len(ids) > told:
                    told = len(ids)
                    settled(ids)
    except RayTaskError as err:
        raise unwrap(err) from None
    except (RayActorError, WorkerCrashedError) as err:
        raise crashed(stage, err) from err
    finally:
        if ref is not None and not finished:
            # The caller gave up (its progress callback or cancellation check raised, or the thread is being
            # stopped): free the request's slot instead of leaving it to run for nobody.
            _abandon(actor, key)


def _abandon(actor, key: str) -> None:
    try:
        actor.cancel.remote(key)
    except Exception:  # best effort: the actor may be gone
        pass


def _poll(actor, key: str, method: str = "progress"):
    try:
        return ray.get(getattr(actor, method).remote(key), timeout=POLL_ANSWER_TIMEOUT_S)
    except (GetTimeoutError, RayActorError):
        return None

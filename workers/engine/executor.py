"""`EngineExecutor`: the Pipeline's API (the typed tasks `text_to_image`, `understand`, `edit` and their keyword
forms `generate_image` & co., same result types) served by the Ray engine's replicas, so the Celery worker can
use either.

Arguments are checked here exactly as the Pipeline checks them, before any actor is involved; each call
then goes to the replica with the fewest jobs in flight, waiting while every replica holds `max_inflight`.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import ray
import torch
from PIL import Image

from workers.engine.config import EngineConfig
from workers.engine.placement import device_kind, local_init_resources
from workers.engine.replica import Replica
from workers.model.errors import ModelInputError
from workers.model.hooks import Answer, Progress, ShouldCancel
from workers.model.pipeline import ImageResult, TextResult
from workers.model.tasks import EditTask, KeywordTasks, TextToImageTask, UnderstandTask

# Ray's own telemetry stays off unless the operator sets it (the workers may have no internet access).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def start_ray(config: EngineConfig) -> None:
    """Connect to `config.ray_address`, or start a local Ray instance; no-op when Ray is already up.

    A local instance on a machine without GPUs gets the custom device resource the placement asks for.
    """
    if ray.is_initialized():
        return
    if config.ray_address:
        ray.init(address=config.ray_address)
        return
    gpus = config.device == "gpu" or (config.device == "auto" and torch.cuda.is_available())
    _init_local_ray_from_a_lasting_thread(resources=None if gpus else local_init_resources(config),
                                          include_dashboard=False)


def stop_ray() -> None:
    """Stop the local Ray instance `start_ray` started, or disconnect from the cluster it joined."""
    if ray.is_initialized():
        ray.shutdown()


def _init_local_ray_from_a_lasting_thread(**init_kwargs) -> None:
    """`ray.init(**init_kwargs)` from a daemon thread that then lives as long as the process.

    Ray starts its node processes (GCS, raylet) with PR_SET_PDEATHSIG, which Linux fires when the *thread*
    that started them exits: the Celery worker starts the engine from its short-lived warm-up thread (or
    a pool thread), whose end would SIGKILL the local instance under the running jobs."""
    done, errors = threading.Event(), []

    def own_ray() -> None:
        try:
            ray.init(**init_kwargs)
        except BaseException as err:  # handed to the caller
            errors.append(err)
        finally:
            done.set()
        if not errors:
            threading.Event().wait()  # until the process exits (ray.shutdown runs at exit)

    threading.Thread(target=own_ray, name="ray-node-owner", daemon=True).start()
    done.wait()
    if errors:
        raise errors[0]


def _image_input(image):
    """A path is read here (the actors may run on another node); PIL images and bytes travel as they are."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ModelInputError("image", f"{path}: no such file")
        return path.read_bytes()
    return image


class EngineExecutor(KeywordTasks):
    def __init__(self, config: EngineConfig):
        self.config = config
        start_ray(config)
        self.kind = device_kind(config)
        self.replicas: list[Replica] = []
        try:
            for index in range(config.replicas):
                self.replicas.append(Replica(config, self.kind, index))
        except BaseException:  # e.g. PlacementError for a later replica: release the devices already held
            self.close()
            raise
        self._admission = threading.Condition()

    @classmethod
    def from_settings(cls, settings) -> "EngineExecutor":
        return cls(EngineConfig.from_settings(settings))

    def describe(self, timeout_s: float | None = None) -> list[dict[str, dict]]:
        """Per replica, each actor's report; returns once every actor has loaded its weights."""
        return [replica.describe(timeout_s) for replica in self.replicas]

    def close(self) -> None:
        for replica in self.replicas:
            replica.shutdown()
        self.replicas = []

    @contextmanager
    def _replica(self):
        with self._admission:
            while True:
                replica = min(self.replicas, key=lambda r: r.inflight)
                if replica.inflight < self.config.max_inflight:
                    replica.inflight += 1
                    break
                self._admission.wait()
        try:
            if replica.crashed:
                replica.wait_restarted()
            yield replica
        finally:
            with self._admission:
                replica.inflight -= 1
                self._admission.notify()

    # -- the Pipeline's API: typed tasks (the keyword forms come from KeywordTasks), checked here as the
    # Pipeline checks them, before any actor is involved ------------------------------------------------
    def text_to_image(self, task: TextToImageTask, *, progress: Progress | None = None,
                      should_cancel: ShouldCancel | None = None) -> ImageResult:
        task = task.checked()
        with self._replica() as replica:
            return replica.text_to_image(task, progress=progress, should_cancel=should_cancel)

    def understand(self, image: Image.Image | bytes | str | Path, task: UnderstandTask, *,
                   progress: Progress | None = None, should_cancel: ShouldCancel | None = None,
                   answer: Answer | None = None) -> TextResult:
        task = task.checked()
        with self._replica() as replica:
            return replica.understand(_image_input(image), task, progress=progress, should_cancel=should_cancel,
                                      answer=answer)

    def edit(self, image: Image.Image | bytes | str | Path, task: EditTask, *, progress: Progress | None = None,
             should_cancel: ShouldCancel | None = None) -> ImageResult:
        task = task.checked()
        with self._replica() as replica:
            return replica.edit(_image_input(image), task, progress=progress, should_cancel=should_cancel)

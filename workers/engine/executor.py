"""`EngineExecutor`: the Pipeline's API (`generate_image`, `understand_image`, `edit_image`, same signatures
and result types) served by the Ray engine's replicas, so the Celery worker can use either.

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
from workers.model import generation, image_prep
from workers.model import pipeline_inputs as inputs
from workers.model.decoder.pipeline import DEFAULT_RESOLUTION_MULTIPLIER
from workers.model.errors import ModelInputError
from workers.model.hooks import Progress, ShouldCancel
from workers.model.pipeline import (
    IMAGE_SIDE_MAX,
    IMAGE_SIDE_MIN,
    PATCH,
    ImageResult,
    Sprint,
    TextResult,
    resolve_seed,
    sprint_setting,
)

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


class EngineExecutor:
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

    # -- the Pipeline's API -----------------------------------------------------------------------------
    def generate_image(
        self,
        prompt: str,
        *,
        width: int = 1024,
        height: int = 1024,
        steps: int = 8,
        cfg_scale: float = 2.0,
        block_length: int = 32,
        mode: str = "normal",
        thinking_steps: int = 32,
        thinking_gen_length: int = 4096,
        threshold: float = generation.DEFAULT_THRESHOLD,
        decoder: str = "turbo",
        decoder_steps: int | None = None,
        resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> ImageResult:
        cell = inputs.check_resolution_multiplier(resolution_multiplier) * PATCH
        grid_h = inputs.check_side("height", height, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX) // cell
        grid_w = inputs.check_side("width", width, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX) // cell
        decoder_steps = inputs.check_decoder(decoder, decoder_steps)
        seed = resolve_seed(seed)
        inputs.check_text("prompt", prompt)
        options = dict(steps=steps, cfg_scale=cfg_scale, block_length=block_length, mode=mode,
                       thinking_steps=thinking_steps, thinking_gen_length=thinking_gen_length,
                       threshold=threshold, sprint=sprint_setting(sprint))
        with self._replica() as replica:
            return replica.text_to_image(
                prompt, grid_h=grid_h, grid_w=grid_w, seed=seed, options=options, decoder=decoder,
                decoder_steps=decoder_steps, resolution_multiplier=resolution_multiplier, progress=progress,
                should_cancel=should_cancel,
            )

    def understand_image(
        self,
        image: Image.Image | bytes | str | Path,
        question: str,
        *,
        steps: int = 32,
        gen_length: int = 2048,
        block_length: int = 32,
        threshold: float = generation.DEFAULT_THRESHOLD,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> TextResult:
        inputs.check_text("question", question)
        options = dict(steps=steps, gen_length=gen_length, block_length=block_length, threshold=threshold,
                       seed=seed, sprint=sprint_setting(sprint))
        with self._replica() as replica:
            return replica.understand(_image_input(image), question, options=options, progress=progress,
                                      should_cancel=should_cancel)

    def edit_image(
        self,
        image: Image.Image | bytes | str | Path,
        instruction: str,
        *,
        steps: int = 8,
        block_length: int = 32,
        cfg_text_scale: float = 4.0,
        cfg_image_scale: float = 0.0,
        threshold: float = generation.DEFAULT_THRESHOLD,
        decoder: str = "turbo",
        decoder_steps: int | None = None,
        resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER,
        crop: image_prep.EditCrop | str = image_prep.EditCrop.COVER,
        crop_base: int = inputs.EDIT_CROP_BASE,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> ImageResult:
        inputs.check_text("instruction", instruction)
        inputs.check_resolution_multiplier(resolution_multiplier)
        decoder_steps = inputs.check_decoder(decoder, decoder_steps)
        seed = resolve_seed(seed)
        options = dict(steps=steps, block_length=block_length, cfg_text_scale=cfg_text_scale,
                       cfg_image_scale=cfg_image_scale, threshold=threshold, sprint=sprint_setting(sprint))
        with self._replica() as replica:
            return replica.edit(
                _image_input(image), instruction, seed=seed, options=options, crop=crop, crop_base=crop_base,
                decoder=decoder, decoder_steps=decoder_steps, resolution_multiplier=resolution_multiplier,
                progress=progress, should_cancel=should_cancel,
            )

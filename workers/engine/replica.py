"""`Replica`: one model copy as three actors on the replica's devices, and the route of each job kind
through them (ARCHITECTURE §1): text-to-image tokenize → denoise (→ denoise again in thinking mode) →
decode; understanding encode/tokenize → denoise → detokenize; editing encode → denoise → decode.

Each call runs in its caller's thread and only waits on the actors, so many jobs are in flight at once:
while the decoder works on one job, the denoiser batches the steps of the others.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from workers.engine.calls import call_stage
from workers.engine.config import STAGES, EngineConfig
from workers.engine.decoder_actor import DecoderActor
from workers.engine.denoiser_actor import DenoiserActor
from workers.engine.errors import EngineCrashed
from workers.engine.placement import actor_options, reserve_replica, torch_device
from workers.engine.tokenizer_actor import TokenizerActor
from workers.model import generation
from workers.model.hooks import Answer, Progress, ShouldCancel, StageClock
from workers.model.pipeline import ImageResult, TextResult
from workers.model.sampler import GenerationRequest, GenerationResult
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask

# A restarted actor reloads its weights; on a real checkpoint that takes minutes.
ACTOR_RESTART_TIMEOUT_S = 600.0
RESTART_POLL_S = 0.2


class Replica:
    def __init__(self, config: EngineConfig, kind: str, index: int = 0):
        self.config = config
        self.index = index
        self.group = reserve_replica(config, kind, index)
        device = torch_device(kind)

        def start(cls, stage, **kwargs):
            actor_cls = ray.remote(cls).options(**actor_options(config, kind, self.group, stage))
            return actor_cls.remote(config.model_path, device, **kwargs)

        self.tokenizer = start(TokenizerActor, "tokenizer")
        self.denoiser = start(DenoiserActor, "denoiser", max_batch=config.max_batch)
        self.decoder = start(DecoderActor, "decoder")
        self.inflight = 0  # jobs admitted to this replica; kept by the executor under its lock
        self.crashed = False  # an actor died under a job: wait for its restart before the next job

    def actors(self) -> dict:
        return {"tokenizer": self.tokenizer, "denoiser": self.denoiser, "decoder": self.decoder}

    def describe(self, timeout_s: float | None = None) -> dict[str, dict]:
        """Each actor's own report (device, resources granted, …); waits until every actor has loaded."""
        refs = [self.actors()[s].describe.remote() for s in STAGES]
        return dict(zip(STAGES, ray.get(refs, timeout=timeout_s)))

    def wait_restarted(self, timeout_s: float = ACTOR_RESTART_TIMEOUT_S) -> None:
        """Block until every actor answers again (restarted and reloaded), or raise `EngineCrashed`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.describe(timeout_s=max(0.1, deadline - time.monotonic()))
                self.crashed = False
                return
            except ActorUnavailableError:  # restarting: its calls fail until it is back
                if time.monotonic() > deadline:
                    raise EngineCrashed(f"replica {self.index}: an actor did not restart in {timeout_s:.0f} s")
                time.sleep(RESTART_POLL_S)
            except (RayActorError, GetTimeoutError) as err:  # out of restarts, or too slow to come back
                raise EngineCrashed(f"replica {self.index}: an actor is gone ({type(err).__name__})") from err

    def _call(self, stage, method, key, *args, progress=None, should_cancel=None, settled=None, **kwargs):
        try:
            return call_stage(self.actors()[stage], method, key, *args, stage=stage, progress=progress,
                              should_cancel=should_cancel, settled=settled,
                              poll_interval_s=self.config.poll_interval_s, **kwargs)
        except EngineCrashed:
            self.crashed = True
            raise

    # -- routes (tasks already checked by the executor, as the Pipeline checks them) ---------------------
    def text_to_image(self, task: TextToImageTask, *, progress: Progress | None = None,
                      should_cancel: ShouldCancel | None = None) -> ImageResult:
        key, clock = uuid.uuid4().hex, StageClock(progress, should_cancel)
        hooks = {"progress": progress, "should_cancel": should_cancel}
        drawn = generation.text_to_image_codes(_ActorSteps(self, key, hooks), task, clock)
        with clock.stage("decode"):
            image = self._call("decoder", "decode", key, drawn.codes, task.grid_h, task.grid_w, mode=task.decoder,
                               steps=task.decoder_steps, seed=task.seed,
                               resolution_multiplier=task.resolution_multiplier, **hooks)
        return ImageResult(image=image, timings=clock.timings, codes=drawn.codes, grid=(task.grid_h, task.grid_w),
                           seed=task.seed, thinking=drawn.thinking)

    def understand(self, image, task: UnderstandTask, *, progress: Progress | None = None,
                   should_cancel: ShouldCancel | None = None, answer: Answer | None = None) -> TextResult:
        key, clock = uuid.uuid4().hex, StageClock(progress, should_cancel)
        hooks = {"progress": progress, "should_cancel": should_cancel}
        with clock.stage("tokenize"):
            request, h, w = self._call("tokenizer", "understand_request", key, image, task,
                                       should_cancel=should_cancel)
            clock.report("tokenize")
        # The denoiser's settled ids, polled with its progress, become text on the tokenizer actor.
        settled = None if answer is None else (
            lambda ids: answer(self._call("tokenizer", "partial_answer", key, ids)))
        with clock.stage("denoise"):
            result = self._call("denoiser", "generate", key, request, "denoise", settled=settled, **hooks)
            text = self._call("tokenizer", "answer_text", key, result)
        return TextResult(text=text, timings=clock.timings, grid=(h, w))

    def edit(self, image, task: EditTask, *, progress: Progress | None = None,
             should_cancel: ShouldCancel | None = None) -> ImageResult:
        key, clock = uuid.uuid4().hex, StageClock(progress, should_cancel)
        hooks = {"progress": progress, "should_cancel": should_cancel}
        with clock.stage("tokenize"):
            request, h, w = self._call("tokenizer", "edit_request", key, image, task, should_cancel=should_cancel)
            clock.report("tokenize")
        with clock.stage("denoise"):
            result = self._call("denoiser", "generate", key, request, "denoise", **hooks)
            codes = self._call("tokenizer", "image_codes", key, result, h, w)
        with clock.stage("decode"):
            image = self._call("decoder", "decode", key, codes, h, w, mode=task.decoder, steps=task.decoder_steps,
                               seed=task.seed, resolution_multiplier=task.resolution_multiplier, **hooks)
        return ImageResult(image=image, timings=clock.timings, codes=codes, grid=(h, w), seed=task.seed)

    def shutdown(self) -> None:
        for actor in self.actors().values():
            ray.kill(actor, no_restart=True)
        ray.util.remove_placement_group(self.group)


@dataclass
class _ActorSteps:
    """Text-to-image's steps (generation.TextToImageSteps) on one replica's actors, for one job's key."""

    replica: Replica
    key: str
    hooks: dict

    def first_request(self, task: TextToImageTask) -> tuple[str, GenerationRequest]:
        return self.replica._call("tokenizer", "text_to_image_request", self.key, task)

    def phase2_request(self, task: TextToImageTask, phase1: GenerationResult) -> tuple[GenerationRequest, str]:
        return self.replica._call("tokenizer", "thinking_phase2_request", self.key, task, phase1)

    def generate(self, request: GenerationRequest, stage: str) -> GenerationResult:
        return self.replica._call("denoiser", "generate", self.key, request, stage, **self.hooks)

    def image_codes(self, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
        return self.replica._call("tokenizer", "image_codes", self.key, result, grid_h, grid_w)

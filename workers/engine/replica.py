"""`Replica`: one model copy as three actors on the replica's devices, and the route of each job kind
through them (ARCHITECTURE §1): text-to-image tokenize → denoise (→ denoise again in thinking mode) →
decode; understanding encode/tokenize → denoise → detokenize; editing encode → denoise → decode.

Each call runs in its caller's thread and only waits on the actors, so many jobs are in flight at once:
while the decoder works on one job, the denoiser batches the steps of the others.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import ray

from workers.engine.calls import Progress, ShouldCancel, call_stage
from workers.engine.config import STAGES, EngineConfig
from workers.engine.decoder_actor import DecoderActor
from workers.engine.denoiser_actor import DenoiserActor
from workers.engine.placement import actor_options, reserve_replica, torch_device
from workers.engine.tokenizer_actor import TokenizerActor


@dataclass
class StageOutput:
    """What a replica returns for one job; the executor turns it into the Pipeline's result type."""

    image: object | None = None
    text: str | None = None
    thinking: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self, timings: dict[str, float], name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.started


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
        self._lock = threading.Lock()
        self.inflight = 0

    def actors(self) -> dict:
        return {"tokenizer": self.tokenizer, "denoiser": self.denoiser, "decoder": self.decoder}

    def describe(self, timeout_s: float | None = None) -> dict[str, dict]:
        """Each actor's own report (device, resources granted, …); waits until every actor has loaded."""
        refs = [self.actors()[s].describe.remote() for s in STAGES]
        return dict(zip(STAGES, ray.get(refs, timeout=timeout_s)))

    def __enter__(self):
        with self._lock:
            self.inflight += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self.inflight -= 1

    def _call(self, stage, method, key, *args, progress=None, should_cancel=None, **kwargs):
        return call_stage(self.actors()[stage], method, key, *args, stage=stage, progress=progress,
                          should_cancel=should_cancel, poll_interval_s=self.config.poll_interval_s, **kwargs)

    # -- routes -----------------------------------------------------------------------------------------
    def text_to_image(self, prompt: str, *, grid_h: int, grid_w: int, options: dict, decoder: str,
                      decoder_steps: int | None, resolution_multiplier: int, seed: int | None,
                      progress: Progress | None = None, should_cancel: ShouldCancel | None = None) -> StageOutput:
        key, out = uuid.uuid4().hex, StageOutput()
        hooks = {"progress": progress, "should_cancel": should_cancel}
        options = {**options, "grid_h": grid_h, "grid_w": grid_w, "seed": seed}
        with _Timer(out.timings, "tokenize"):
            stage, request = self._call("tokenizer", "text_to_image_request", key, prompt, options)
        with _Timer(out.timings, "denoise"):
            result = self._call("denoiser", "generate", key, request, stage, **hooks)
        if options.get("mode") == "thinking":
            with _Timer(out.timings, "tokenize"):
                request, out.thinking = self._call("tokenizer", "thinking_phase2_request", key, prompt, result,
                                                   options)
            with _Timer(out.timings, "denoise"):
                result = self._call("denoiser", "generate", key, request, "denoise", **hooks)
        with _Timer(out.timings, "decode"):
            codes = self._call("tokenizer", "image_codes", key, result, grid_h, grid_w)
            out.image = self._call("decoder", "decode", key, codes, grid_h, grid_w, mode=decoder,
                                   steps=decoder_steps, seed=seed, resolution_multiplier=resolution_multiplier,
                                   **hooks)
        return out

    def understand(self, image, question: str, *, options: dict, progress: Progress | None = None,
                   should_cancel: ShouldCancel | None = None) -> StageOutput:
        key, out = uuid.uuid4().hex, StageOutput()
        hooks = {"progress": progress, "should_cancel": should_cancel}
        with _Timer(out.timings, "tokenize"):
            request = self._call("tokenizer", "understand_request", key, image, question, options, **hooks)
        with _Timer(out.timings, "denoise"):
            result = self._call("denoiser", "generate", key, request, "denoise", **hooks)
        with _Timer(out.timings, "tokenize"):
            out.text = self._call("tokenizer", "answer_text", key, result)
        return out

    def edit(self, image, instruction: str, *, options: dict, decoder: str, decoder_steps: int | None,
             resolution_multiplier: int, seed: int | None, progress: Progress | None = None,
             should_cancel: ShouldCancel | None = None) -> StageOutput:
        key, out = uuid.uuid4().hex, StageOutput()
        hooks = {"progress": progress, "should_cancel": should_cancel}
        with _Timer(out.timings, "tokenize"):
            request, h, w = self._call("tokenizer", "edit_request", key, image, instruction,
                                       {**options, "seed": seed}, **hooks)
        with _Timer(out.timings, "denoise"):
            result = self._call("denoiser", "generate", key, request, "denoise", **hooks)
        with _Timer(out.timings, "decode"):
            codes = self._call("tokenizer", "image_codes", key, result, h, w)
            out.image = self._call("decoder", "decode", key, codes, h, w, mode=decoder, steps=decoder_steps,
                                   seed=seed, resolution_multiplier=resolution_multiplier, **hooks)
        return out

    def shutdown(self) -> None:
        for actor in self.actors().values():
            ray.kill(actor, no_restart=True)
        ray.util.remove_placement_group(self.group)

"""The Ray engine end to end on the tiny checkpoint: placement, same results as the in-process Pipeline,
batch independence under concurrency, cancellation, and recovery from a killed denoiser.

One Ray instance and one engine (two CPU "devices": tokenizer + decoder on slot 0, denoiser on slot 1)
serve the whole module; the crash test runs last because the denoiser then restarts.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from workers.engine import EngineCrashed
from workers.engine.placement import CPU_DEVICE_RESOURCE
from workers.model.errors import Cancelled, ModelInputError

T2I = dict(width=128, height=128, steps=2, block_length=8, decoder="turbo", decoder_steps=2)
UNDERSTAND = dict(gen_length=16, steps=4, block_length=8, threshold=0.5)


@pytest.fixture(scope="module")
def pipeline(tiny_ckpt):
    import torch

    from workers.model import Pipeline

    # Ray runs actors with OMP_NUM_THREADS=1; the in-process Pipeline uses the same thread count so that
    # float reductions happen in the same order and images can be compared byte for byte.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Pipeline.from_pretrained(tiny_ckpt, device="cpu", decoders=("turbo",))
    torch.set_num_threads(threads)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def picture(colour=(200, 30, 30)) -> Image.Image:
    image = Image.new("RGB", (64, 48), colour)
    image.paste((20, 20, 220), (10, 10, 40, 30))
    return image


def denoiser_stats(engine) -> dict:
    import ray

    return ray.get(engine.replicas[0].denoiser.stats.remote())


def test_each_actor_runs_on_the_device_slot_the_placement_names(engine):
    [actors] = engine.describe()
    bundle = {stage: info["bundles"][CPU_DEVICE_RESOURCE] for stage, info in actors.items()}
    assert bundle == {"tokenizer": [0], "denoiser": [1], "decoder": [0]}
    # Ray's grant: the two stages on slot 0 split that device, the denoiser holds slot 1 whole.
    share = {stage: info["resources"][CPU_DEVICE_RESOURCE] for stage, info in actors.items()}
    assert share == {"tokenizer": 0.5, "denoiser": 1.0, "decoder": 0.5}
    assert {info["device"] for info in actors.values()} == {"cpu"}
    assert len({info["placement_group"] for info in actors.values()}) == 1
    assert len({info["pid"] for info in actors.values()}) == 3  # three processes, weights loaded once each


def test_engine_results_equal_the_in_process_pipeline_for_each_kind(engine, pipeline):
    for mode in ("normal", "thinking"):
        kwargs = dict(T2I, mode=mode, thinking_gen_length=16, thinking_steps=4, seed=11)
        mine, theirs = engine.generate_image("a red fox", **kwargs), pipeline.generate_image("a red fox", **kwargs)
        assert mine.codes == theirs.codes and png(mine.image) == png(theirs.image), mode
        assert mine.thinking == theirs.thinking and mine.image.size == (128, 128)
        stages = {"tokenize", "denoise", "decode"} | ({"think"} if mode == "thinking" else set())
        assert set(mine.timings) == set(theirs.timings) == stages, mode

    source = png(picture())
    mine, theirs = (p.understand_image(source, "What is shown?", **UNDERSTAND) for p in (engine, pipeline))
    assert (mine.text, mine.grid) == (theirs.text, theirs.grid)

    edit = dict(steps=2, block_length=8, decoder="turbo", decoder_steps=2, crop_base=64, seed=5)
    mine, theirs = (p.edit_image(source, "make it blue", **edit) for p in (engine, pipeline))
    assert mine.codes == theirs.codes and png(mine.image) == png(theirs.image)


def test_an_answer_is_told_as_the_denoisers_blocks_settle(engine):
    told: list[str] = []
    # 32 blocks of 8 steps: long enough for the caller's polls (every 50 ms) to see several blocks settle.
    result = engine.understand_image(png(picture()), "Describe it.", gen_length=256, steps=8, block_length=8,
                                     threshold=1.0, answer=told.append)
    assert len(told) >= 2, told
    for shorter, longer in zip(told, told[1:]):
        assert longer.startswith(shorter) and longer != shorter
    assert result.text.startswith(told[-1])


def test_the_workers_endpoint_shows_the_denoisers_batching(engine):
    from prometheus_client import CollectorRegistry, generate_latest

    from workers.engine.metrics import EngineCollector

    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    before = denoiser_stats(engine)["forwards"]
    with ThreadPoolExecutor(3) as pool:  # three jobs at once: their steps share batches
        list(pool.map(lambda q: engine.understand_image(png(picture()), q, **UNDERSTAND), ("a?", "b?", "c?")))
    stats = denoiser_stats(engine)
    assert stats["forwards"] > before
    counted = sum(registry.get_sample_value("llada_engine_denoise_forwards_total",
                                            {"replica": "0", "batch_size": str(size)}) or 0
                  for size in stats["batch_sizes"])
    assert counted == stats["forwards"]  # every forward, under the batch size it ran with
    assert registry.get_sample_value("llada_engine_batch_requests", {"replica": "0", "state": "max_batch"}) == 8
    assert b"llada_engine_denoise_step_seconds_total" in generate_latest(registry)


def test_bad_input_names_the_field_before_any_work(engine):
    with pytest.raises(ModelInputError) as err:
        engine.generate_image("a fox", **{**T2I, "width": 100})
    assert err.value.field == "width"
    with pytest.raises(ModelInputError) as err:
        engine.understand_image(b"not an image", "What?", **UNDERSTAND)
    assert err.value.field == "image"


def test_jobs_give_the_same_images_alone_and_four_at_once(engine):
    prompts = ["a lighthouse", "two green apples on a table", "snow", "a city street at dusk in the rain"]
    alone = [engine.generate_image(p, **T2I, seed=7 + i) for i, p in enumerate(prompts)]
    before = denoiser_stats(engine)["largest_batch"]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: engine.generate_image(prompts[i], **T2I, seed=7 + i), range(4)))
    for one, other in zip(alone, together):
        assert one.codes == other.codes and png(one.image) == png(other.image)
    assert max(before, 2) <= denoiser_stats(engine)["largest_batch"]  # the jobs did share forwards


def test_progress_reaches_the_caller_stage_by_stage(engine):
    events = []
    engine.generate_image("a boat", **T2I, seed=1, progress=lambda *e: events.append(e))
    stages = [e[0] for e in events]
    assert stages[0] == "tokenize" and "denoise" in stages and stages[-1] == "decode"
    assert stages.index("decode") > max(i for i, s in enumerate(stages) if s == "denoise")
    assert events[-1] == ("decode", 2, 2)
    denoise = [e for e in events if e[0] == "denoise"]
    assert denoise[-1][1] == denoise[-1][2] and all(a[1] <= b[1] for a, b in zip(denoise, denoise[1:]))


def test_cancel_stops_a_running_job_and_frees_its_slot(engine):
    cancel = threading.Event()
    seen = []

    def progress(stage, step, total):
        seen.append(step)
        if step >= 2:
            cancel.set()

    long = dict(UNDERSTAND, gen_length=512, steps=8)
    with pytest.raises(Cancelled):
        engine.understand_image(png(picture()), "Describe it.", **long, progress=progress, should_cancel=cancel.is_set)
    assert max(seen) < 64 * 8  # stopped long before its planned steps
    assert denoiser_stats(engine)["active"] == 0
    assert engine.understand_image(png(picture()), "And now?", **UNDERSTAND).text is not None


def test_a_replica_the_cluster_has_no_free_devices_for_is_refused(engine):
    from workers.engine.config import EngineConfig
    from workers.engine.errors import PlacementError
    from workers.engine.placement import reserve_replica

    # The module's engine holds both CPU devices of this Ray instance.
    another = EngineConfig(model_path="unused", placement={"tokenizer": 0, "denoiser": 0, "decoder": 0})
    with pytest.raises(PlacementError, match=f"^engine_placement: replica 1 needs 1 x {CPU_DEVICE_RESOURCE}"):
        reserve_replica(another, "cpu", 1, timeout_s=1.0)


def test_the_worker_runs_a_job_through_the_engine(engine):
    from shared.jobs import JobKind, TextToImageParams, UnderstandParams
    from workers.engine.engine_backed import EngineBackedExecutor

    runner = EngineBackedExecutor(engine.config, engine=engine)
    events = []
    hooks = dict(progress=lambda *e: events.append(e), should_cancel=lambda: False)
    params = TextToImageParams(prompt="a kite", width=128, height=128, steps=2, block_length=8, decoder="turbo",
                               decoder_steps=2, seed=3)
    output = runner.run(JobKind.TEXT_TO_IMAGE, params, {}, **hooks)
    assert Image.open(io.BytesIO(output.objects["image.png"])).size == (128, 128)
    assert set(output.timings) == {"tokenize", "denoise", "decode"} and events[-1][0] == "decode"

    params = UnderstandParams(question="What is it?", gen_length=16, steps=4, block_length=8)
    output = runner.run(JobKind.UNDERSTAND, params, {"image": png(picture())}, **hooks)
    assert isinstance(output.text, str) and not output.objects


def test_a_killed_denoiser_fails_its_job_as_retryable_and_comes_back(engine):
    import ray

    started = threading.Event()
    denoiser = engine.replicas[0].denoiser

    def kill_on_first_step(stage, step, total):
        if stage == "denoise" and not started.is_set():
            started.set()
            ray.kill(denoiser, no_restart=False)

    long = dict(UNDERSTAND, gen_length=512, steps=8)
    with pytest.raises(EngineCrashed) as err:
        engine.understand_image(png(picture()), "Describe it.", **long, progress=kill_on_first_step)
    assert isinstance(err.value, ConnectionError)  # the worker's classify_failure retries these

    # Same actor handle: Ray restarted the process, which reloaded the backbone; the retried job succeeds.
    again = engine.understand_image(png(picture()), "What is shown?", **UNDERSTAND)
    assert again.text == engine.understand_image(png(picture()), "What is shown?", **UNDERSTAND).text
    info = ray.get(denoiser.describe.remote())
    assert info["restarted"] is True and info["bundles"][CPU_DEVICE_RESOURCE] == [1]

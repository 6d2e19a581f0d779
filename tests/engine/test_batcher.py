"""Step-level batching (`StepBatcher`) on the real tiny backbone, without Ray: requests join and leave
between steps, compatible ones share a forward, a cancel frees its slot before the next step."""

from __future__ import annotations

import asyncio

import pytest
import torch

from workers.engine.batcher import StepBatcher
from workers.model.backbone import load_backbone
from workers.model.errors import Cancelled
from workers.model.sampler import GenerationRequest, generate
from workers.model.sampler import step as sampler_step
from workers.model.text_tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def backbone(tiny_ckpt):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and leaves the shared CPU to others
    model = load_backbone(tiny_ckpt, device="cpu", dtype=torch.float32)
    yield model, TextTokenizer.from_folder(tiny_ckpt, model.config)
    torch.set_num_threads(threads)


class RecordingStepDouble:
    """Test double around `sampler.step`: records which requests (by prompt text) each forward advanced."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.forwards: list[list[str]] = []

    def __call__(self, model, states):
        self.forwards.append([self.names[id(s.request)] for s in states if not s.done])
        sampler_step(model, states)


def request(tok, text, **overrides):
    fields = dict(prompts=[tok.encode(text)], gen_length=16, block_length=8, steps=4, threshold=0.5,
                  mask_id=tok.mask_id, eos_id=tok.eos_id)
    fields.update(overrides)
    return GenerationRequest(**fields)


def batcher_with_recorder(model, requests, **kwargs):
    recorder = RecordingStepDouble({id(r): name for name, r in requests.items()})
    return StepBatcher(model, "cpu", step=recorder, **kwargs), recorder


def test_concurrent_requests_share_forwards_and_match_their_results_alone(backbone):
    model, tok = backbone
    cfg = dict(cfg_scale=2.0, image_only=True, image_token_offset=tok.image_token_offset)
    requests = {
        "cat": request(tok, "a red cat on a chair", temperature=1.0, seed=3),
        "dog": request(tok, "a dog", temperature=1.0, seed=4),
        "sea": request(tok, "the sea at night, long waves", temperature=1.0, seed=5),
        "cfg": request(tok, "a house", prompts=[tok.encode("a photo of a house"), tok.encode("house")], **cfg),
        "wide": request(tok, "wide blocks", block_length=16, steps=2),
    }
    batcher, recorder = batcher_with_recorder(model, requests)

    async def main():
        return await asyncio.gather(*(batcher.run(name, r) for name, r in requests.items()))

    results = dict(zip(requests, asyncio.run(main())))
    for name, r in requests.items():
        assert results[name].ids == generate(model, [r])[0].ids, name
    # The three 1-row, block-8 requests stepped together; CFG (2 rows) and block 16 each had forwards of their own.
    assert ["cat", "dog", "sea"] in recorder.forwards
    for forward in recorder.forwards:
        assert "cfg" not in forward or forward == ["cfg"]
        assert "wide" not in forward or forward == ["wide"]
    assert batcher.occupancy() == {"active": 0, "pending": 0, "max_batch": 8}
    # Forward seconds are kept per batch size, beside the count of forwards of that size.
    assert batcher.stats.step_seconds.keys() == batcher.stats.batch_sizes.keys()
    assert all(seconds > 0 for seconds in batcher.stats.step_seconds.values())


def test_a_cancelled_request_leaves_before_the_next_step_and_its_slot_goes_to_the_next(backbone):
    model, tok = backbone
    requests = {"long": request(tok, "a long answer", gen_length=64, steps=8),
                "next": request(tok, "a short answer")}
    batcher, recorder = batcher_with_recorder(model, requests, max_batch=1)

    async def main():
        long = asyncio.create_task(batcher.run("long", requests["long"]))
        following = asyncio.create_task(batcher.run("next", requests["next"]))
        while batcher.stats.forwards < 2:
            await asyncio.sleep(0.001)
        assert batcher.occupancy()["pending"] == 1  # one slot: "next" waits
        forwards_at_cancel = len(recorder.forwards)
        assert batcher.cancel("long")
        with pytest.raises(Cancelled):
            await long
        await following
        return forwards_at_cancel

    at_cancel = asyncio.run(main())
    # A step in flight when the cancel came may finish; after it "long" is never stepped again, and the
    # very next forward is the waiting request's.
    after = recorder.forwards[at_cancel:]
    assert after and all(f == ["next"] for f in after[1:])
    assert after[0] in (["long"], ["next"])
    assert batcher.stats.cancelled == 1 and batcher.occupancy()["active"] == 0


def test_an_abandoned_call_frees_its_slot(backbone):
    model, tok = backbone
    batcher = StepBatcher(model, "cpu", max_batch=1)

    async def main():
        task = asyncio.create_task(batcher.run("gone", request(tok, "text", gen_length=64)))
        while batcher.stats.forwards < 1:
            await asyncio.sleep(0.001)
        task.cancel()  # what cancelling the actor call does
        with pytest.raises(asyncio.CancelledError):
            await task
        assert batcher.occupancy()["active"] == 0 and batcher.progress("gone") is None
        return await batcher.run("after", request(tok, "more text"))

    assert len(asyncio.run(main()).ids) > 0


def test_a_finished_requests_last_progress_stays_readable_for_the_callers_final_poll(backbone):
    model, tok = backbone
    batcher = StepBatcher(model, "cpu")
    asyncio.run(batcher.run("done", request(tok, "a short one"), "think"))
    stage, step, total = batcher.progress("done")
    assert stage == "think" and step == total > 0


def test_a_bad_request_fails_alone_naming_the_field(backbone):
    model, tok = backbone
    batcher = StepBatcher(model, "cpu")
    with pytest.raises(ValueError, match="gen_length"):
        asyncio.run(batcher.run("bad", request(tok, "text", gen_length=0)))
    beyond = model.config.max_position_embeddings  # plus the prompt: past the backbone's positions
    with pytest.raises(ValueError, match="max_position_embeddings"):
        asyncio.run(batcher.run("long", request(tok, "text", gen_length=beyond)))


def test_a_failing_forward_fails_the_requests_it_held_and_the_batcher_goes_on(backbone):
    model, tok = backbone

    class FailingOnceStepDouble:
        """Test double: the first forward raises as an out-of-memory error would; later ones run for real."""

        def __init__(self):
            self.calls = 0

        def __call__(self, model, states):
            self.calls += 1
            if self.calls == 1:
                raise MemoryError("forward did not fit")
            sampler_step(model, states)

    batcher = StepBatcher(model, "cpu", step=FailingOnceStepDouble())

    async def main():
        with pytest.raises(MemoryError):
            await batcher.run("first", request(tok, "text"))
        return await batcher.run("second", request(tok, "text"))

    assert asyncio.run(main()).ids == generate(model, [request(tok, "text")])[0].ids

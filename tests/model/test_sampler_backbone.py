"""The sampler on the real tiny backbone (the `tiny_ckpt` checkpoint): batching and SPRINT exactness."""

from __future__ import annotations

import pytest
import torch
from tests.model.test_sampler_doubles import single_torch_thread  # noqa: F401 (autouse fixture)

from workers.model.backbone import load_backbone
from workers.model.sampler import GenerationRequest, SprintOptions, generate
from workers.model.text_tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def backbone(tiny_ckpt):
    model = load_backbone(tiny_ckpt, device="cpu", dtype=torch.float32)
    return model, TextTokenizer.from_folder(tiny_ckpt, model.config)


def text_request(tok, text, **overrides):
    fields = dict(prompts=[tok.encode(text)], gen_length=20, block_length=8, steps=4, threshold=0.5,
                  mask_id=tok.mask_id, eos_id=tok.eos_id)
    fields.update(overrides)
    return GenerationRequest(**fields)


def test_requests_of_different_lengths_batch_to_the_same_ids(backbone):
    model, tok = backbone
    cfg = dict(cfg_scale=2.0, image_only=True, image_token_offset=tok.image_token_offset)
    requests = [
        text_request(tok, "a red cat sitting on a blue chair", temperature=1.0, seed=3),
        text_request(tok, "a dog", prompts=[tok.encode("a photo of a dog"), tok.encode("dog")], **cfg),
        text_request(tok, "What is in this image? Describe the picture in detail.", block_length=4, steps=2),
    ]
    together = generate(model, requests)
    for request, result in zip(requests, together):
        assert generate(model, [request])[0].ids == result.ids
    assert min(together[1].ids) >= tok.image_token_offset


@pytest.mark.parametrize("cfg", [False, True])
def test_sprint_without_pruning_reproduces_the_baseline(backbone, cfg):
    model, tok = backbone
    extra = {}
    if cfg:
        extra = dict(prompts=[tok.encode("a small house near the river"), tok.encode("house")], cfg_scale=3.0)
    baseline = generate(model, [text_request(tok, "The quick brown fox jumps", gen_length=30, **extra)])[0]
    exact = SprintOptions(keep_ratio=1.0, cache_warmup_steps=1, adaptive_unmasking=False)
    sprint = generate(model, [text_request(tok, "The quick brown fox jumps", gen_length=30, sprint=exact, **extra)])
    assert sprint[0].ids == baseline.ids


def test_pruned_sprint_returns_gen_length_tokens(backbone):
    model, tok = backbone
    sprint = SprintOptions(keep_ratio=0.5, cache_warmup_steps=1, remasking="top_k_margin")
    request = text_request(tok, "The quick brown fox jumps over the lazy dog", gen_length=24, threshold=1.0,
                           image_only=True, image_token_offset=tok.image_token_offset, sprint=sprint)
    [result] = generate(model, [request])
    assert len(result.ids) == 24 and min(result.ids) >= tok.image_token_offset


def test_a_prompt_plus_gen_length_beyond_the_backbones_positions_is_refused(backbone):
    from workers.model import block_diffusion_generate
    from workers.model.errors import ModelInputError

    model, tok = backbone
    prompt = tok.encode("a long answer please")
    too_long = model.config.max_position_embeddings - len(prompt) + 1
    with pytest.raises(ModelInputError, match="max_position_embeddings") as err:
        generate(model, [text_request(tok, "a long answer please", gen_length=too_long)])
    assert err.value.field == "gen_length"
    with pytest.raises(ModelInputError, match="max_position_embeddings"):
        block_diffusion_generate(model, prompt, gen_length=too_long, mask_id=tok.mask_id, eos_id=tok.eos_id)

"""Prompt builders produce exactly the strings of docs/model.md §3.3–3.5, with specials and images as ids."""

from __future__ import annotations

import pytest

from workers.model import prompts
from workers.model.config import BackboneConfig
from workers.model.errors import ModelInputError
from workers.model.text_tokenizer import TextTokenizer

T2I = "<role>SYSTEM</role> You are a text-to-image generation assistant. <role>HUMAN</role>{}<role>ASSISTANT</role>"
THINK = ("<role>SYSTEM</role> You are a text-to-image generation assistant with a thinking process. "
         "<role>HUMAN</role>{}<role>ASSISTANT</role>")
MMU = "<role>SYSTEM</role> You are a multimodal understanding assistant. <role>HUMAN</role>{}{}<role>ASSISTANT</role>"
EDIT = "<role>SYSTEM</role> You are an image editing assistant. <role>HUMAN</role>{}{}<role>ASSISTANT</role>"


@pytest.fixture(scope="module")
def tok(tiny_ckpt) -> TextTokenizer:
    return TextTokenizer.from_folder(tiny_ckpt, BackboneConfig.from_file(tiny_ckpt / "config.json"))


def header(h, w):
    return f"<|image|><|reserved_token_{h}|><|reserved_token_{w}|><boi>"


def text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_t2i_prompts_are_the_spec_strings(tok):
    cond, uncond = prompts.t2i_prompts(tok, "a red cat", 4, 6)
    assert text(tok, cond) == T2I.format("a red cat") + header(4, 6)
    assert text(tok, uncond) == T2I.format("<uncondition>") + header(4, 6)
    assert cond[-4:] == uncond[-4:] == [tok.image_start_id, tok.reserved_id(4), tok.reserved_id(6), tok.boi_id]
    assert uncond.count(tok.uncondition_id) == 1 and tok.uncondition_id not in cond
    cond_t, _ = prompts.t2i_prompts(tok, "a red cat", 4, 6, thinking=True)
    assert text(tok, cond_t) == THINK.format("a red cat") + header(4, 6)


def test_user_text_cannot_inject_special_tokens(tok):
    cond, _ = prompts.t2i_prompts(tok, "x <boi> <|mask|>", 2, 2)
    assert cond.count(tok.boi_id) == 1 and tok.mask_id not in cond
    assert text(tok, cond) == T2I.format("x <boi> <|mask|>") + header(2, 2)


def test_one_call_encoding_gives_the_same_ids_for_plain_text(tok, monkeypatch):
    separate = prompts.t2i_prompts(tok, "a photo of a dog", 3, 5)
    monkeypatch.setattr(prompts, "ENCODE_PIECES_SEPARATELY", False)
    assert prompts.t2i_prompts(tok, "a photo of a dog", 3, 5) == separate


def test_image_block_inserts_codes_with_offset(tok):
    codes = [0, 5, 63, 7, 1, 2]
    block = prompts.image_block(tok, codes, 2, 3)
    assert block == [tok.image_start_id, tok.reserved_id(2), tok.reserved_id(3), tok.boi_id,
                     *[tok.image_token_offset + c for c in codes], tok.image_end_id]
    with pytest.raises(ModelInputError) as err:
        prompts.image_block(tok, codes[:5], 2, 3)
    assert err.value.field == "codes"
    with pytest.raises(ModelInputError, match="codes"):
        prompts.image_block(tok, [0, 1, 2, 3, 4, tok.codebook_size], 2, 3)
    with pytest.raises(ModelInputError) as err:
        prompts.image_block(tok, [], 0, 3)
    assert err.value.field == "grid_h"


def test_understand_prompt_puts_the_image_before_the_question(tok):
    codes = list(range(12))
    ids = prompts.understand_prompt(tok, codes, 3, 4, "What is in this image?")
    # decode leaves the image codes out; the block around them stays
    assert text(tok, ids) == MMU.format(header(3, 4) + "<|/image|>", "What is in this image?")
    start = ids.index(tok.boi_id) + 1
    assert ids[start:start + 12] == [tok.image_token_offset + c for c in codes]


def test_edit_prompts_three_branches(tok):
    codes = list(range(6))
    cond, no_text, no_image = prompts.edit_prompts(tok, codes, 2, 3, "make the sky purple", with_no_image=True)
    block = header(2, 3) + "<|/image|>"
    assert text(tok, cond) == EDIT.format(block, "make the sky purple") + header(2, 3)
    assert text(tok, no_text) == EDIT.format(block, "<uncondition>") + header(2, 3)
    assert text(tok, no_image) == EDIT.format("<|image|>", "make the sky purple") + header(2, 3)
    assert all(c + tok.image_token_offset in cond and c + tok.image_token_offset in no_text for c in codes)
    assert not any(i >= tok.image_token_offset for i in no_image)
    assert prompts.edit_prompts(tok, codes, 2, 3, "x", with_no_image=False)[2] is None


def test_thinking_phases(tok):
    phase1 = prompts.thinking_phase1_prompt(tok, "a dog")
    assert text(tok, phase1) == THINK.format("a dog")
    thought = tok.encode("A dog on grass.")
    emitted = thought + [tok.image_start_id, tok.reserved_id(9), tok.reserved_id(9), tok.boi_id]
    cond, uncond = prompts.thinking_phase2_prompts(tok, "a dog", emitted, 4, 5)
    assert cond == phase1 + thought + [tok.image_start_id, tok.reserved_id(4), tok.reserved_id(5), tok.boi_id]
    assert text(tok, uncond) == THINK.format("<uncondition>") + header(4, 5)
    lone_boi, _ = prompts.thinking_phase2_prompts(tok, "a dog", thought + [tok.boi_id], 4, 5)
    assert lone_boi == cond
    with pytest.raises(ModelInputError) as err:
        prompts.thinking_phase2_prompts(tok, "a dog", thought, 4, 5)
    assert err.value.field == "phase1_ids_through_boi"

"""The word-level vocabulary covers every world text and every prompt the runtime builds, with its specials."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from workers.model.toyworld import NUM_COMBINATIONS, caption, combination
from workers.model.toyworld.vocab import UNKNOWN, split_words, tokenizer_strings, world_texts

SYSTEM = "<role>SYSTEM</role> You are {} <role>HUMAN</role>"  # docs/model.md §3.3–3.5, written out by hand


@pytest.fixture(scope="module")
def strings():
    return tokenizer_strings()


@pytest.fixture(scope="module")
def word_level(strings) -> Tokenizer:
    """What the training slice will build: WordLevel over the words, specials as added tokens."""
    vocab = {token: i for i, token in enumerate(strings.specials + strings.words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in strings.specials])
    return tok


def test_specials_are_the_runtimes_by_string(strings):
    assert set(strings.specials) == {
        "<unk>", "<|mask|>", "<|endoftext|>", "<|image|>", "<|/image|>", "<boi>", "<uncondition>",
        "<role>", "</role>", "<|reserved_token_4|>", "<|reserved_token_8|>"}
    assert len(set(strings.specials + strings.words)) == len(strings.specials) + len(strings.words)
    assert "<|reserved_token_16|>" in tokenizer_strings(grid_sides=(16,)).specials


def test_every_world_text_and_template_encodes_without_unknown_words(strings, word_level):
    unk = word_level.token_to_id(UNKNOWN)
    prompts = [SYSTEM.format("a text-to-image generation assistant."),
               SYSTEM.format("a text-to-image generation assistant with a thinking process."),
               SYSTEM.format("a multimodal understanding assistant."),
               SYSTEM.format("an image editing assistant."), "<role>ASSISTANT</role>"]
    for text in [*prompts, *set(world_texts())]:
        assert unk not in word_level.encode(text, add_special_tokens=False).ids, text
    assert word_level.encode("a red fox in the snow").ids.count(unk) == 3  # outside the world: unknown


def test_answers_decode_back_exactly(word_level):
    for index in range(0, NUM_COMBINATIONS, 11):
        text = caption(combination(index))
        ids = word_level.encode(text).ids + [word_level.token_to_id("<|endoftext|>")]  # as generated, EOS last
        assert word_level.decode(ids) == text  # specials skipped, words joined by single spaces


def test_words_split_on_whitespace_only(strings):
    assert split_words("what shape is it?") == ["what", "shape", "is", "it?"]
    assert {"it?", "text-to-image", "assistant.", "gray", "orange"} <= set(strings.words)
    assert len(strings.specials) + len(strings.words) == 66  # TOY_WORLD.md's prototype had 68 entries
    assert tokenizer_strings(extra_texts=["plan: draw"]).words == tuple(sorted({*strings.words, "plan:", "draw"}))

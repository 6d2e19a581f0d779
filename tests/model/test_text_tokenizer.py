"""The text tokenizer: special ids resolved by string, consistency checks, encode/decode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workers.model.config import BackboneConfig
from workers.model.errors import ModelInputError
from workers.model.text_tokenizer import TextTokenizer, TokenizerFilesError
from workers.model.tiny_checkpoint import make_tiny_checkpoint

OFFICIAL_IDS = {156892, 156895, 156901, 156902, 156904}  # docs/model.md §2.4, for contrast only


@pytest.fixture(scope="module")
def tok(tiny_ckpt) -> TextTokenizer:
    return TextTokenizer.from_folder(tiny_ckpt, BackboneConfig.from_file(tiny_ckpt / "config.json"))


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_tiny_checkpoint(tmp_path / "ckpt", seed=0, with_image_components=False)


def vocab_of(folder: Path) -> dict[str, int]:
    data = json.loads((folder / "tokenizer.json").read_text())
    return {t["content"]: t["id"] for t in data["added_tokens"]}


def test_special_ids_come_from_the_tokenizer_file(tok, tiny_ckpt):
    added = vocab_of(tiny_ckpt)
    assert tok.mask_id == added["<|mask|>"]
    assert tok.image_start_id == added["<|image|>"]
    assert tok.image_end_id == added["<|/image|>"]
    assert tok.boi_id == added["<boi>"]
    assert tok.uncondition_id == added["<uncondition>"]
    assert tok.reserved_id(17) == added["<|reserved_token_17|>"]
    eos = json.loads((tiny_ckpt / "tokenizer_config.json").read_text())["eos_token"]
    assert tok.eos_id == added[eos] == tok.pad_id
    ids = {tok.mask_id, tok.eos_id, tok.image_start_id, tok.image_end_id, tok.boi_id, tok.uncondition_id}
    assert len(ids) == 6 and not ids & OFFICIAL_IDS


def test_vocabulary_sizes_follow_the_configs(tok, tiny_ckpt):
    config = json.loads((tiny_ckpt / "config.json").read_text())
    assert tok.image_token_offset == config["image_token_offset"]
    assert tok.vocab_size == config["vocab_size"]
    assert tok.codebook_size == config["vocab_size"] - config["image_token_offset"]
    image_cfg = tiny_ckpt / "image_tokenizer" / "config.json"
    if image_cfg.is_file():
        assert tok.codebook_size == json.loads(image_cfg.read_text())["vq_config"]["num_embeddings"]
    assert len(tok) <= tok.image_token_offset


def test_encode_adds_nothing_and_decode_round_trips(tok):
    text = "a red cat sitting on a blue chair, 12 cats! ünïcödé"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.eos_id not in ids
    assert tok.decode(ids + [tok.image_token_offset + 3, tok.vocab_size - 1]) == text  # image codes are not text


def test_special_strings_in_text(tok):
    assert tok.encode("<|mask|>") == [tok.mask_id]
    literal = tok.encode("<|mask|>", specials_as_text=True)
    assert tok.mask_id not in literal and tok.decode(literal) == "<|mask|>"
    assert tok.decode([tok.mask_id, *tok.encode("hi")]) == "hi"
    assert tok.decode([tok.mask_id, *tok.encode("hi")], skip_special_tokens=False) == "<|mask|>hi"


def test_grid_side_without_a_reserved_token_is_an_input_error(tok):
    with pytest.raises(ModelInputError) as err:
        tok.reserved_id(10_000)
    assert err.value.field == "grid" and "<|reserved_token_10000|>" in str(err.value)


def _drop_added_token(folder: Path, content: str) -> None:
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != content]
    path.write_text(json.dumps(data))


def test_missing_special_token_is_named(folder):
    _drop_added_token(folder, "<boi>")
    with pytest.raises(TokenizerFilesError, match="'<boi>' is missing"):
        TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json"))


def test_eos_must_equal_config_pad(folder):
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = vocab_of(folder)["<|mask|>"]
    with pytest.raises(TokenizerFilesError, match="pad_token_id"):
        TextTokenizer.from_folder(folder, BackboneConfig.from_dict(config))


def test_missing_eos_declaration_is_named(folder):
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = json.loads((folder / name).read_text())
        data.pop("eos_token")
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(TokenizerFilesError, match="eos_token"):
        TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json"))


def test_codebook_must_match_the_image_tokenizer(folder):
    (folder / "image_tokenizer").mkdir()
    (folder / "image_tokenizer" / "config.json").write_text(json.dumps({"vq_config": {"num_embeddings": 63}}))
    with pytest.raises(TokenizerFilesError, match="num_embeddings = 63"):
        TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json"))
    shutil.rmtree(folder / "image_tokenizer")
    assert TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json")).codebook_size == 64

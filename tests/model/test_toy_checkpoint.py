"""The trained toy checkpoint shipped in models/toy-shapes (issue 12): the official layout, loaded by the runtime's
strict loaders, and a small fixed sample of what it knows, through the Pipeline. The full gate is bench/toy_gate.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from shared.settings import TOY_CHECKPOINT
from workers.model import toyworld as world
from workers.model.toyworld.codes import GENERATION_SIDE, read_codes

from tests.model.test_tiny_checkpoint import OFFICIAL_FIELDS

MAX_BYTES = 25 * 1024 * 1024  # the bound on the shipped checkpoint
# Fixed prompts and scenes: held-out combinations first (index % 7 == 0), then training ones.
PROMPTS = [world.combination(i) for i in (0, 161, 343, 5, 250)]
SCENES = [world.scene_of(i, 3) for i in (7, 294, 476)]


@pytest.fixture(scope="module")
def toy():
    from workers.model import Pipeline

    return Pipeline.from_pretrained(TOY_CHECKPOINT)


def test_official_layout_within_the_size_bound():
    folder = TOY_CHECKPOINT
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "model.safetensors.index.json", "image_tokenizer/config.json",
                 "image_tokenizer/preprocessor_config.json", "image_tokenizer/sigvq_embedding.pt",
                 "decoder/config.json", "decoder-turbo/config.json", "vae/config.json",
                 "vae/diffusion_pytorch_model.safetensors"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert set(config) == OFFICIAL_FIELDS
    # The structural constants of the real config (docs/model.md §2.1) the toy keeps.
    assert config["first_k_dense_replace"] == 1 and config["num_shared_experts"] == 1
    assert config["n_group"] > 1 and config["topk_group"] < config["n_group"]
    assert config["partial_rotary_factor"] == 0.5 and config["use_qk_norm"] is True
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"{size / 2**20:.1f} MiB"


def test_every_part_loads_strictly(toy):
    assert toy.image_tokenizer is not None
    assert toy.get_decoder("turbo") is not None and toy.get_decoder("normal") is not None
    assert toy.config.image_token_offset == toy.text_tokenizer.image_token_offset


# What the shipped model reliably gets right (bench/toy_gate.py has every figure): the backbone's codes say all
# four attributes (99 % of held-out prompts); the decoded picture has the right place, background and colour
# (97–100 %), while the decoder's shapes are right only about half the time, so pixels are not asked for the
# shape here. Understanding answers all five questions (describe: 90 % of held-out scenes; these fixed ones).
PIXELS_RIGHT = {"position": True, "background": True, "colour": True}
EXACT_QUESTIONS = world.QUESTIONS


def reliable(result: dict[str, bool]) -> dict[str, bool]:
    return {attribute: result[attribute] for attribute in PIXELS_RIGHT}


def test_text_to_image_draws_the_prompt(toy):
    pixels = []
    for comb in PROMPTS:
        result = toy.generate_image(world.caption(comb), width=128, height=128, seed=comb.index)
        assert result.image.size == (128, 128) and result.grid == (4, 4)
        said = read_codes(np.array(result.codes).reshape(4, 4))
        assert (said.shape, said.colour, said.row, said.column, said.background) == tuple(comb), world.caption(comb)
        pixels.append(world.check(result.image, comb))
    # Below the measured rates (position and colour 97 %), far above a broken decoder's (chance: 11 %, 17 %).
    assert sum(p["background"] for p in pixels) == len(PROMPTS)
    assert sum(p["position"] for p in pixels) >= len(PROMPTS) - 1
    assert sum(p["colour"] for p in pixels) >= len(PROMPTS) - 1


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: world.caption(s).replace(" ", "-"))
def test_understanding_answers_exactly(toy, scene):
    picture = world.render(scene)
    for question in EXACT_QUESTIONS:
        assert toy.understand_image(picture, question).text == world.answer(question, scene), question


def test_the_tokenizer_reads_place_colour_and_background(toy):
    for scene in SCENES:
        view = world.render(scene).resize((GENERATION_SIDE, GENERATION_SIDE), Image.Resampling.LANCZOS)
        codes, h, w = toy.image_tokenizer.encode(view)
        said = read_codes(np.array(codes).reshape(h, w))
        assert (h, w) == (4, 4)
        assert (said.colour, said.row, said.column, said.background) == (scene.colour, scene.row, scene.column,
                                                                         scene.background)


def test_an_edit_changes_what_it_says_and_keeps_the_rest(toy):
    source = world.scene_of(world.combination_index("square", "green", "middle", "left", "black"), 5)
    edit = world.make_edit(source, "background", "white")
    result = toy.edit_image(world.render(source), edit.instruction, crop_base=64, seed=1)
    assert result.image.size == (128, 128)
    assert reliable(world.check(result.image, edit.target)) == PIXELS_RIGHT

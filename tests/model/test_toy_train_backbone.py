"""The toy backbone's training stage (issue 12): tokenizer, data, objective, resumable training, written files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from workers.model import generation, prompts
from workers.model.backbone import load_backbone
from workers.model.config import BackboneConfig
from workers.model.sampler.batch import assemble
from workers.model.sampler.state import start_request
from workers.model.tasks import UnderstandTask
from workers.model.text_tokenizer import TextTokenizer
from workers.model.toyworld import (EDIT_KINDS, HELD_OUT, NUM_COMBINATIONS, QUESTIONS, TRAINING, answer, caption,
                                    combination, make_edit)
from workers.model.toyworld.codes import CODEBOOK_SIZE, scene_codes
from workers.model.toyworld.edits import current_value, edit_values
from workers.model.toyworld.train import backbone as stage
from workers.model.toyworld.train.backbone_config import backbone_config_json
from workers.model.toyworld.train.backbone_data import (BLOCK, PHASES, TASK_MIX, phase_at, picture_task,
                                                       runtime_tokenizer, sample_examples)
from workers.model.toyworld.train.backbone_objective import NoisedRow, batch_loss, noise_row, row_inputs
from workers.model.toyworld.train.text_tokenizer import write_text_tokenizer
from workers.model.toyworld.train.thinking_plan import plan_sentence, read_plan
from workers.model.toyworld.train.warm_start import seed_backbone
from workers.model.toyworld.world import Scene


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> TextTokenizer:
    """The runtime's TextTokenizer over the written files, as a checkpoint folder holds them."""
    folder = tmp_path_factory.mktemp("toy-tokenizer")
    raw = write_text_tokenizer(folder)
    config = backbone_config_json(raw.get_vocab_size(), raw.token_to_id("<|endoftext|>"))
    (folder / "config.json").write_text(json.dumps(config))
    return TextTokenizer.from_folder(folder, BackboneConfig.from_file(folder / "config.json"))


def _no_unknown(tok: TextTokenizer, ids: list[int]) -> bool:
    return tok.token_id("<unk>") not in ids


# ---- tokenizer -------------------------------------------------------------------------------------------
def test_every_runtime_prompt_of_the_world_encodes_without_unknown(tok):
    assert tok.codebook_size == CODEBOOK_SIZE and tok.image_token_offset == len(tok)
    codes4, codes8 = [0] * 16, [0] * 64
    for index in range(NUM_COMBINATIONS):
        comb = combination(index)
        text = caption(comb)
        for thinking in (False, True):
            assert all(_no_unknown(tok, p) for p in prompts.t2i_prompts(tok, text, 4, 4, thinking=thinking))
        plan = tok.encode(plan_sentence(comb)) + prompts.image_header(tok, 4, 4)
        assert all(_no_unknown(tok, p) for p in prompts.thinking_phase2_prompts(tok, text, plan, 4, 4))
        assert _no_unknown(tok, plan)
        if index % 7 == 3:  # the questions and instructions repeat across combinations: a spread is enough
            for question in QUESTIONS:
                assert _no_unknown(tok, prompts.understand_prompt(tok, codes8, 8, 8, question))
            scene = Scene(*comb)
            for kind in EDIT_KINDS:
                for value in edit_values(kind):
                    if value != current_value(scene, kind):
                        instruction = make_edit(scene, kind, value).instruction
                        branches = prompts.edit_prompts(tok, codes4, 4, 4, instruction, with_no_image=True)
                        assert all(_no_unknown(tok, p) for p in branches), instruction
    assert not _no_unknown(tok, tok.encode("a red fox", specials_as_text=True))  # the check can fail


def test_answers_and_plans_decode_back_exactly(tok):
    for index in range(NUM_COMBINATIONS):
        comb = combination(index)
        for question in QUESTIONS:
            text = answer(question, comb)
            assert tok.decode(tok.encode(text) + [tok.eos_id, tok.eos_id]) == text
        header = prompts.image_header(tok, 4, 4)
        through_boi, thinking = generation.thinking_output(tok, tok.encode(plan_sentence(comb)) + header)
        assert thinking == plan_sentence(comb) and read_plan(thinking) == comb and through_boi[-1] == tok.boi_id
    assert read_plan("i will draw a red fox") is None


# ---- data ------------------------------------------------------------------------------------------------
def test_training_data_never_shows_a_held_out_combination():
    examples = sample_examples(np.random.default_rng(1), 1500)
    held = set(HELD_OUT)
    assert all(e.combos and not held & set(e.combos) for e in examples)
    tasks = {e.task for e in examples}
    assert {"t2i", "t2i_uncond", "think1", "think2", "think2_uncond"} <= tasks
    assert {f"understand/{q}" for q in QUESTIONS} <= tasks
    assert {f"edit/{k}/{b}" for k in EDIT_KINDS for b in ("cond", "no_text")} <= tasks
    assert any(e.task.endswith("no_image") for e in examples)
    assert all(len(e.ids) % BLOCK == 0 for e in examples)
    # The same seed gives the same data (resumable training depends on it).
    first, again = (sample_examples(np.random.default_rng(2), 20) for _ in range(2))
    assert all((a.ids == b.ids).all() and a.task == b.task for a, b in zip(first, again))


def test_a_training_row_is_what_the_sampler_feeds_the_model(tok):
    """t2i with the `<uncondition>` row: ids, positions and attention of block 1 at its first step."""
    rt = runtime_tokenizer()
    scene = Scene("circle", "red", "bottom", "right", "gray", size=15.0)
    assert scene.index in TRAINING
    request = generation.text_to_image_request(rt, picture_task(caption(scene)))
    state = start_request(request)
    window = 2 * BLOCK  # block 1's first step runs x[:, :64]
    # The training rows for the same caption (cond and uncond), block 1 fully masked.
    from workers.model.toyworld.train.backbone_data import _codes, _rows

    rows = _rows(request, _codes(rt, scene_codes(scene, 4)), rt.eos_id)
    noised = []
    for ids, positions, pad, p in rows:
        masked = np.zeros(window, dtype=bool)
        masked[BLOCK:window] = True
        inputs = ids[:window].copy()
        inputs[BLOCK:window] = rt.mask_id
        noised.append(NoisedRow("t2i", inputs, ids[:window], masked, positions[:window], pad))
    # At inference block 0's code positions are filled by now (the same codes, say): block 1's first step.
    p = state.prompt_length
    assert 0 < BLOCK - p < 16
    state.x[:, p:BLOCK] = torch.from_numpy(np.stack([r.ids[p:BLOCK] for r in noised]))
    state.block = 1
    inference = assemble([state.row_input(r) for r in range(2)], dtype=torch.float32, pad_id=rt.mask_id)
    ids, positions, allowed = row_inputs(noised)
    assert torch.equal(ids, inference.input_ids)
    assert torch.equal(positions, inference.position_ids)
    assert torch.equal(allowed, inference.attention_mask[:, 0] == 0)
    assert state.pads[1] > 0 and not allowed[1, :, : state.pads[1]][state.pads[1] :].any()  # pads hidden


def test_noise_masks_only_the_response_of_one_block_and_cuts_after_it():
    rng = np.random.default_rng(3)
    mask_id = runtime_tokenizer().mask_id
    for example in sample_examples(rng, 60):
        row = noise_row(example, rng, mask_id)
        end = len(row.ids)
        assert end % BLOCK == 0 and end > example.prompt_length
        assert row.loss_mask.any() and (row.ids[row.loss_mask] == mask_id).all()
        masked_at = np.nonzero(row.loss_mask)[0]
        assert masked_at.min() >= max(end - BLOCK, example.prompt_length)
        assert (row.ids[~row.loss_mask] == example.ids[:end][~row.loss_mask]).all()


# ---- training stage --------------------------------------------------------------------------------------
def _fixed_rows(count=16):
    rng = np.random.default_rng(99)
    mask_id = runtime_tokenizer().mask_id
    return [noise_row(e, rng, mask_id) for e in sample_examples(rng, count)]


def _state(folder):
    return torch.load(folder / "backbone" / "state.pt", weights_only=False)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    options = dict(seed=5, steps=8, batch=6, lr=3e-3, warmup=1, log_every=4, print_fn=lambda line: None)
    stage.train_backbone(tmp_path / "a", stop_after=4, **options)  # interrupted after 4 steps
    assert _state(tmp_path / "a")["step"] == 4 and stage.read_report(tmp_path / "a") is None
    report = stage.train_backbone(tmp_path / "a", **options)  # resumed
    assert report["finished"] and report["step"] == 8 and report["stopped_by"] == "steps"
    stage.train_backbone(tmp_path / "b", **options)  # uninterrupted
    a, b = _state(tmp_path / "a")["model"], _state(tmp_path / "b")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if k.endswith("expert_bias"))  # the router bias is balanced

    rows = _fixed_rows()
    config = stage.toy_config()
    untrained = stage.new_model(config, seed=5)
    trained = stage.new_model(config, seed=5)
    trained.load_state_dict(a)
    with torch.no_grad():
        before, after = batch_loss(untrained, rows)[0].item(), batch_loss(trained, rows)[0].item()
    assert after < before - 0.3, (before, after)

    # A finished stage is skipped: nothing changes.
    stamp = (tmp_path / "a" / "backbone" / "state.pt").stat().st_mtime_ns
    assert stage.train_backbone(tmp_path / "a", **options)["step"] == 8
    assert (tmp_path / "a" / "backbone" / "state.pt").stat().st_mtime_ns == stamp


def test_written_checkpoint_loads_strictly_and_runs(tmp_path):
    stage.train_backbone(tmp_path / "work", seed=1, steps=2, batch=4, print_fn=lambda line: None)
    out = stage.write_backbone(tmp_path / "work", tmp_path / "ck")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert all((out / f).stat().st_mode & 0o777 == 0o644 for f in files)  # readable by a service user
    total = 0
    for file in files:
        with safe_open(str(out / file), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                total += t.numel() * t.element_size()
                assert t.dtype == (torch.float32 if name.endswith("expert_bias") else torch.bfloat16), name
    assert total == index["metadata"]["total_size"]
    assert sum((out / f).stat().st_size for f in files) < 8e6
    config = BackboneConfig.from_file(out / "config.json")
    assert (config.n_group, config.topk_group, config.first_k_dense_replace, config.partial_rotary_factor) == (4, 2, 1, 0.5)
    model = load_backbone(out)  # strict: every official name present, nothing extra
    tok = TextTokenizer.from_folder(out, config)
    assert tok.image_token_offset == config.image_token_offset and config.codebook_size == CODEBOOK_SIZE
    codes = generation.text_to_image_tokens(model, tok, picture_task(caption(combination(1)))).codes
    assert len(codes) == 16 and all(0 <= c < CODEBOOK_SIZE for c in codes)
    reply = generation.understand_tokens(model, tok, UnderstandTask(QUESTIONS[0], gen_length=64), [0] * 64, 8, 8)
    assert isinstance(reply, str)


def test_phase_two_draws_more_where_describe_and_no_text_edits_from_step_7000():
    assert phase_at(6999) is PHASES[0][1] and phase_at(7000) is PHASES[1][1] and phase_at(10**6) is PHASES[1][1]
    rng = np.random.default_rng(4)
    examples = sample_examples(rng, 3000, phase=phase_at(7000))
    asked = [e.task.split("/", 1)[1] for e in examples if e.task.startswith("understand/")]
    share = {q: asked.count(q) / len(asked) for q in QUESTIONS}
    assert 0.35 < share["describe the picture"] < 0.45 and 0.25 < share["where is the shape?"] < 0.35
    edits = [e.task.rsplit("/", 1)[1] for e in examples if e.task.startswith("edit/")]
    assert 0.16 < edits.count("no_text") / len(edits) < 0.24
    first = [e.task.rsplit("/", 1)[1] for e in sample_examples(rng, 3000) if e.task.startswith("edit/")]
    assert first.count("no_text") / len(first) < 0.13  # the first phase keeps its 10 %


def test_a_seeded_backbone_resumes_at_its_step_with_a_fresh_warm_up(tmp_path):
    stage.train_backbone(tmp_path / "work", seed=1, steps=2, batch=4, print_fn=lambda line: None)
    out = stage.write_backbone(tmp_path / "work", tmp_path / "ck")
    seed_backbone(out, tmp_path / "again", step=2, wall_s=30.0)
    seeded = _state(tmp_path / "again")
    assert seeded["step"] == 2 and "optimizer" not in seeded
    written = load_backbone(out).state_dict()
    assert all(torch.equal(v, written[k].float()) for k, v in seeded["model"].items())
    report = stage.train_backbone(tmp_path / "again", seed=1, steps=3, batch=4, print_fn=lambda line: None)
    assert report["step"] == 3 and report["train_minutes"] >= 0.5
    with pytest.raises(FileExistsError):
        seed_backbone(out, tmp_path / "again", step=2, wall_s=30.0)
    # The fresh optimiser warms up from the seeded step to where the schedule stands, then follows it.
    assert stage.learning_rate(100, 1000, 1.0, 10, warm_from=100) < 0.2 * stage.learning_rate(100, 1000, 1.0, 10)
    assert stage.learning_rate(110, 1000, 1.0, 10, warm_from=100) == stage.learning_rate(110, 1000, 1.0, 10)

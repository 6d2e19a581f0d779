import pytest

from shared.jobs import (
    EditParams,
    InvalidArgument,
    JobKind,
    TextToImageParams,
    UnderstandParams,
    parse_state,
    validate_params,
    validate_priority,
)


def invalid_field(kind, params, **kw):
    with pytest.raises(InvalidArgument) as info:
        validate_params(kind, params, max_prompt_chars=kw.get("max_prompt_chars", 100))
    return info.value.field


def test_text_to_image_defaults_mirror_the_reference():
    p = validate_params(JobKind.TEXT_TO_IMAGE, {"prompt": "a red fox"}, max_prompt_chars=100)
    assert isinstance(p, TextToImageParams)
    assert (p.width, p.height, p.steps, p.cfg_scale, p.block_length) == (1024, 1024, 8, 2.0, 32)
    assert (p.mode, p.thinking_steps, p.thinking_gen_length) == ("normal", 32, 4096)
    assert (p.decoder, p.decoder_steps, p.resolution_multiplier, p.seed) == ("turbo", 8, 2, None)
    assert p.sprint.enabled is False and p.sprint.remasking == "low_confidence"


def test_normal_decoder_defaults_to_50_steps_unless_given():
    assert validate_params("TEXT_TO_IMAGE", {"prompt": "x", "decoder": "normal"}, max_prompt_chars=9).decoder_steps == 50
    p = validate_params("EDIT", {"instruction": "x", "decoder": "normal", "decoder_steps": 20}, max_prompt_chars=9)
    assert isinstance(p, EditParams) and p.decoder_steps == 20


def test_understand_and_edit_defaults():
    u = validate_params("UNDERSTAND", {"question": "what is this?"}, max_prompt_chars=100)
    assert isinstance(u, UnderstandParams)
    assert (u.gen_length, u.steps, u.block_length, u.threshold) == (2048, 32, 32, 0.95)
    e = validate_params("EDIT", {"instruction": "make it blue"}, max_prompt_chars=100)
    assert (e.steps, e.block_length, e.cfg_text_scale, e.cfg_image_scale) == (8, 32, 4.0, 0.0)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"prompt": "x", "width": 1000}, "width"),
        ({"prompt": "x", "height": 4096}, "height"),
        ({"prompt": "x", "width": 64}, "width"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "steps": 64}, "steps"),  # more steps than block tokens
        ({"prompt": "x", "mode": "dreaming"}, "mode"),
        ({"prompt": "x", "decoder": "fast"}, "decoder"),
        ({"prompt": "x", "sprint": {"keep_ratio": 1.5}}, "sprint.keep_ratio"),
        ({"prompt": "x", "sprint": {"remasking": "random"}}, "sprint.remasking"),
        ({"prompt": "x", "resolution_multiplier": 4, "width": 1056}, "width"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 101}, "prompt"),
        ({}, "prompt"),
    ],
)
def test_bad_text_to_image_params_name_the_field(params, field):
    assert invalid_field("TEXT_TO_IMAGE", params) == field


@pytest.mark.parametrize("kind, params, said", [
    ("TEXT_TO_IMAGE", {"prompt": "x", "colour": "red"}, "colour: unknown field"),
    ("TEXT_TO_IMAGE", {}, "prompt: is required"),
    ("TEXT_TO_IMAGE", {"prompt": " "}, "prompt: must not be empty"),
    ("TEXT_TO_IMAGE", {"prompt": "x", "width": 2080}, "width: Input should be less than or equal to 2048"),
    ("UNDERSTAND", {"question": "q", "steps": 64}, "steps: must not exceed block_length (32)"),
    ("EDIT", {"instruction": "x" * 10}, None),  # at the prompt limit
    ("EDIT", {"instruction": "x" * 11}, "instruction: is 11 characters long; the limit is 10"),
    ("VIDEO", {"prompt": "x"},
     "kind: unknown job kind 'VIDEO'; expected one of ['TEXT_TO_IMAGE', 'UNDERSTAND', 'EDIT']"),
    ("EDIT", ["instruction"], "params: must be a mapping"),
    ("UNDERSTAND", {"question": "q", "sprint": {"keep_ratio": 0}}, "sprint.keep_ratio: Input should be greater than 0"),
])
def test_a_refusal_says_what_is_wrong_in_words_a_user_reads(kind, params, said):
    if said is None:
        validate_params(kind, params, max_prompt_chars=10)
        return
    with pytest.raises(InvalidArgument) as info:
        validate_params(kind, params, max_prompt_chars=10)
    assert str(info.value) == said


def test_the_prompt_limit_defaults_to_the_settings(monkeypatch, process_state):
    monkeypatch.setenv("LLADA_MAX_PROMPT_CHARS", "5")
    assert validate_params("TEXT_TO_IMAGE", {"prompt": "x" * 5}).prompt == "x" * 5
    with pytest.raises(InvalidArgument, match="the limit is 5"):
        validate_params("TEXT_TO_IMAGE", {"prompt": "x" * 6})


def test_an_unknown_state_is_refused_naming_it():
    with pytest.raises(InvalidArgument) as info:
        parse_state("DONE")
    assert (info.value.field, str(info.value)) == ("state", "state: unknown job state 'DONE'")


def test_width_message_says_what_is_wrong():
    with pytest.raises(InvalidArgument, match="multiple of 32"):
        validate_params("TEXT_TO_IMAGE", {"prompt": "x", "width": 1000}, max_prompt_chars=10)


def test_unknown_kind_and_kind_specific_fields():
    assert invalid_field("VIDEO", {"prompt": "x"}) == "kind"
    assert invalid_field("UNDERSTAND", {"question": "q", "gen_length": 0}) == "gen_length"
    assert invalid_field("EDIT", {"instruction": "x", "mode": "thinking"}) == "mode"  # no thinking for edits
    assert invalid_field("EDIT", {"instruction": "x", "cfg_image_scale": -1}) == "cfg_image_scale"


def test_priority_bounds():
    assert (validate_priority(0), validate_priority(9)) == (0, 9)
    for past in (-1, 10):
        with pytest.raises(InvalidArgument) as info:
            validate_priority(past)
        assert str(info.value) == "priority: must be an integer in [0, 9]"


@pytest.mark.parametrize("kind, field", [("TEXT_TO_IMAGE", "prompt"), ("UNDERSTAND", "question"),
                                         ("EDIT", "instruction")])
def test_text_fields_refuse_control_characters_but_keep_tabs_and_newlines(kind, field):
    # One rule in shared.jobs, so the gateway and the worker agree on what a stored job can hold.
    for bad in ("a\x00b", "\x01", "a\x1bb", "a\x0bb", "a\x0cb", "a\x1fb"):
        with pytest.raises(InvalidArgument, match="control characters") as info:
            validate_params(kind, {field: bad}, max_prompt_chars=100)
        assert info.value.field == field
    kept = "line one\n\tline two\r\n"
    assert getattr(validate_params(kind, {field: kept}, max_prompt_chars=100), field) == kept

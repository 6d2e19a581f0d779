"""Prompt id sequences for text-to-image, thinking, understanding and editing (docs/model.md §3.3–3.5, §2.4).

Every prompt is a list of pieces joined as ids:
* template text (role tags and system prompts, with the spec's literal spaces) — encoded on its own;
* user text (prompt, question, instruction) — encoded on its own, special-token strings read as text;
* special tokens and image blocks — inserted as ids looked up by string, never through BPE.

Padding the companions of a CFG batch to one length is the sampler's job (§3.2), not done here.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ModelInputError
from .text_tokenizer import TextTokenizer

T2I_SYSTEM = "You are a text-to-image generation assistant."
T2I_THINKING_SYSTEM = "You are a text-to-image generation assistant with a thinking process."
UNDERSTAND_SYSTEM = "You are a multimodal understanding assistant."
EDIT_SYSTEM = "You are an image editing assistant."
ASSISTANT_TAG = "<role>ASSISTANT</role>"

# §3.3 / §11 q8: sglang encodes the prompt pieces separately, LI encodes the whole string in one call; HF is
# unverified. We encode separately: a user's text then tokenises the same whatever template surrounds it,
# and no BPE merge can cross from the template into user text. Where role tags are special tokens (as in
# every LLaDA2 tokenizer we know) both ways give the same ids, because added tokens split the text anyway.
ENCODE_PIECES_SEPARATELY = True

# Not in the spec: user text is encoded with special-token strings read as plain text, so "<|mask|>" or
# "<boi>" typed in a prompt cannot inject control tokens. The reference tokenises them as specials; the
# ids only differ for text that contains such strings. (Applies when encoding pieces separately.)
USER_SPECIALS_AS_TEXT = True

# §3.5 / §11 q4: the no-image editing branch keeps a lone `<|image|>` before the instruction, as sglang's
# preprocessor (which states it follows HF `edit_image`) builds it.
NO_IMAGE_KEEPS_LONE_IMAGE_START = True

# §3.3 thinking mode / §11 q9: phase 2 uses the *requested* grid in the cond row's image header (replacing
# the h, w the model wrote in phase 1), because the number of generated image tokens and the decoder size
# come from the request, and sglang's uncond row uses the requested grid too.
PHASE2_USES_REQUESTED_GRID = True


def _system_header(system: str) -> str:
    # §3.3: literal spaces around the system text.
    return f"<role>SYSTEM</role> {system} <role>HUMAN</role>"


class _Builder:
    """Accumulates prompt pieces; text is encoded per piece or, in one-call mode, per run of text."""

    def __init__(self, tok: TextTokenizer):
        self.tok = tok
        self._ids: list[int] = []
        self._pending: list[str] = []  # one-call mode: adjacent text waiting to be encoded together

    def template(self, text: str) -> "_Builder":
        return self._text(text, literal=False)

    def user(self, text: str, field: str) -> "_Builder":
        if not isinstance(text, str):
            raise ModelInputError(field, f"expected text, got {type(text).__name__}")
        return self._text(text, literal=USER_SPECIALS_AS_TEXT)

    def add(self, ids: Sequence[int]) -> "_Builder":
        self._flush()
        self._ids += [int(i) for i in ids]
        return self

    def _text(self, text: str, literal: bool) -> "_Builder":
        if ENCODE_PIECES_SEPARATELY:
            self._ids += self.tok.encode(text, specials_as_text=literal)
        else:
            self._pending.append(text)
        return self

    def _flush(self) -> None:
        if self._pending:
            self._ids += self.tok.encode("".join(self._pending))
            self._pending = []

    @property
    def ids(self) -> list[int]:
        self._flush()
        return list(self._ids)


def image_header(tok: TextTokenizer, h: int, w: int) -> list[int]:
    """`<|image|> <|reserved_token_h|> <|reserved_token_w|> <boi>` (§2.4)."""
    _check_grid(h, w)
    return [tok.image_start_id, tok.reserved_id(h), tok.reserved_id(w), tok.boi_id]


def image_block(tok: TextTokenizer, codes: Sequence[int], h: int, w: int) -> list[int]:
    """Header, the h·w codes (raster order, offset added here) and `<|/image|>` (§2.4)."""
    _check_grid(h, w)
    codes = [int(c) for c in codes]
    if len(codes) != h * w:
        raise ModelInputError("codes", f"expected h·w = {h}×{w} = {h * w} image codes, got {len(codes)}")
    bad = [c for c in codes if not 0 <= c < tok.codebook_size]
    if bad:
        raise ModelInputError("codes", f"image codes must lie in [0, {tok.codebook_size}); got e.g. {bad[0]}")
    return image_header(tok, h, w) + [tok.image_token_offset + c for c in codes] + [tok.image_end_id]


def _check_grid(h: int, w: int) -> None:
    for name, side in (("grid_h", h), ("grid_w", w)):
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
            raise ModelInputError(name, f"grid side must be a positive integer, got {side!r}")


def _prefix(tok: TextTokenizer, system: str) -> _Builder:
    return _Builder(tok).template(_system_header(system))


def t2i_prompts(tok: TextTokenizer, prompt: str, grid_h: int, grid_w: int,
                thinking: bool = False) -> tuple[list[int], list[int]]:
    """(cond, uncond) for text-to-image (§3.3); uncond replaces the prompt by `<uncondition>`."""
    system = T2I_THINKING_SYSTEM if thinking else T2I_SYSTEM
    header = image_header(tok, grid_h, grid_w)
    cond = _prefix(tok, system).user(prompt, "prompt").template(ASSISTANT_TAG).add(header).ids
    uncond = _prefix(tok, system).add([tok.uncondition_id]).template(ASSISTANT_TAG).add(header).ids
    return cond, uncond


def thinking_phase1_prompt(tok: TextTokenizer, prompt: str) -> list[int]:
    """Thinking mode phase 1 (§3.3): ends at `<role>ASSISTANT</role>`, no image header."""
    return _prefix(tok, T2I_THINKING_SYSTEM).user(prompt, "prompt").template(ASSISTANT_TAG).ids


def thinking_phase2_prompts(tok: TextTokenizer, prompt: str, phase1_ids_through_boi: Sequence[int],
                            grid_h: int, grid_w: int) -> tuple[list[int], list[int]]:
    """Thinking mode phase 2 (§3.3): cond = phase-1 prompt + phase-1 output through `<boi>`; uncond = the
    thinking template with `<uncondition>` + the requested image header.

    The phase-1 output must end with `<boi>`. If it ends with a full `<|image|><h><w><boi>` header, h and w
    are replaced by the requested grid (PHASE2_USES_REQUESTED_GRID); if the model wrote `<boi>` without
    that header, the full requested header replaces the lone `<boi>`."""
    out = [int(i) for i in phase1_ids_through_boi]
    if not out or out[-1] != tok.boi_id:
        raise ModelInputError("phase1_ids_through_boi", "must end with the <boi> token")
    header = image_header(tok, grid_h, grid_w)
    if len(out) >= 4 and out[-4] == tok.image_start_id:
        out = out[:-4] + (header if PHASE2_USES_REQUESTED_GRID else out[-4:])
    else:
        out = out[:-1] + header
    cond = thinking_phase1_prompt(tok, prompt) + out
    uncond = _prefix(tok, T2I_THINKING_SYSTEM).add([tok.uncondition_id]).template(ASSISTANT_TAG).add(header).ids
    return cond, uncond


def understand_prompt(tok: TextTokenizer, codes: Sequence[int], grid_h: int, grid_w: int,
                      question: str) -> list[int]:
    """Understanding (§3.4): image block before the question, single turn."""
    block = image_block(tok, codes, grid_h, grid_w)
    return _prefix(tok, UNDERSTAND_SYSTEM).add(block).user(question, "question").template(ASSISTANT_TAG).ids


def edit_prompts(tok: TextTokenizer, codes: Sequence[int], grid_h: int, grid_w: int, instruction: str,
                 with_no_image: bool) -> tuple[list[int], list[int], list[int] | None]:
    """(cond, no_text, no_image or None) for editing with 3-way CFG (§3.5); output grid = input grid."""
    block = image_block(tok, codes, grid_h, grid_w)
    header = image_header(tok, grid_h, grid_w)
    cond = _prefix(tok, EDIT_SYSTEM).add(block).user(instruction, "instruction").template(ASSISTANT_TAG)
    no_text = _prefix(tok, EDIT_SYSTEM).add(block).add([tok.uncondition_id]).template(ASSISTANT_TAG)
    no_image = None
    if with_no_image:
        lone = [tok.image_start_id] if NO_IMAGE_KEEPS_LONE_IMAGE_START else []
        no_image = _prefix(tok, EDIT_SYSTEM).add(lone).user(instruction, "instruction").template(ASSISTANT_TAG)
        no_image = no_image.add(header).ids
    return cond.add(header).ids, no_text.add(header).ids, no_image

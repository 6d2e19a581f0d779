"""The toy checkpoint's word-level `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`).

Contract (`toyworld.vocab`): words split on whitespace only, specials are added tokens that split off first
(`<role>HUMAN</role>a red …`), decoding joins words with single spaces, so answers and captions come back
exactly. The runtime (`workers.model.text_tokenizer`) finds every special by its string, EOS through
`tokenizer_config.json`, as it does for the official files.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from workers.model.tiny_checkpoint import EOS_TOKEN
from workers.model.text_tokenizer import MASK

from ..vocab import UNKNOWN, tokenizer_strings
from .thinking_plan import plan_texts


def build_text_tokenizer() -> Tokenizer:
    """Specials first (ids 0…), then the sorted words: deterministic, so a rebuilt tokenizer has the same ids."""
    strings = tokenizer_strings(extra_texts=plan_texts())
    vocab = {token: i for i, token in enumerate(strings.specials + strings.words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordPiece joins tokens with one space (no word carries its "##" prefix); cleanup off keeps "it?" as is.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in strings.specials])
    return tok


def write_text_tokenizer(folder: str | Path, tok: Tokenizer | None = None) -> Tokenizer:
    """The three tokenizer files, as `tiny_checkpoint` writes them (HF fast-tokenizer layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tok or build_text_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    specials = [t.content for t in tok.get_added_tokens_decoder().values()]
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for s in specials}
    special_map = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "mask_token": MASK, "unk_token": UNKNOWN}
    _write_json(folder / "special_tokens_map.json", special_map)
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        **special_map,
        "added_tokens_decoder": dict(sorted(added.items(), key=lambda kv: int(kv[0]))),
    })
    return tok


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")

"""The LLaDA2 text tokenizer (`tokenizer.json`, offline) with its special ids resolved by string.

docs/model.md "How to use this spec" 2 and §2.4: no special id is hard-coded. Each is looked up by its
string; EOS comes from `tokenizer_config.json` / `special_tokens_map.json` and must equal config.json's
`pad_token_id`; image codes live at `image_token_offset + code`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from .config import BackboneConfig
from .errors import ModelInputError

MASK = "<|mask|>"
IMAGE_START = "<|image|>"
IMAGE_END = "<|/image|>"
BOI = "<boi>"
UNCONDITION = "<uncondition>"
RESERVED = "<|reserved_token_{}|>"


class TokenizerFilesError(ValueError):
    """The tokenizer files lack a token or disagree with the model config."""


def _token_string(value: Any) -> str | None:
    """HF files store a special token either as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _find_codebook_size(folder: Path) -> int | None:
    """VQ codebook size from image_tokenizer/config.json (`num_embeddings`, preferably under vq_config)."""
    path = folder / "image_tokenizer" / "config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    for section in (data.get("vq_config"), data):
        if isinstance(section, dict) and isinstance(section.get("num_embeddings"), int):
            return section["num_embeddings"]
    return None


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, config: BackboneConfig, eos_token: str, *,
                 codebook_size: int | None = None, where: str = "tokenizer.json"):
        self._tok = tokenizer
        # A second instance that reads special-token strings as plain text, for user-supplied text.
        self._literal = Tokenizer.from_str(tokenizer.to_str())
        self._literal.encode_special_tokens = True
        self._where = where
        self.config = config
        self.image_token_offset = config.image_token_offset
        self.vocab_size = config.vocab_size
        self.codebook_size = config.codebook_size
        if codebook_size is not None and codebook_size != self.codebook_size:
            raise TokenizerFilesError(
                f"config.json vocab_size − image_token_offset = {self.codebook_size} but "
                f"image_tokenizer/config.json num_embeddings = {codebook_size}")
        self.mask_id = self._require(MASK)
        self.eos_id = self._require(eos_token)
        self.pad_id = config.pad_token_id
        if self.eos_id != self.pad_id:
            raise TokenizerFilesError(f"tokenizer EOS {eos_token!r} has id {self.eos_id} but config.json "
                                      f"pad_token_id is {self.pad_id}; they must be the same token")
        self.image_start_id = self._require(IMAGE_START)
        self.image_end_id = self._require(IMAGE_END)
        self.boi_id = self._require(BOI)
        self.uncondition_id = self._require(UNCONDITION)

    @classmethod
    def from_folder(cls, folder: str | Path, config: BackboneConfig) -> "TextTokenizer":
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerFilesError(f"{path} not found")
        eos = None
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            meta = folder / name
            if meta.is_file():
                eos = eos or _token_string(json.loads(meta.read_text()).get("eos_token"))
        if eos is None:
            raise TokenizerFilesError(f"{folder}: no 'eos_token' in tokenizer_config.json or special_tokens_map.json")
        return cls(Tokenizer.from_file(str(path)), config, eos,
                   codebook_size=_find_codebook_size(folder), where=str(path))

    # ---- ids by string ---------------------------------------------------------------------------
    def _require(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise TokenizerFilesError(f"{self._where}: special token {token!r} is missing")
        if token_id >= self.image_token_offset:
            raise TokenizerFilesError(f"{self._where}: special token {token!r} has id {token_id}, inside the "
                                      f"image-code range starting at image_token_offset {self.image_token_offset}")
        return token_id

    def token_id(self, token: str) -> int:
        """Id of any single token string (e.g. a role tag); clear error if the tokenizer lacks it."""
        return self._require(token)

    def reserved_id(self, n: int) -> int:
        """`<|reserved_token_n|>`, used to carry an image grid side (§2.4)."""
        if self._tok.token_to_id(RESERVED.format(n)) is None:
            raise ModelInputError("grid", f"grid side {n} has no {RESERVED.format(n)} token in {self._where}")
        return self._require(RESERVED.format(n))

    # ---- text ------------------------------------------------------------------------------------
    def encode(self, text: str, *, specials_as_text: bool = False) -> list[int]:
        """Token ids of `text`, nothing added. Special-token strings in `text` become their ids, unless
        `specials_as_text` (used for user text, so a prompt cannot smuggle in `<|mask|>` or `<boi>`)."""
        tok = self._literal if specials_as_text else self._tok
        return tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; image codes (ids ≥ image_token_offset) are not text and are left out."""
        text_ids = [int(i) for i in ids if 0 <= int(i) < self.image_token_offset]
        return self._tok.decode(text_ids, skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

"""The backbone's `config.json` (docs/model.md §2.1) as a validated dataclass.

Only the fields the runtime uses become attributes; every field of the file (including ones we do not use,
such as `auto_map`) stays available in `raw`. Bad values raise `ConfigError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A checkpoint configuration file is missing a field or holds an unusable value."""

    def __init__(self, path: str, field_name: str, message: str):
        super().__init__(f"{path}: field '{field_name}': {message}")
        self.field = field_name


# §2.1: these fields are absent from the Uni config; the model behaves as if they held these values.
# `tie_word_embeddings` defaults to False in LLaDA2MoeConfig (MINI), so lm_head is a separate weight.
_DEFAULT_TIE_WORD_EMBEDDINGS = False


@dataclass(frozen=True)
class BackboneConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    partial_rotary_factor: float
    max_position_embeddings: int
    pad_token_id: int
    image_token_offset: int
    num_experts: int
    num_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    moe_intermediate_size: int
    first_k_dense_replace: int
    use_qk_norm: bool = True
    use_qkv_bias: bool = False
    use_bias: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = _DEFAULT_TIE_WORD_EMBEDDINGS
    torch_dtype: str = "bfloat16"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def rotary_dim(self) -> int:
        """Leading dims of each head that rotate (§2.2: 64 of 128 with partial_rotary_factor 0.5)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def num_query_groups(self) -> int:
        """Query heads sharing one key/value head (GQA)."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def qkv_width(self) -> int:
        return (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim

    @property
    def codebook_size(self) -> int:
        return self.vocab_size - self.image_token_offset

    def is_moe_layer(self, index: int) -> bool:
        return index >= self.first_k_dense_replace

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> "BackboneConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "(file)", "backbone config.json not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), "(file)", f"not valid JSON: {exc}") from None
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> "BackboneConfig":
        def need(name: str, kind: type) -> Any:
            if name not in data or data[name] is None:
                raise ConfigError(where, name, "required but missing")
            value = data[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(where, name, f"expected {kind.__name__}, got {value!r}")
            return value

        def opt(name: str, kind: type, default: Any) -> Any:
            return need(name, kind) if data.get(name) is not None else default

        hidden = need("hidden_size", int)
        heads = need("num_attention_heads", int)
        rope_theta, partial = _rope_fields(data, where)
        cfg = cls(
            vocab_size=need("vocab_size", int),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size", int),
            num_hidden_layers=need("num_hidden_layers", int),
            num_attention_heads=heads,
            num_key_value_heads=opt("num_key_value_heads", int, heads),
            head_dim=opt("head_dim", int, hidden // heads if heads else 0),
            rms_norm_eps=need("rms_norm_eps", float),
            rope_theta=rope_theta,
            partial_rotary_factor=partial,
            max_position_embeddings=need("max_position_embeddings", int),
            pad_token_id=need("pad_token_id", int),
            image_token_offset=need("image_token_offset", int),
            num_experts=need("num_experts", int),
            num_shared_experts=opt("num_shared_experts", int, 0),
            num_experts_per_tok=need("num_experts_per_tok", int),
            n_group=opt("n_group", int, 1),
            topk_group=opt("topk_group", int, 1),
            routed_scaling_factor=opt("routed_scaling_factor", float, 1.0),
            moe_intermediate_size=need("moe_intermediate_size", int),
            first_k_dense_replace=opt("first_k_dense_replace", int, 0),
            use_qk_norm=opt("use_qk_norm", bool, True),
            use_qkv_bias=opt("use_qkv_bias", bool, False),
            use_bias=opt("use_bias", bool, False),
            hidden_act=opt("hidden_act", str, "silu"),
            tie_word_embeddings=opt("tie_word_embeddings", bool, _DEFAULT_TIE_WORD_EMBEDDINGS),
            torch_dtype=opt("torch_dtype", str, "bfloat16"),
            raw=dict(data),
        )
        cfg._validate(where)
        return cfg

    def _validate(self, where: str) -> None:
        def bad(name: str, message: str) -> None:
            raise ConfigError(where, name, message)

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok", "n_group",
                     "topk_group", "moe_intermediate_size"):
            if getattr(self, name) <= 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_key_value_heads", f"{self.num_key_value_heads} does not divide num_attention_heads "
                f"{self.num_attention_heads}")
        if self.tie_word_embeddings:
            bad("tie_word_embeddings", "tied embeddings are not implemented (LLaDA2.0-Uni ships a separate lm_head)")
        if self.hidden_act != "silu":
            bad("hidden_act", f"only 'silu' (SwiGLU) is implemented, got {self.hidden_act!r}")
        if not 0 < self.partial_rotary_factor <= 1:
            bad("partial_rotary_factor", f"must be in (0, 1], got {self.partial_rotary_factor}")
        if self.rotary_dim % 2:
            bad("partial_rotary_factor", f"rotary dim head_dim×factor = {self.rotary_dim} must be even "
                "(rotate-half pairs dims)")
        if self.num_experts % self.n_group:
            bad("n_group", f"{self.n_group} does not divide num_experts {self.num_experts}")
        if self.num_experts // self.n_group < 2:
            bad("n_group", "each expert group needs at least 2 experts (group score = sum of the top 2)")
        if self.topk_group > self.n_group:
            bad("topk_group", f"{self.topk_group} exceeds n_group {self.n_group}")
        if self.num_experts_per_tok > self.topk_group * (self.num_experts // self.n_group):
            bad("num_experts_per_tok", f"{self.num_experts_per_tok} exceeds the experts in the kept groups "
                f"({self.topk_group} × {self.num_experts // self.n_group})")
        if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
            bad("first_k_dense_replace", f"must be in [0, num_hidden_layers], got {self.first_k_dense_replace}")
        if not 0 < self.image_token_offset < self.vocab_size:
            bad("image_token_offset", f"must lie inside (0, vocab_size={self.vocab_size}), "
                f"got {self.image_token_offset}")
        if not 0 <= self.pad_token_id < self.image_token_offset:
            bad("pad_token_id", f"must be a text id below image_token_offset, got {self.pad_token_id}")


def _rope_fields(data: dict[str, Any], where: str) -> tuple[float, float]:
    """rope_theta and partial_rotary_factor from `rope_parameters` (transformers ≥ 4.5x style) and/or the
    top-level fields (older style). The official file carries both with equal values (§2.1); if they
    disagree we refuse rather than guess which one the weights were trained with."""
    params = data.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(where, "rope_parameters", f"expected an object, got {params!r}")
    rope_type = params.get("rope_type", data.get("rope_type", "default"))
    if rope_type != "default":
        raise ConfigError(where, "rope_parameters.rope_type", f"only 'default' RoPE is implemented, got {rope_type!r}")

    def pick(name: str, default: float | None) -> float:
        nested, top = params.get(name), data.get(name)
        if nested is not None and top is not None and float(nested) != float(top):
            raise ConfigError(where, name, f"rope_parameters.{name}={nested} disagrees with top-level {top}")
        value = nested if nested is not None else top
        if value is None:
            if default is None:
                raise ConfigError(where, name, "required but missing (top level or rope_parameters)")
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, name, f"expected a number, got {value!r}")
        return float(value)

    return pick("rope_theta", None), pick("partial_rotary_factor", 1.0)

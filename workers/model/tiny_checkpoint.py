"""Make a tiny, seeded LLaDA2.0-Uni checkpoint in the official layout (docs/model.md §10).

Same files, key names, config field sets and dtypes as the real checkpoint (§6), tiny sizes (§10.2):
sharded bf16 backbone with an fp32 `expert_bias`, a small byte-level BPE `tokenizer.json` whose special
tokens sit at ids unlike the official ones, and the image components written by
`workers.model.tiny_image_components`. A few MB, made in about a second:

    python -m workers.model.tiny_checkpoint OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from .config import BackboneConfig
from .weights import expected_shapes

# ---- tokenizer (§10.1 rule 5) ------------------------------------------------------------------------
EOS_TOKEN = "<|endoftext|>"  # §11 q8: the official string of id 156892 was not seen; Ling-family EOS string.
MAX_RESERVED = 64  # <|reserved_token_0|> … <|reserved_token_64|>: grid sides up to 64 tokens
# Appended after the BPE vocabulary in an order unlike the official one (there: eos < mask < image < /image
# < boi), so code that derives one special id from another fails on the tiny checkpoint.
SPECIAL_TOKENS = [f"<|reserved_token_{n}|>" for n in range(MAX_RESERVED + 1)] + [
    "<role>", "</role>", "<|role_end|>", "<|mask|>", "<uncondition>", EOS_TOKEN, "<boi>", "<|/image|>", "<|image|>",
]

# ---- backbone sizes (§10.2) ----------------------------------------------------------------------------
TEXT_VOCAB = 384  # = image_token_offset: the tokenizer (BPE + specials) fills exactly these ids
CODEBOOK = 64
NUM_SHARDS = 2  # ≥ 2 so the index path is exercised (§10.1 rule 1)

# Fixed training text: the prompt templates of §3.3–3.5 plus everyday English, so that typical test
# prompts get multi-byte merges (byte-level BPE never produces unknown tokens anyway).
_TRAINING_TEXT = [
    " You are a text-to-image generation assistant. ",
    " You are a text-to-image generation assistant with a thinking process. ",
    " You are a multimodal understanding assistant. ",
    " You are an image editing assistant. ",
    "SYSTEM HUMAN ASSISTANT",
    "a red cat sitting on a blue chair, a photo of a dog in the snow, make the sky purple",
    "What is in this image? Describe the picture in detail. Add a hat to the person.",
    "The quick brown fox jumps over the lazy dog. A small house near the river at sunset.",
]


def official_config_json(*, eos_id: int, text_vocab: int, codebook: int, hidden_size: int, intermediate_size: int,
                         num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int, head_dim: int,
                         num_experts: int, num_experts_per_tok: int, n_group: int, topk_group: int,
                         moe_intermediate_size: int) -> dict:
    """§2.1's field set and order with the structural constants of the real config; only sizes and ids vary
    (§10.1 rule 4). The toy checkpoint's config (toyworld/train/backbone_config.py) is built here too."""
    return {
        "architectures": ["LLaDA2MoeModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_llada2uni_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2uni_moe.LLaDA2MoeModelLM",
            "AutoModelForCausalLM": "modeling_llada2uni_moe.LLaDA2MoeModelLM",
        },
        "model_type": "llada2_moe",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "vocab_size": text_vocab + codebook,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "use_qkv_bias": False,
        "use_qk_norm": True,
        "use_bias": False,
        "rms_norm_eps": 1e-06,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "max_position_embeddings": 8192,
        "rope_theta": 600000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 600000, "partial_rotary_factor": 0.5},
        "partial_rotary_factor": 0.5,
        "use_cache": False,
        "sliding_window": None,
        "pad_token_id": eos_id,
        "num_experts": num_experts,
        "num_shared_experts": 1,
        "num_experts_per_tok": num_experts_per_tok,
        "n_group": n_group,
        "topk_group": topk_group,
        "routed_scaling_factor": 2.5,
        "moe_intermediate_size": moe_intermediate_size,
        "first_k_dense_replace": 1,
        "output_router_logits": False,
        "image_token_offset": text_vocab,
    }


def _config_json(eos_id: int) -> dict:
    return official_config_json(eos_id=eos_id, text_vocab=TEXT_VOCAB, codebook=CODEBOOK, hidden_size=64,
                                intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=1, head_dim=16, num_experts=32, num_experts_per_tok=8, n_group=8,
                                topk_group=4, moe_intermediate_size=24)


def build_tiny_tokenizer() -> Tokenizer:
    """Byte-level BPE trained on a fixed text, then the special tokens appended (ids < TEXT_VOCAB)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    if tok.get_vocab_size() > TEXT_VOCAB:
        raise RuntimeError(f"tiny tokenizer has {tok.get_vocab_size()} ids, more than TEXT_VOCAB={TEXT_VOCAB}")
    return tok


def _write_tokenizer(folder: Path, tok: Tokenizer) -> None:
    tok.save(str(folder / "tokenizer.json"))
    added = {
        str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": True}
        for s in SPECIAL_TOKENS
    }
    special_map = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "mask_token": "<|mask|>"}
    _write_json(folder / "special_tokens_map.json", special_map)
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        **special_map,
        "added_tokens_decoder": added,
    })


# ---- backbone weights (§10.1 rules 2, 3, 7) ------------------------------------------------------------
def _random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if name.endswith("expert_bias"):
        # fp32 like the official buffer; std 0.05 vs router-score spread ≈ 0.04, so it changes routes.
        return torch.randn(shape, generator=gen) * 0.05
    if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
        return (1.0 + 0.1 * torch.randn(shape, generator=gen)).bfloat16()  # near 1
    return (0.02 * torch.randn(shape, generator=gen)).bfloat16()  # initializer_range


def _shard_of(name: str, num_layers: int) -> int:
    """Embeddings and the first half of the layers in shard 0; the rest, norm and lm_head in shard 1."""
    if name.startswith("model.layers."):
        return 0 if int(name.split(".")[2]) < (num_layers + 1) // 2 else 1
    return 0 if name.startswith("model.word_embeddings") else 1


def write_backbone_shards(folder: Path, tensors: dict[str, torch.Tensor], num_layers: int) -> None:
    """The backbone's tensors as NUM_SHARDS safetensors files plus `model.safetensors.index.json` (§2.3)."""
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(NUM_SHARDS)]
    for name in sorted(tensors):
        shards[_shard_of(name, num_layers)][name] = tensors[name]
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{NUM_SHARDS:05d}.safetensors"
        save_file(part, str(folder / file), metadata={"format": "pt"})
        for name, t in part.items():
            weight_map[name] = file
            total += t.numel() * t.element_size()
    _write_json(folder / "model.safetensors.index.json",
                {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def _write_backbone(folder: Path, cfg: BackboneConfig, seed: int) -> None:
    from .backbone.model import LLaDA2MoeModelLM

    with torch.device("meta"):
        shapes = expected_shapes(LLaDA2MoeModelLM(cfg))
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: _random_tensor(name, shapes[name], gen) for name in sorted(shapes)}
    write_backbone_shards(folder, tensors, cfg.num_hidden_layers)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def make_tiny_checkpoint(folder: str | Path, seed: int = 0, *, with_image_components: bool = True) -> Path:
    """Write the whole tiny checkpoint under `folder` (created if needed); deterministic for a seed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    _write_tokenizer(folder, tok)
    config = _config_json(eos_id=tok.token_to_id(EOS_TOKEN))
    _write_json(folder / "config.json", config)
    _write_backbone(folder, BackboneConfig.from_dict(config), seed)
    if with_image_components:
        try:
            from . import tiny_image_components
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.tiny_image_components":
                raise
            print("note: workers.model.tiny_image_components is absent; wrote the backbone and tokenizer only")
        else:
            tiny_image_components.write_image_components(folder, seed)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workers.model.tiny_checkpoint",
        description="Write a tiny random LLaDA2.0-Uni checkpoint (official layout, docs/model.md §10) for tests.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="skip image_tokenizer/, decoder/, decoder-turbo/ and vae/")
    args = parser.parse_args(argv)
    folder = make_tiny_checkpoint(args.out_dir, args.seed, with_image_components=not args.backbone_only)
    print(f"tiny checkpoint written to {folder}")


if __name__ == "__main__":
    main()

"""The toy backbone's `config.json`: MODEL_SPEC §2.1's field set (as `tiny_checkpoint._config_json`), small sizes.

Structural constants kept: group-limited routing (n_group / topk_group), one shared expert, partial RoPE 0.5,
GQA, qk-norm, a dense first layer, routed_scaling_factor 2.5, sigmoid router with expert bias (implied, §2.1).
Widths differ pairwise (§10.1 rule 6): hidden 128, fused qkv 256, dense FFN 352, expert FFN 144, 8 experts.
"""

from __future__ import annotations

from ..codes import CODEBOOK_SIZE

HIDDEN = 128
LAYERS = 4
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 32  # GQA 2 query heads per kv head; rotary dim 16
DENSE_INTERMEDIATE = 352
EXPERTS, SHARED_EXPERTS, TOP_K = 8, 1, 2
N_GROUP, TOPK_GROUP = 4, 2  # 2 experts per group (the group score sums the top 2), keep 2 of 4 groups
MOE_INTERMEDIATE = 144


def backbone_config_json(text_vocab_size: int, eos_id: int) -> dict:
    """`image_token_offset` = the text vocabulary; `vocab_size` = that + the designed codebook (309)."""
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
        "vocab_size": text_vocab_size + CODEBOOK_SIZE,
        "hidden_size": HIDDEN,
        "intermediate_size": DENSE_INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
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
        "num_experts": EXPERTS,
        "num_shared_experts": SHARED_EXPERTS,
        "num_experts_per_tok": TOP_K,
        "n_group": N_GROUP,
        "topk_group": TOPK_GROUP,
        "routed_scaling_factor": 2.5,
        "moe_intermediate_size": MOE_INTERMEDIATE,
        "first_k_dense_replace": 1,
        "output_router_logits": False,
        "image_token_offset": text_vocab_size,
    }

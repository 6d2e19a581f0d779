"""The toy backbone's `config.json`: docs/model.md §2.1's field set (built by
`tiny_checkpoint.official_config_json`), small sizes.

Structural constants kept: group-limited routing (n_group / topk_group), one shared expert, partial RoPE 0.5,
GQA, qk-norm, a dense first layer, routed_scaling_factor 2.5, sigmoid router with expert bias (implied, §2.1).
Widths differ pairwise (§10.1 rule 6): hidden 128, fused qkv 256, dense FFN 352, expert FFN 144, 8 experts.
"""

from __future__ import annotations

from workers.model.tiny_checkpoint import official_config_json

from ..codes import CODEBOOK_SIZE

HIDDEN = 128
LAYERS = 4
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 32  # GQA 2 query heads per kv head; rotary dim 16
DENSE_INTERMEDIATE = 352
EXPERTS, TOP_K = 8, 2  # plus the one shared expert of the real config
N_GROUP, TOPK_GROUP = 4, 2  # 2 experts per group (the group score sums the top 2), keep 2 of 4 groups
MOE_INTERMEDIATE = 144


def backbone_config_json(text_vocab_size: int, eos_id: int) -> dict:
    """`image_token_offset` = the text vocabulary; `vocab_size` = that + the designed codebook (309)."""
    return official_config_json(eos_id=eos_id, text_vocab=text_vocab_size, codebook=CODEBOOK_SIZE,
                                hidden_size=HIDDEN, intermediate_size=DENSE_INTERMEDIATE, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                                num_experts=EXPERTS, num_experts_per_tok=TOP_K, n_group=N_GROUP,
                                topk_group=TOPK_GROUP, moe_intermediate_size=MOE_INTERMEDIATE)

"""SigVQ semantic embedder (docs/model.md §5.1): VQ code grid → DiT conditioning features.

Codes (no backbone offset) on an h×w grid are upsampled ×2 by nearest neighbour, embedded, and passed through
Linear → SiLU → Linear. Module names follow the official `sigvq_embedding.pt` keys:
`prior_token_embedding.weight`, `prior_projector.net.0.proj.*`, `prior_projector.net.2.*`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workers.model.decoder.state_dict_source import StateDictSource
from workers.model.weights import assert_materialised, load_strict

COMPONENT = "sigvq_embedding"
EMBEDDING_KEY = "prior_token_embedding.weight"
UPSAMPLE = 2  # §5.1: nearest ×2 upsampling of the code grid → 4·h·w features


class _LinearSiLU(nn.Module):
    """`net.0`: the projection followed by its activation (keys `net.0.proj.*`)."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.proj(x))


class _Projector(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        # net.1 holds no weights (a dropout slot at training time); kept so that net.2 has its official name.
        self.net = nn.Sequential(_LinearSiLU(width), nn.Identity(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SigVQEmbedder(nn.Module):
    def __init__(self, codebook_size: int, width: int):
        super().__init__()
        self.prior_token_embedding = nn.Embedding(codebook_size, width)
        self.prior_projector = _Projector(width)

    @property
    def width(self) -> int:
        return self.prior_token_embedding.embedding_dim

    @property
    def codebook_size(self) -> int:
        return self.prior_token_embedding.num_embeddings

    @torch.inference_mode()
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: Long [h, w] → features [(2h)·(2w), width] in raster order of the upsampled grid."""
        grid = codes.repeat_interleave(UPSAMPLE, dim=0).repeat_interleave(UPSAMPLE, dim=1)
        return self.prior_projector(self.prior_token_embedding(grid.reshape(-1)))


def load_sigvq(path: str | Path, *, device: torch.device | str, dtype: torch.dtype) -> SigVQEmbedder:
    """Strict load of `image_tokenizer/sigvq_embedding.pt`; sizes come from the file's embedding table."""
    with StateDictSource(path) as source:
        # Sizes come from the embedding table; without it, any size will do: the strict check lists what's missing.
        sizes = source.shape(EMBEDDING_KEY) if EMBEDDING_KEY in set(source.keys()) else (1, 1)
        with torch.device("meta"):
            module = SigVQEmbedder(*sizes)
        load_strict(module, source, component=COMPONENT, device=device, dtype=dtype)
    assert_materialised(module, COMPONENT)
    return module.eval()

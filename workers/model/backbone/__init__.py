"""The LLaDA2.0-Uni MoE diffusion-LM backbone (docs/model.md §2)."""

from .loading import load_backbone
from .model import BackboneOutput, LLaDA2MoeModelLM

__all__ = ["BackboneOutput", "LLaDA2MoeModelLM", "load_backbone"]

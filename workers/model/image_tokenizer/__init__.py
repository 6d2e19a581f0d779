"""SigLIP-VQ image tokenizer (docs/model.md §4): image → 16-px patches → ViT → cosine VQ codes."""

from workers.model.image_tokenizer.preprocess import ImagePreprocessor
from workers.model.image_tokenizer.tokenizer import ImageTokenizer, load_image_tokenizer

__all__ = ["ImagePreprocessor", "ImageTokenizer", "load_image_tokenizer"]

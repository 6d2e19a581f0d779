"""`load_image_tokenizer`: the official `image_tokenizer/` folder → an object that turns images into VQ codes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from workers.model.image_tokenizer.model import SigLipVQ, build_siglip_vq
from workers.model.image_tokenizer.preprocess import ImagePreprocessor
from workers.model.weights import TensorSource, assert_materialised, load_strict

COMPONENT = "image_tokenizer"
SUBFOLDER = "image_tokenizer"
# §4.3: the loader keeps the keys under these prefixes and strips `model.`; anything else in the file
# belongs to no module of ours and is ignored (strictness applies inside the two prefixes).
KEPT_PREFIXES = ("model.visual.", "model.vqmodel.")


def _module_key(file_key: str) -> str | None:
    return file_key[len("model."):] if file_key.startswith(KEPT_PREFIXES) else None


def resolve_folder(path: str | Path) -> Path:
    """Accept the checkpoint root or its `image_tokenizer/` folder."""
    path = Path(path)
    for folder in (path / SUBFOLDER, path):
        if (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file():
            return folder
    raise FileNotFoundError(
        f"{path}: no image tokenizer here (expected config.json and preprocessor_config.json in "
        f"{path / SUBFOLDER} or {path})"
    )


class ImageTokenizer:
    """SigLIP-VQ tokenizer: `encode(image) -> (codes, h, w)`, codes without the backbone's image offset."""

    def __init__(self, model: SigLipVQ, preprocessor: ImagePreprocessor):
        self.model = model
        self.preprocessor = preprocessor

    @property
    def device(self) -> torch.device:
        return self.model.vqmodel.quantize.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.vqmodel.quantize.embedding.weight.dtype

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """(patch vectors [h·w, C·T·16·16] float32, (h, w)); sides must be multiples of 16."""
        return self.preprocessor(image)

    def features(self, image: Image.Image) -> tuple[torch.Tensor, int, int]:
        """ViT features [h·w, hidden] (compute dtype), h, w."""
        patches, (h, w) = self.preprocess(image)
        return self.model.features(patches.to(self.device), h, w), h, w

    def encode(self, image: Image.Image) -> tuple[list[int], int, int]:
        """VQ codes in raster order and the token grid (h, w) = (height / 16, width / 16)."""
        feats, h, w = self.features(image)
        return self.model.codes(feats, h, w).tolist(), h, w


def load_image_tokenizer(
    path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> ImageTokenizer:
    """Load strictly from the checkpoint root or `image_tokenizer/` (any *.safetensors there, §4.3 / §11 q6).

    `dtype` is the compute dtype: float32 by default; bfloat16 reproduces the official pipeline, whose codes
    may differ from fp32 where the two best codebook distances are nearly tied (§4.2 "Precision").
    """
    folder = resolve_folder(path)
    preprocessor = ImagePreprocessor.from_file(folder / "preprocessor_config.json")
    config = json.loads((folder / "config.json").read_text())
    vision_patch = config.get("vision_config", {}).get("patch_size", 16)
    if vision_patch != preprocessor.patch_size:
        raise ValueError(
            f"{folder}: preprocessor patch_size {preprocessor.patch_size} != vision_config.patch_size {vision_patch}"
        )
    with torch.device("meta"):
        model = build_siglip_vq(config)
    with TensorSource.from_folder(folder, _module_key) as source:
        load_strict(model, source, component=COMPONENT, device=device, dtype=dtype)
    assert_materialised(model, COMPONENT)
    return ImageTokenizer(model.eval(), preprocessor)

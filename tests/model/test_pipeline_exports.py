"""The public names of `workers.model`: each resolves, importing the package stays cheap, and
`block_diffusion_generate` is the sampler's baseline loop for one prompt."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import workers.model as model_package
from workers.model import block_diffusion_generate, load_backbone
from workers.model.config import BackboneConfig
from workers.model.sampler import GenerationRequest, generate
from workers.model.text_tokenizer import TextTokenizer

PUBLIC = ["Pipeline", "load_backbone", "load_image_tokenizer", "load_decoder", "block_diffusion_generate",
          "make_tiny_checkpoint", "Cancelled", "ModelInputError"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name):
    assert name in model_package.__all__
    assert callable(getattr(model_package, name))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Pipe'"):
        model_package.Pipe  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    code = "import sys, workers.model, workers.model.errors; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_block_diffusion_generate_is_the_baseline_loop(tiny_ckpt, one_thread):
    model = load_backbone(tiny_ckpt)
    tok = TextTokenizer.from_folder(tiny_ckpt, BackboneConfig.from_file(tiny_ckpt / "config.json"))
    prompt = tok.encode("What is in this image?")
    ids = block_diffusion_generate(model, torch.tensor([prompt]), gen_length=24, block_length=8, steps=4,
                                   threshold=0.95, mask_id=tok.mask_id, eos_id=tok.eos_id)
    request = GenerationRequest(prompts=[prompt], gen_length=24, block_length=8, steps=4, threshold=0.95,
                                mask_id=tok.mask_id, eos_id=tok.eos_id)
    assert ids == generate(model, [request])[0].ids
    assert 0 < len(ids) <= 24 and tok.mask_id not in ids
    assert tok.eos_id not in ids[:-1]  # cut after the first EOS, if any
    with pytest.raises(ValueError, match="one prompt"):
        block_diffusion_generate(model, torch.tensor([prompt, prompt]), gen_length=8, mask_id=tok.mask_id,
                                 eos_id=tok.eos_id)

"""Fixtures for the model runtime tests: one tiny checkpoint in the official layout per test session."""

from pathlib import Path

import pytest
import torch

# The tiny tensors here gain nothing from intra-op threads, and on a loaded 2-core machine they lose a lot.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-llada2-uni")
    make_tiny_checkpoint(folder, seed=0)
    return folder

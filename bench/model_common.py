"""Helpers for the model benchmarks: synthetic checkpoints in the official layout, timing, peak RSS.

Synthetic checkpoints start from the tiny checkpoint (`make_tiny_checkpoint`: tokenizer, configs, image parts)
and replace the backbone and, optionally, the decoders by larger random ones of a chosen size, written with the
official file and key names so that the real loaders read them.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/model_x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from workers.model.weights import expected_shapes  # noqa: E402


_POOL = 1 << 22  # random values drawn once, which larger tensors repeat (their content is not what's measured)
_TILE_ABOVE = 1 << 16


def random_state(shapes: dict[str, tuple[int, ...]], seed: int, *, fp32: Callable[[str], bool] = lambda n: False,
                 dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Random tensors of a sensible scale: norm weights near 1, everything else ~N(0, 0.02).

    Tensors above 64 K values tile a seeded pool of 4 M random values, so that writing a 1 GB checkpoint
    costs memory copies rather than 0.5 G Gaussian draws on a small CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = (0.02 * torch.randn(_POOL, generator=gen)).to(dtype)
    state = {}
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        count = math.prod(shape)
        if count > _TILE_ABOVE and not fp32(name):
            source = pool if count <= _POOL else pool.repeat(count // _POOL + 1)
            start = (i * 7919) % (len(source) - count + 1)  # a different window per tensor
            state[name] = source[start : start + count].view(shape).clone()
            continue
        value = torch.randn(shape, generator=gen)
        value = 1.0 + 0.1 * value if ("norm" in name and name.endswith("weight") and len(shape) == 1) else 0.02 * value
        state[name] = value.to(torch.float32 if fp32(name) else dtype).contiguous()
    return state


def write_backbone(folder: Path, overrides: dict, *, shards: int = 4, seed: int = 0) -> int:
    """Replace the backbone of the checkpoint in `folder` by a random one with `overrides` applied to its
    config.json; returns the bytes written. Shards are written one at a time to bound this process's memory."""
    from workers.model.backbone.model import LLaDA2MoeModelLM
    from workers.model.config import BackboneConfig

    config = json.loads((folder / "config.json").read_text())
    config.update(overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for old in folder.glob("model-*.safetensors"):
        old.unlink()
    with torch.device("meta"):
        shapes = expected_shapes(LLaDA2MoeModelLM(BackboneConfig.from_dict(config)))
    names = sorted(shapes)
    weight_map, total = {}, 0
    for i in range(shards):
        part = {n: shapes[n] for n in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = random_state(part, seed + i, fp32=lambda n: n.endswith("expert_bias"))
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = file
            total += tensor.numel() * tensor.element_size()
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def write_decoders(folder: Path, overrides: dict, seed: int = 0,
                   subfolders: tuple[str, ...] = ("decoder", "decoder-turbo")) -> None:
    """Replace decoder/ and decoder-turbo/ (or the given `subfolders`) by random DiTs with `overrides` applied
    to their config."""
    from diffusers import ZImageTransformer2DModel

    from workers.model.decoder.transformer import CHECKPOINT_CAP_PREFIX, DIFFUSERS_CAP_PREFIX

    for offset, sub in enumerate(subfolders):
        config = json.loads((folder / sub / "config.json").read_text())
        config.update(overrides)
        (folder / sub / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        with torch.device("meta"):
            module = ZImageTransformer2DModel.from_config(config)
        shapes = {
            (CHECKPOINT_CAP_PREFIX + n[len(DIFFUSERS_CAP_PREFIX):] if n.startswith(DIFFUSERS_CAP_PREFIX) else n): s
            for n, s in expected_shapes(module).items()
        }
        save_file(random_state(shapes, seed + offset), str(folder / sub / "model.safetensors"),
                  metadata={"format": "pt"})


def write_vae(folder: Path, overrides: dict, seed: int = 0) -> None:
    """Replace vae/ by a random AutoencoderKL with `overrides` applied to its config."""
    from diffusers import AutoencoderKL

    config = json.loads((folder / "vae" / "config.json").read_text())
    config.update(overrides)
    (folder / "vae" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    with torch.device("meta"):
        shapes = expected_shapes(AutoencoderKL.from_config(config))
    save_file(random_state(shapes, seed), str(folder / "vae" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})


def write_codebook(folder: Path, num_embeddings: int, sigvq_width: int, seed: int = 0) -> None:
    """Give image_tokenizer/ a VQ codebook of `num_embeddings` codes and a SigVQ embedder of `sigvq_width`
    (what the backbone's image vocabulary and the DiT's cap_feat_dim must match); the vision encoder keeps
    its size."""
    from workers.model.decoder.sigvq import SigVQEmbedder
    from workers.model.image_tokenizer.model import build_siglip_vq

    sub = folder / "image_tokenizer"
    config = json.loads((sub / "config.json").read_text())
    config["vq_config"]["num_embeddings"] = num_embeddings
    (sub / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    with torch.device("meta"):
        vq_shapes = {f"model.{n}": shape for n, shape in expected_shapes(build_siglip_vq(config)).items()}
        sigvq_shapes = expected_shapes(SigVQEmbedder(num_embeddings, sigvq_width))
    save_file(random_state(vq_shapes, seed), str(sub / "model.safetensors"), metadata={"format": "pt"})
    torch.save(random_state(sigvq_shapes, seed + 1), sub / "sigvq_embedding.pt")


def tiny_checkpoint(folder: Path, *, with_image_components: bool = True) -> Path:
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    return make_tiny_checkpoint(folder, seed=0, with_image_components=with_image_components)


def one_thread() -> None:
    """Run torch on one thread: on a small shared CPU, a second thread mostly adds contention (here up to 15x
    slower for tiny tensors), which would swamp the differences being measured. Ratios are the result."""
    torch.set_num_threads(1)


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per candidate, the candidates alternating so that machine noise hits all alike."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


# Run in a fresh interpreter: imports first, then the peak-RSS counter is reset (Linux clear_refs 5), then
# the statement; prints the RSS before and the peak during it, in bytes.
_RSS_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
{setup}
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = _status("VmRSS")
{statement}
print(json.dumps({{"before": before, "peak": _status("VmHWM"), "after": _status("VmRSS")}}))
"""


def peak_rss(setup: str, statement: str) -> dict[str, int]:
    """RSS before `statement` and its peak during it, measured in a child process."""
    code = _RSS_PROBE.format(root=str(ROOT), setup=setup, statement=statement)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

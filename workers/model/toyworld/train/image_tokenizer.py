"""Stage `image_tokenizer`: the runtime's SigLIP-VQ module trained as a classifier onto the designed codes.

Objective: logits = SCALE · cos(quant_conv(ViT features), codebook rows), cross-entropy against
`codes.scene_codes`. At inference the runtime takes argmin distance between the L2-normalised vectors, which is
exactly argmax of these logits, so what is trained here is what `ImageTokenizer.encode` computes.
Both views in every batch: the 64² generation view (LANCZOS from 128², as the edit crop) → 4 × 4 codes that
name their cell, and the 128² reading view → 8 × 8 position-free codes; the ViT tells the views apart by
their patch count (the position table is resampled to the grid). Shape patches weigh more than background
patches (they are few and carry everything). Light degradation (blur, colour noise) because the decoder's
outputs are fed back in for editing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workers.model.image_tokenizer.model import SigLipVQ, build_siglip_vq
from workers.model.image_tokenizer.preprocess import ImagePreprocessor
from workers.model.image_tokenizer.tokenizer import ImageTokenizer
from workers.model.toyworld import sample_scene
from workers.model.toyworld.codes import GENERATION_GRID, READING_BASE, READING_GRID, read_codes, scene_codes
from workers.model.toyworld.train.data import degrade, evaluation_scenes, generation_view, render_image
from workers.model.toyworld.train.image_configs import IMAGE_TOKENIZER_CONFIG
from workers.model.toyworld.train.stage import Losses, Stage, budget_fraction, log, lr_at, optimise

STAGE = "image_tokenizer"
SCALE = 20.0  # cosine → logit temperature (training only; argmax does not depend on it)
SHAPE_WEIGHT = 4.0  # loss weight of a shape patch relative to a background patch
PREPROCESSOR = ImagePreprocessor()  # = tiny_image_components.PREPROCESSOR_CONFIG (patch 16, mean/std 0.5)


def build_tokenizer_model(config: dict | None = None) -> SigLipVQ:
    return build_siglip_vq(config or IMAGE_TOKENIZER_CONFIG)


def code_logits(model: SigLipVQ, patches: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
    """[Σ h·w, codebook] logits for a batch of images' patch vectors concatenated in order (with grad)."""
    grid_thw = torch.tensor([[1, h, w] for h, w in grids])
    features = model.visual(patches, grid_thw=grid_thw).last_hidden_state
    conv = model.vqmodel.quant_conv  # a 1 × 1 conv = a Linear on each patch's features
    z = F.normalize(F.linear(features, conv.weight[:, :, 0, 0], conv.bias), dim=-1)
    codebook = F.normalize(model.vqmodel.quantize.embedding.weight, dim=-1)
    return SCALE * z @ codebook.T


def make_batch(rng: np.random.Generator, batch: int, *, degraded: bool = True):
    """Patches, grids and target codes: `batch` scenes at 64² and `batch // 2` at 128²."""
    patches, grids, targets = [], [], []
    for view, count in ((GENERATION_GRID, batch), (READING_GRID, batch // 2)):
        for _ in range(count):
            scene = sample_scene(rng)
            image = render_image(scene)
            if degraded:
                image = degrade(image, rng)
            if view == GENERATION_GRID:
                image = generation_view(image)
            p, grid = PREPROCESSOR(image)
            patches.append(p)
            grids.append(grid)
            targets.append(torch.from_numpy(scene_codes(scene, view).reshape(-1)))
    return torch.cat(patches), grids, torch.cat(targets)


def tokenizer_loss(model: SigLipVQ, patches, grids, targets) -> torch.Tensor:
    logits = code_logits(model, patches, grids)
    weights = torch.where(targets >= READING_BASE, SHAPE_WEIGHT, 1.0)
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()


def evaluate(model: SigLipVQ, seed: int, *, blur: float = 0.0, per_split: int = 70) -> dict:
    """Through the runtime's `ImageTokenizer.encode`: code accuracy and read-back per attribute, both views."""
    model.eval()
    tokenizer = ImageTokenizer(model, PREPROCESSOR)
    report = {}
    from PIL import ImageFilter

    for split in ("held_out", "training"):
        group = [s for k, s in evaluation_scenes(seed) if k == split][:per_split]
        for name, grid in (("generation_64", GENERATION_GRID), ("reading_128", READING_GRID)):
            right, shape_right, shape_total, reads = 0, 0, 0, {"shape": [], "colour": [], "position": [],
                                                               "background": [], "all_four": []}
            for scene in group:
                image = render_image(scene)
                if blur:
                    image = image.filter(ImageFilter.GaussianBlur(blur))
                if grid == GENERATION_GRID:
                    image = generation_view(image)
                codes, h, w = tokenizer.encode(image)
                got = np.array(codes).reshape(h, w)
                want = scene_codes(scene, grid)
                right += int((got == want).sum())
                shape_right += int(((got == want) & (want >= READING_BASE)).sum())
                shape_total += int((want >= READING_BASE).sum())
                r = read_codes(got)
                ok = {"shape": r.shape == scene.shape, "colour": r.colour == scene.colour,
                      "position": (r.row, r.column) == (scene.row, scene.column),
                      "background": r.background == scene.background}
                for k, v in ok.items():
                    reads[k].append(v)
                reads["all_four"].append(all(ok.values()))
            report[f"{split}/{name}"] = {
                "code_accuracy": round(100 * right / (len(group) * grid * grid), 1),
                "shape_code_accuracy": round(100 * shape_right / max(1, shape_total), 1),
                **{k: round(100 * float(np.mean(v)), 1) for k, v in reads.items()},
            }
    model.train()
    return report


def train_image_tokenizer(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 10.0,
                          steps: int | None = None, batch: int = 32, lr: float = 1e-3, log_every: int = 50,
                          eval_every: int = 500, eval_scenes: int = 70) -> dict:
    stage = Stage(work_dir, STAGE, seed)
    if (done := stage.finished()) is not None:
        return done
    torch.manual_seed(seed)
    model = build_tokenizer_model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    step, losses, warm_from = 0, Losses(STAGE, log_every), 0
    if (state := stage.load()) is not None:
        model.load_state_dict(state["model"])
        step, losses.first = state["step"], state.get("first_loss")
        if "optimiser" in state:
            optimiser.load_state_dict(state["optimiser"])
        else:  # seeded from a checkpoint (warm_start): a fresh optimiser warms up again
            warm_from = step
    model.train()
    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(lr, step - warm_from, budget_fraction(stage, step, minutes=minutes, steps=steps))
        loss = tokenizer_loss(model, *make_batch(stage.rng(step), batch))
        optimise(optimiser, loss, model.parameters())
        step += 1
        losses.add(step, loss.item(), stage.elapsed)
        if eval_every and step % eval_every == 0:
            summary = evaluate(model, seed, per_split=eval_scenes)
            log(STAGE, "held-out " + str({k: v["all_four"] for k, v in summary.items()}))
        if stage.due():
            stage.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                        "first_loss": losses.first})
    stage.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                "first_loss": losses.first})
    report = {"steps": step, "first_loss": losses.first, "last_loss": losses.last,
              "eval": evaluate(model, seed, per_split=eval_scenes),
              "eval_blur_1px": evaluate(model, seed, blur=1.0, per_split=eval_scenes)}
    return stage.finish(report)


def load_trained_tokenizer(work_dir: str | Path) -> SigLipVQ:
    state = torch.load(Path(work_dir) / STAGE / "state.pt", map_location="cpu", weights_only=False)
    model = build_tokenizer_model()
    model.load_state_dict(state["model"])
    return model.eval()

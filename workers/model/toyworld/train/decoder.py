"""Stage `decoder` (and what `decoder_turbo` shares with it): SigVQ embedder + Z-Image DiT on the VAE's latents.

Objective (docs/model.md §5.4): x_t = t·x_data + (1 − t)·noise (t = 0 noise), the DiT predicts the velocity
x_data − noise at time input t; x_data = the scene's VAE latent in the runtime's DiT space,
(z − shift_factor) · scaling_factor (the runtime decodes latents / scaling_factor + shift_factor). The
condition is the scene's generation-view codes (`codes.scene_codes(scene, 4)`, what the tokenizer is taught to
emit on the 64² view and the backbone to generate), upsampled ×2 by the SigVQ embedder as at runtime.
* normal: t drawn half uniformly, half from the sampler's shifted grid (t' = u / (u + 6 − 6u), where most of
  its 49 evaluations sit); the condition is replaced by zero features 10 % of the time, the negative branch
  of the sampler's CFG.
* turbo (stage `decoder_turbo`, in distillation.py): a copy of the trained normal DiT, distilled from it at
  exactly the turbo sampler's 8 evaluation times k/8: part of each batch is the normal decoder's own guided
  samples on straight lines from their noise (reflow), the rest plain data; never unconditioned (the turbo
  sampler has no CFG). The SigVQ embedder is shared by both decoders in the checkpoint
  (`image_tokenizer/sigvq_embedding.pt`), so turbo training freezes it.
Sharing across codes (a training-time parameterisation; the file keeps the plain embedding table): each
generation-view code has its own row, but its row is trained as free[code] + cell[c] + colour[k] + shape[s]
(`CodeTable`), so what one code learns about its cell is shared by the 18 codes of that cell. Without it,
each of the 288 rows had to find its cell's phase on its own from the few batches it appears in: after 400
steps the DiT painted colour-shape blobs anywhere (position 12–17 %). The summed table is what is
written to `sigvq_embedding.pt`. The loss weighs the latent cells under shape codes 5× (see `flow_loss`).
Latents are computed once per work dir (`decoder/latents.pt`) from a pool of training scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ZImageTransformer2DModel
from torch import nn

from workers.model.decoder.pipeline import ImageDecoder
from workers.model.decoder.samplers import TIME_SHIFT
from workers.model.decoder.sigvq import UPSAMPLE, SigVQEmbedder
from workers.model.toyworld import check, render_array
from workers.model.toyworld.codes import (CODEBOOK_SIZE, GENERATION_BASE, GENERATION_GRID, READING_BASE, meaning,
                                          scene_codes)
from workers.model.toyworld.world import COLOUR_NAMES, SHAPES
from workers.model.toyworld.train.data import evaluation_scenes, scene_pool
from workers.model.toyworld.train.image_configs import DECODER_CONFIG, SIGVQ_WIDTH
from workers.model.toyworld.train.stage import Losses, Stage, budget_fraction, log, lr_at, optimise
from workers.model.toyworld.train.vae import encode, load_trained_vae

STAGE = "decoder"
UNCONDITIONED = 0.10  # share of examples with zero features (CFG's negative branch, §5.4)
TURBO_STEPS = 8
SHAPE_CELL_WEIGHT = 4.0  # extra loss weight of the latent cells under a shape code
TABLE_LR_SCALE = 3.0  # the code table's parts learn faster than the DiT (they start at zero)
LATENT_POOL = 3000  # scenes whose latents are cached (about 7 per training combination)


class CodeTable(nn.Module):
    """The SigVQ embedding table as free rows plus parts shared by the codes of a cell, colour or shape."""

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        width = initial.shape[1]
        self.free = nn.Parameter(initial.detach().clone())
        self.cell = nn.Parameter(torch.zeros(GENERATION_GRID ** 2, width))
        self.colour = nn.Parameter(torch.zeros(len(COLOUR_NAMES), width))
        self.shape = nn.Parameter(torch.zeros(len(SHAPES), width))
        meanings = [meaning(c) for c in range(GENERATION_BASE, CODEBOOK_SIZE)]
        self.register_buffer("cell_index", torch.tensor([m.cell[0] * GENERATION_GRID + m.cell[1] for m in meanings]))
        self.register_buffer("colour_index", torch.tensor([COLOUR_NAMES.index(m.colour) for m in meanings]))
        self.register_buffer("shape_index", torch.tensor([SHAPES.index(m.shape) for m in meanings]))

    def forward(self) -> torch.Tensor:
        shared = self.cell[self.cell_index] + self.colour[self.colour_index] + self.shape[self.shape_index]
        return torch.cat([self.free[:GENERATION_BASE], self.free[GENERATION_BASE:] + shared])


def build_transformer(config: dict | None = None) -> ZImageTransformer2DModel:
    return ZImageTransformer2DModel.from_config(dict(config or DECODER_CONFIG))


def build_sigvq() -> SigVQEmbedder:
    return SigVQEmbedder(CODEBOOK_SIZE, SIGVQ_WIDTH)


def sigvq_features(sigvq: SigVQEmbedder, codes: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """SigVQEmbedder.forward with grad, batched: codes [B, h, w] → features [B, 4·h·w, width]; `table`
    replaces the embedding table (the `CodeTable` being trained)."""
    grid = codes.repeat_interleave(UPSAMPLE, dim=1).repeat_interleave(UPSAMPLE, dim=2).reshape(len(codes), -1)
    embedded = sigvq.prior_token_embedding(grid) if table is None else F.embedding(grid, table)
    return sigvq.prior_projector(embedded)


def velocity(transformer: ZImageTransformer2DModel, x: torch.Tensor, t: torch.Tensor,
             features: torch.Tensor) -> torch.Tensor:
    """The DiT on a batch: x [B, 16, H, W] latents, t [B], features [B, L, width] → velocity [B, 16, H, W]."""
    out = transformer(list(x.unsqueeze(2).unbind(0)), t, list(features.unbind(0)), return_dict=False)[0]
    return torch.stack(out).squeeze(2)


def latent_cache(work_dir: str | Path, seed: int, count: int = LATENT_POOL) -> dict:
    """{latents [N, 16, 16, 16] in DiT space, codes [N, 4, 4]} of a seeded pool of training scenes."""
    path = Path(work_dir) / STAGE / "latents.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    vae = load_trained_vae(work_dir)
    scenes = scene_pool(np.random.default_rng([seed, 11]), count)
    pixels = np.stack([render_array(s) for s in scenes])
    z = encode(vae, pixels)
    cache = {"latents": (z - vae.config.shift_factor) * vae.config.scaling_factor,
             "codes": torch.from_numpy(np.stack([scene_codes(s, GENERATION_GRID) for s in scenes]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def sample_times(rng: np.random.Generator, batch: int, turbo: bool) -> torch.Tensor:
    if turbo:
        return torch.from_numpy(rng.integers(0, TURBO_STEPS, size=batch) / TURBO_STEPS).float()
    u = rng.random(batch)
    shifted = u / (u + TIME_SHIFT - TIME_SHIFT * u)
    return torch.from_numpy(np.where(rng.random(batch) < 0.5, u, shifted)).float()


def flow_loss(transformer, sigvq, latents, codes, t, generator, keep: torch.Tensor,
              table: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow velocity MSE (§5.4); `keep` [B] = 0 replaces that example's features by zeros; `noise`
    (default: drawn from `generator`) is the other end of each example's line (a teacher pair's own noise)."""
    noise = torch.randn(latents.shape, generator=generator) if noise is None else noise
    tt = t.view(-1, 1, 1, 1)
    x_t = tt * latents + (1 - tt) * noise
    features = sigvq_features(sigvq, codes, table) * keep.view(-1, 1, 1)
    error = ((velocity(transformer, x_t, t, features) - (latents - noise)) ** 2).mean(dim=1)  # [B, H, W]
    # Latent cells under a shape code weigh more: the shape is ~5 % of the picture, so an unweighted loss is
    # almost all background. The weight depends on the condition only, so the optimum stays E[v | x_t, codes].
    factor = latents.shape[-1] // codes.shape[-1]
    shape_cells = (codes >= READING_BASE).repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    weight = 1.0 + SHAPE_CELL_WEIGHT * shape_cells.float()
    return (weight * error).sum() / weight.sum()


def evaluate(transformer, sigvq, vae, seed: int, *, mode: str, steps: int, per_split: int = 70) -> dict:
    """Decode the gate scenes' designed generation-view codes with the runtime's ImageDecoder; checker."""
    transformer.eval()
    decoder = ImageDecoder(sigvq.eval(), transformer, vae, mode)
    report = {}
    for split in ("held_out", "training"):
        group = [s for k, s in evaluation_scenes(seed) if k == split]
        group = group[::max(1, len(group) // per_split)][:per_split]  # spread: HELD_OUT is ordered by shape
        checks = [check(decoder.decode(scene_codes(s, GENERATION_GRID).reshape(-1).tolist(), 4, 4,
                                       steps=steps, seed=i), s) for i, s in enumerate(group)]
        report[split] = {**{a: round(100 * float(np.mean([c[a] for c in checks])), 1) for a in checks[0]},
                         "all_four": round(100 * float(np.mean([all(c.values()) for c in checks])), 1)}
    transformer.train()
    sigvq.train()
    return report


def train_decoder_stage(work_dir, stage_name: str, *, seed, minutes, steps, batch, lr, turbo: bool,
                        log_every: int, eval_at: tuple[int, ...], eval_every: int, eval_scenes: int,
                        latent_pool: int, pairs: dict | None = None, pair_share: float = 0.0) -> dict:
    """One decoder stage. `pairs` (turbo: the distillation's teacher pairs) replace a `pair_share` of each
    batch's examples by (teacher sample, its noise, its codes)."""
    stage = Stage(work_dir, stage_name, seed)
    if (done := stage.finished()) is not None:
        return done
    torch.manual_seed(seed)
    cache = latent_cache(work_dir, seed, latent_pool)
    vae = load_trained_vae(work_dir)
    transformer, sigvq = build_transformer(), build_sigvq()
    if turbo:  # start from the trained normal decoder; the shared SigVQ embedder stays as it is
        normal = torch.load(Path(work_dir) / STAGE / "state.pt", map_location="cpu", weights_only=False)
        transformer.load_state_dict(normal["transformer"])
        sigvq.load_state_dict(normal["sigvq"])
        sigvq.requires_grad_(False)
    state = stage.load()
    if state is not None:
        transformer.load_state_dict(state["transformer"])
        sigvq.load_state_dict(state["sigvq"])
    code_table = None
    if not turbo:
        code_table = CodeTable(sigvq.prior_token_embedding.weight)
        if state is not None and "code_table" in state:
            code_table.load_state_dict(state["code_table"])
        sigvq.prior_token_embedding.requires_grad_(False)  # trained through code_table
    params = list(transformer.parameters()) + ([] if turbo else list(sigvq.prior_projector.parameters()))
    groups = [{"params": params, "scale": 1.0}]
    if code_table is not None:
        groups.append({"params": list(code_table.parameters()), "scale": TABLE_LR_SCALE})
    optimiser = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    params = params + [p for g in groups[1:] for p in g["params"]]
    step, losses, history = 0, Losses(stage_name, log_every), []
    warm_from = 0  # a state without an optimiser (seeded from a checkpoint, see warm_start) warms up again
    if state is not None:
        warm_from = 0 if "optimiser" in state else state["step"]
        if "code_table" in state or turbo:  # (a state from before CodeTable has other parameter groups)
            optimiser.load_state_dict(state["optimiser"])
        step, losses.first, history = state["step"], state.get("first_loss"), state.get("history", [])
    transformer.train()
    sigvq.train()
    n = len(cache["latents"])

    def materialise() -> None:
        if code_table is not None:
            with torch.no_grad():
                sigvq.prior_token_embedding.weight.copy_(code_table())

    def snapshot() -> dict:
        materialise()
        extra = {} if code_table is None else {"code_table": code_table.state_dict()}
        return {"transformer": transformer.state_dict(), "sigvq": sigvq.state_dict(),
                "optimiser": optimiser.state_dict(), "step": step, "first_loss": losses.first, "history": history,
                **extra}

    def run_eval() -> dict:
        materialise()
        mode, n_steps = ("turbo", TURBO_STEPS) if turbo else ("normal", 20)
        return evaluate(transformer, sigvq, vae, seed, mode=mode, steps=n_steps, per_split=eval_scenes)

    while budget_fraction(stage, step, minutes=minutes, steps=steps) < 1.0:
        for group in optimiser.param_groups:
            group["lr"] = group["scale"] * lr_at(lr, step - warm_from,
                                                 budget_fraction(stage, step, minutes=minutes, steps=steps), warmup=100)
        rng = stage.rng(step)
        idx = torch.from_numpy(rng.integers(0, n, size=batch))
        keep = torch.ones(batch) if turbo else torch.from_numpy((rng.random(batch) >= UNCONDITIONED) * 1.0).float()
        latents, codes = cache["latents"][idx], cache["codes"][idx]
        noise = torch.randn(latents.shape, generator=stage.torch_generator(step))
        if pairs is not None and len(pairs["codes"]):
            use = torch.from_numpy(rng.random(batch) < pair_share)
            j = torch.from_numpy(rng.integers(0, len(pairs["codes"]), size=batch))
            wide = use.view(-1, 1, 1, 1)
            latents = torch.where(wide, pairs["latents"][j], latents)
            noise = torch.where(wide, pairs["noise"][j], noise)
            codes = torch.where(use.view(-1, 1, 1), pairs["codes"][j], codes)
        loss = flow_loss(transformer, sigvq, latents, codes, sample_times(rng, batch, turbo), None, keep,
                         None if code_table is None else code_table(), noise=noise)
        optimise(optimiser, loss, params)
        step += 1
        losses.add(step, loss.item(), stage.elapsed)
        if step in eval_at or (eval_every and step % eval_every == 0):
            figures = run_eval()
            history.append({"step": step, "elapsed_s": round(stage.elapsed), **figures})
            log(stage_name, f"step {step} checker on decoded designed codes: {figures}")
        if stage.due():
            stage.save(snapshot())
    stage.save(snapshot())
    report = {"steps": step, "first_loss": losses.first, "last_loss": losses.last,
              "latent_pool": n, "history": history,
              **({} if pairs is None else {"teacher_pairs": {"drawn": int(pairs["drawn"]), "kept": int(pairs["kept"]),
                                                             "share_of_batch": pair_share}}),
              "eval_designed_codes": run_eval()}
    return stage.finish(report)


def train_decoder(work_dir: str | Path, *, seed: int = 0, minutes: float | None = 30.0, steps: int | None = None,
                  batch: int = 32, lr: float = 8e-4, log_every: int = 25, eval_at: tuple[int, ...] = (150,),
                  eval_every: int = 400, eval_scenes: int = 24,
                  latent_pool: int = LATENT_POOL) -> dict:
    return train_decoder_stage(work_dir, STAGE, seed=seed, minutes=minutes, steps=steps, batch=batch, lr=lr,
                               turbo=False, log_every=log_every, eval_at=eval_at, eval_every=eval_every,
                               eval_scenes=eval_scenes, latent_pool=latent_pool)


def load_trained(work_dir: str | Path, stage_name: str = STAGE) -> tuple[ZImageTransformer2DModel, SigVQEmbedder]:
    """The latest state of a decoder stage: (transformer, sigvq), eval mode."""
    state = torch.load(Path(work_dir) / stage_name / "state.pt", map_location="cpu", weights_only=False)
    transformer, sigvq = build_transformer(), build_sigvq()
    transformer.load_state_dict(state["transformer"])
    sigvq.load_state_dict(state["sigvq"])
    return transformer.eval(), sigvq.eval()



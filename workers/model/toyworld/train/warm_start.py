"""Stage states from a written checkpoint, so a later session can train a stage further without the work dir
of the run that wrote it (stage states do not outlive a session; the checkpoint does).

`seed_from_checkpoint(checkpoint, work_dir, stages)` writes `work_dir/<stage>/state.pt` for each named image
stage from the checkpoint's files, as the stage would have saved it at the step the checkpoint was written
(its weights, the step and the wall time spent; no optimiser state, so the optimiser starts fresh and warms
up again). The vae is marked finished (its report says where it came from): the decoders are trained on its
latents and so need it as it is. A seeded image_tokenizer or decoder is left unfinished, so running the stage
with a higher step target continues it. The checkpoint stores bf16 (§10.1), so a seeded state is the bf16
weights in fp32, not the exact fp32 state of the original run.
`seed_backbone` does the same for the backbone stage (its own state format, see backbone.py), left unfinished.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from workers.model.decoder.transformer import module_key
from workers.model.toyworld.train.stage import Stage

IMAGE_STAGES = ("vae", "image_tokenizer", "decoder")


def _fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _states(checkpoint: Path) -> dict[str, dict]:
    vae_config = json.loads((checkpoint / "vae" / "config.json").read_text())
    tokenizer = load_file(checkpoint / "image_tokenizer" / "model.safetensors")
    decoder = load_file(checkpoint / "decoder" / "model.safetensors")
    return {
        "vae": {"model": _fp32(load_file(checkpoint / "vae" / "diffusion_pytorch_model.safetensors")),
                "config": vae_config},
        "image_tokenizer": {"model": _fp32({k.removeprefix("model."): v for k, v in tokenizer.items()})},
        "decoder": {"transformer": _fp32({module_key(k): v for k, v in decoder.items()}),
                    "sigvq": _fp32(torch.load(checkpoint / "image_tokenizer" / "sigvq_embedding.pt",
                                              map_location="cpu", weights_only=True))},
    }


def seed_from_checkpoint(checkpoint: str | Path, work_dir: str | Path, stages: dict[str, tuple[int, float]]) -> None:
    """`stages`: {stage: (step, wall seconds)} the checkpoint's weights were written at (its training record)."""
    checkpoint = Path(checkpoint)
    unknown = set(stages) - set(IMAGE_STAGES)
    if unknown:
        raise ValueError(f"cannot seed {sorted(unknown)} from a checkpoint (image stages: {IMAGE_STAGES})")
    states = _states(checkpoint)
    for name, (step, wall_s) in stages.items():
        stage = Stage(work_dir, name, seed=0)
        if stage.state_path.is_file():
            raise FileExistsError(f"{stage.state_path} exists: seed into an empty work dir")
        stage.write_seeded({**states[name], "step": int(step), "seeded_from": str(checkpoint)}, elapsed_s=wall_s)
        if name == "vae":
            stage.finish({"steps": int(step), "seeded_from": str(checkpoint)})


def seed_backbone(checkpoint: str | Path, work_dir: str | Path, step: int, wall_s: float) -> None:
    """The backbone stage's state from the checkpoint's shards at `step` (checked by a strict load)."""
    from workers.model.toyworld.train.backbone import new_model, stage_dir, toy_config

    checkpoint, folder = Path(checkpoint), stage_dir(Path(work_dir))
    if (folder / "state.pt").is_file():
        raise FileExistsError(f"{folder / 'state.pt'} exists: seed into an empty work dir")
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(_fp32(load_file(checkpoint / shard)))
    new_model(toy_config(), 0).load_state_dict(weights, strict=True)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "step": int(step), "elapsed": float(wall_s), "history": [], "seed": 0,
                "seeded_from": str(checkpoint)}, folder / "state.pt")

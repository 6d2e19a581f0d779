"""Write the trained image parts into a checkpoint folder in the official layout (docs/model.md §6, §10.1):
image_tokenizer/ (config.json, preprocessor_config.json, model.safetensors with `model.visual.*` /
`model.vqmodel.*`, sigvq_embedding.pt), decoder/ and decoder-turbo/ (config.json, model.safetensors with the
checkpoint's `semantic_embedder.` naming), vae/ (config.json, diffusion_pytorch_model.safetensors); every
floating tensor in bf16 as the official files. Each part is the latest state of its stage in `work_dir`
(finished or not); a missing turbo stage falls back to the normal DiT's weights (stated in the return value).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from workers.model.decoder.transformer import CHECKPOINT_CAP_PREFIX, DIFFUSERS_CAP_PREFIX
from workers.model.tiny_image_components import PREPROCESSOR_CONFIG, _write_json
from workers.model.toyworld.train.image_configs import DECODER_CONFIG, IMAGE_TOKENIZER_CONFIG

STORED_DTYPE = torch.bfloat16  # §10.1 rule 3


def _stored(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: (v.to(STORED_DTYPE) if v.is_floating_point() else v).contiguous().clone()
            for k, v in state.items()}


def write_image_tokenizer(folder: Path, tokenizer_state: dict, sigvq_state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", IMAGE_TOKENIZER_CONFIG)
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    # The module's keys are `visual.*` / `vqmodel.*`; the official file carries `model.visual.*` / `model.vqmodel.*`.
    save_file(_stored(tokenizer_state, "model."), folder / "model.safetensors", metadata={"format": "pt"})
    torch.save(_stored(sigvq_state), folder / "sigvq_embedding.pt")


def write_transformer(folder: Path, transformer_state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", DECODER_CONFIG)
    # diffusers' `cap_embedder` is `semantic_embedder` in the checkpoint (§5.3).
    renamed = {(CHECKPOINT_CAP_PREFIX + k[len(DIFFUSERS_CAP_PREFIX):] if k.startswith(DIFFUSERS_CAP_PREFIX) else k): v
               for k, v in transformer_state.items()}
    save_file(_stored(renamed), folder / "model.safetensors", metadata={"format": "pt"})


def write_vae(folder: Path, vae_state: dict, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", config)
    save_file(_stored(vae_state), folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})


def _state(work_dir: Path, stage: str) -> dict | None:
    path = work_dir / stage / "state.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def write_image_parts(work_dir: str | Path, checkpoint: str | Path) -> dict:
    """Write the four image folders under `checkpoint` from the stages' states; returns what came from where."""
    from workers.model.toyworld.train.image_configs import VAE_CONFIG
    from workers.model.toyworld.train.vae import build_vae, latent_statistics, trained_vae_state

    work_dir, checkpoint = Path(work_dir), Path(checkpoint)
    sources = {}
    vae_state = trained_vae_state(work_dir) if (work_dir / "vae" / "state.pt").is_file() else None
    tok_state = _state(work_dir, "image_tokenizer")
    normal, turbo = _state(work_dir, "decoder"), _state(work_dir, "decoder_turbo")
    missing = [n for n, s in (("vae", vae_state), ("image_tokenizer", tok_state), ("decoder", normal)) if s is None]
    if missing:
        raise FileNotFoundError(f"{work_dir}: no state for {', '.join(missing)}")
    config = vae_state.get("config")
    if config is None:  # an unfinished VAE stage: measure its latents' statistics now
        vae = build_vae()
        vae.load_state_dict(vae_state["model"])
        config = {**VAE_CONFIG, **latent_statistics(vae.eval(), seed=0)}
    write_vae(checkpoint / "vae", vae_state["model"], config)
    write_image_tokenizer(checkpoint / "image_tokenizer", tok_state["model"], normal["sigvq"])
    write_transformer(checkpoint / "decoder", normal["transformer"])
    write_transformer(checkpoint / "decoder-turbo", (turbo or normal)["transformer"])
    for name, state in (("vae", vae_state), ("image_tokenizer", tok_state), ("decoder", normal),
                        ("decoder_turbo", turbo)):
        sources[name] = None if state is None else {"step": state.get("step"), "elapsed_s": round(state.get("elapsed", 0))}
    for path in checkpoint.glob("*/*"):  # safetensors writes 0600; a service user must be able to read them
        if path.parent.name in ("vae", "image_tokenizer", "decoder", "decoder-turbo"):
            path.chmod(0o644)
    if turbo is None:
        sources["decoder_turbo"] = "missing: decoder-turbo/ holds the normal DiT's weights"
    return sources

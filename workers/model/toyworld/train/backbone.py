"""Stage: train the toy backbone (`train_backbone`) and write it in the official layout (`write_backbone`).

Seeded and resumable: step k's batch and masks come from `default_rng([seed, k])` alone, and the model,
optimiser and step are saved to `work_dir/backbone/state.pt` every `save_every_s` seconds (atomically), so a
resumed run continues where the last save was. A finished stage (`report.json` says so) is skipped.

Model: the runtime's own `LLaDA2MoeModelLM` built from the toy config, so every weight has its official name;
fp32 training. Router: the expert bias is balanced without an auxiliary loss (DeepSeek-V3 style, as the
official model has a bias and no aux loss, §2.2): after each step every MoE layer's bias moves by
`BIAS_RATE` towards the experts that got fewer than the mean number of tokens in the batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from workers.model.backbone.model import LLaDA2MoeModelLM
from workers.model.backbone.moe import MoE, MoEGate
from workers.model.config import BackboneConfig
from workers.model.tiny_checkpoint import EOS_TOKEN, write_backbone_shards

from ..codes import CODEBOOK_SIZE, meaning
from .backbone_config import backbone_config_json
from .backbone_data import phase_at, runtime_tokenizer, sample_examples
from .backbone_objective import batch_loss, noise_row
from .text_tokenizer import build_text_tokenizer, write_text_tokenizer

STAGE = "backbone"
BATCH = 32
LR, WARMUP, MIN_LR_FRACTION = 2e-3, 300, 0.1  # AdamW, linear warm-up, cosine to 10 % at `steps`
WEIGHT_DECAY, GRAD_CLIP = 0.01, 1.0
BIAS_RATE = 1e-3  # expert-bias step per optimiser step (aux-loss-free balancing)


def stage_dir(work_dir: Path) -> Path:
    return Path(work_dir) / STAGE


def toy_config() -> BackboneConfig:
    tok = build_text_tokenizer()
    return BackboneConfig.from_dict(backbone_config_json(tok.get_vocab_size(), tok.token_to_id(EOS_TOKEN)))


def new_model(config: BackboneConfig, seed: int) -> LLaDA2MoeModelLM:
    """Official initialisation (projections and embeddings ~N(0, initializer_range), norms 1, bias 0), except
    the image-code rows of the embedding and lm_head, which start factored (`factored_code_rows`)."""
    torch.manual_seed(seed)
    model = LLaDA2MoeModelLM(config)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.normal_(p, std=config.raw.get("initializer_range", 0.02))
    offset = config.image_token_offset
    with torch.no_grad():
        for weight in (model.model.word_embeddings.weight, model.lm_head.weight):
            weight[offset:] = factored_code_rows(config.hidden_size, weight.std().item())
    return model


def factored_code_rows(hidden: int, std: float) -> torch.Tensor:
    """[CODEBOOK_SIZE, hidden]: each designed code's row = the sum of one random vector per thing it says
    (its view, background, colour, shape, cell; `codes.meaning`). Why: the 288 generation-view codes are
    each rare (one cell × colour × shape), so rows learnt independently start slowly — the first run
    generated background only after 1k steps; shared factors let "red", "circle" or "cell 5" be learnt once
    for every code that says it. Only the starting point: the rows train freely afterwards."""
    factors: dict[tuple, torch.Tensor] = {}

    def vector(key: tuple) -> torch.Tensor:
        if key not in factors:
            factors[key] = torch.randn(hidden) * std / 2  # ≈ 4 factors per row: about `std` per entry
        return factors[key]

    rows = []
    for code in range(CODEBOOK_SIZE):
        m = meaning(code)
        keys = [("view", "background" if m.background else "generation" if m.cell else "reading")]
        keys += [(k, v) for k, v in (("background", m.background), ("colour", m.colour), ("shape", m.shape),
                                     ("cell", m.cell)) if v is not None]
        rows.append(sum(vector(k) for k in keys))
    return torch.stack(rows)


class RouterLoads:
    """Counts the experts each MoE gate picks during a forward (for the bias update)."""

    def __init__(self, model: torch.nn.Module):
        self.gates = [m.gate for m in model.modules() if isinstance(m, MoE)]
        self.loads = {id(g): torch.zeros(g.expert_bias.numel()) for g in self.gates}
        for gate in self.gates:
            gate.register_forward_hook(self._hook)

    def _hook(self, gate: MoEGate, _inputs, output) -> None:
        ids = output[0].detach().reshape(-1)
        self.loads[id(gate)] += torch.bincount(ids, minlength=gate.expert_bias.numel()).float()

    @torch.no_grad()
    def balance(self) -> list[list[float]]:
        """Move each bias towards under-used experts; returns each layer's load shares (then resets)."""
        shares = []
        for gate in self.gates:
            load = self.loads[id(gate)]
            gate.expert_bias += BIAS_RATE * torch.sign(load.mean() - load)
            shares.append((load / load.sum().clamp(min=1)).tolist())
            load.zero_()
        return shares


def learning_rate(step: int, steps: int, lr: float = LR, warmup: int = WARMUP, warm_from: int = 0) -> float:
    """Linear warm-up over `warmup` steps from `warm_from` (where a fresh optimiser started), then cosine."""
    if step - warm_from < warmup:
        scheduled = learning_rate(max(step, warmup), steps, lr, warmup) if warm_from else lr
        return scheduled * (step - warm_from + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def _write_report(folder: Path, report: dict) -> None:
    tmp = folder / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, folder / "report.json")


def read_report(work_dir: Path) -> dict | None:
    path = stage_dir(work_dir) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_backbone(work_dir: str | Path, *, seed: int = 0, steps: int = 9000, minutes: float = 60.0,
                   batch: int = BATCH, lr: float = LR, warmup: int = WARMUP, save_every_s: float = 120.0,
                   log_every: int = 50, stop_after: int | None = None, print_fn=None) -> dict:
    """Train (or resume, or skip if finished) until `steps` steps or `minutes` of training wall time in all.
    `stop_after`: leave this session after that many steps, unfinished (as an interruption would).

    Writes `work_dir/backbone/{state.pt, report.json, tokenizer files, config.json}`; returns the report."""
    print_fn = print_fn or (lambda line: print(line, flush=True))
    folder = stage_dir(Path(work_dir))
    folder.mkdir(parents=True, exist_ok=True)
    report = read_report(Path(work_dir))
    if report and report.get("finished"):
        print_fn(f"[backbone] finished earlier ({report.get('stopped_by')}, step {report.get('step')}); skipped")
        return report
    torch.set_num_threads(1)
    write_text_tokenizer(folder)
    config = toy_config()
    (folder / "config.json").write_text(json.dumps(config.raw, indent=2) + "\n")
    tok = runtime_tokenizer()

    model = new_model(config, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=WEIGHT_DECAY)
    step, elapsed, history, warm_from = 0, 0.0, [], 0
    state_path = folder / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        else:  # seeded from a checkpoint (warm_start): a fresh optimiser warms up again from here
            warm_from = step
        print_fn(f"[backbone] resumed at step {step} ({elapsed / 60:.1f} min trained)")
    loads = RouterLoads(model)
    params = sum(p.numel() for p in model.parameters())
    model.train()

    def save() -> None:
        _save(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "elapsed": elapsed, "history": history, "seed": seed})

    session_start, last_save, window = time.perf_counter(), time.perf_counter(), {}
    window_start, window_steps = time.perf_counter(), 0
    stopped_by, session_steps = None, 0
    while True:
        if stop_after is not None and session_steps >= stop_after:
            save()
            print_fn(f"[backbone] left unfinished at step {step}")
            return {"stage": STAGE, "finished": False, "step": step}
        if step >= steps:
            stopped_by = "steps"
            break
        if elapsed >= minutes * 60:
            stopped_by = "minutes"
            break
        began = time.perf_counter()
        rng = np.random.default_rng([seed, step])
        rows = [noise_row(e, rng, tok.mask_id) for e in sample_examples(rng, batch, tok=tok, phase=phase_at(step))]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup, warm_from)
        loss, per_task = batch_loss(model, rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        shares = loads.balance()
        step += 1
        session_steps += 1
        window_steps += 1
        elapsed += time.perf_counter() - began
        for task, (s, n) in per_task.items():
            acc = window.setdefault(task, [0.0, 0])
            acc[0] += s
            acc[1] += n
        if step % log_every == 0 or step == steps:
            current_lr = learning_rate(step - 1, steps, lr, warmup, warm_from)
            tasks = {t: round(s / max(n, 1), 4) for t, (s, n) in sorted(window.items())}
            rate = window_steps / (time.perf_counter() - window_start)
            max_share = max(max(layer) for layer in shares)
            history.append({"step": step, "minutes": round(elapsed / 60, 2), "loss": tasks,
                            "lr": current_lr, "max_expert_share": round(max_share, 3)})
            print_fn(f"[backbone] step {step}/{steps} {elapsed / 60:.1f} min {rate:.2f} it/s lr "
                     f"{current_lr:.2e} loss {tasks} max expert share {max_share:.2f}")
            window, window_start, window_steps = {}, time.perf_counter(), 0
        if time.perf_counter() - last_save >= save_every_s:
            save()
            last_save = time.perf_counter()
    save()
    report = {"stage": STAGE, "finished": True, "stopped_by": stopped_by, "step": step, "steps": steps,
              "batch": batch, "seed": seed, "train_minutes": round(elapsed / 60, 2),
              "session_wall_minutes": round((time.perf_counter() - session_start) / 60, 2),
              "parameters": params, "config": {k: config.raw[k] for k in (
                  "hidden_size", "num_hidden_layers", "num_experts", "num_experts_per_tok", "vocab_size",
                  "image_token_offset")},
              "final_loss": history[-1]["loss"] if history else None, "history": history}
    _write_report(folder, report)
    print_fn(f"[backbone] done: {stopped_by}, step {step}, {elapsed / 60:.1f} min")
    return report


def write_backbone(work_dir: str | Path, checkpoint_dir: str | Path) -> Path:
    """config.json, the tokenizer files and the sharded bf16 weights (expert_bias fp32) under
    `checkpoint_dir` (the top-level files only; the image parts live in subfolders)."""
    folder, out = stage_dir(Path(work_dir)), Path(checkpoint_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = torch.load(folder / "state.pt", weights_only=False)["model"]
    config = json.loads((folder / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_text_tokenizer(out)
    # bf16 as the official files, the router's expert_bias in fp32 (docs/model.md §2.3)
    tensors = {name: (t.detach().float() if name.endswith("expert_bias") else t.detach().bfloat16()).contiguous()
               for name, t in state.items()}
    write_backbone_shards(out, tensors, config["num_hidden_layers"])
    for shard in out.glob("model-*.safetensors"):  # safetensors writes 0600; a service user must read them
        shard.chmod(0o644)
    return out

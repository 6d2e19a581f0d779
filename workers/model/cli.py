"""`llada-server run t2i|understand|edit …`: run the Pipeline in this process, without the service.

    llada-server run t2i "a red fox in the snow" --width 512 --height 512 --seed 0 -o fox.png
    llada-server run understand photo.jpg "What is in this picture?"
    llada-server run edit photo.jpg "make it night" -o night.png

`--model` defaults to $LLADA_MODEL_PATH; without it, the toy checkpoint shipped in models/toy-shapes, trained
on the shapes world of ../shared/docs/TOY_WORLD.md (a prompt outside that world gets arbitrary output). Also runs as
`python -m workers.model.cli …`. Exit status: 0 done, 1 failed, 2 bad usage or input, 130 cancelled.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODEL_ENV = "LLADA_MODEL_PATH"
REFERENCE_CROP_BASE = 512  # docs/model.md §3.5
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llada-server run", description="Run LLaDA2.0-Uni locally (no server): text-to-image, understanding, editing.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help=f"checkpoint folder (default ${MODEL_ENV}, else the trained toy checkpoint "
                                        "shipped in models/toy-shapes)")
    common.add_argument("--device", help="torch device, e.g. cuda, cuda:1, cpu (default: cuda if available)")
    common.add_argument("--dtype", help="bfloat16 or float32 (default: bf16 on GPU, fp32 on CPU)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_argument("--steps", type=int, help="denoising steps per block")
    common.add_argument("--block-length", type=int, default=32)
    common.add_argument("--seed", type=int)
    sprint = common.add_argument_group("SPRINT (docs/model.md §3.6)")
    sprint.add_argument("--sprint", action="store_true", help="reuse the prefix KV cache (and prune it)")
    sprint.add_argument("--keep-ratio", type=float)
    sprint.add_argument("--cache-warmup-steps", type=int)
    sprint.add_argument("--confidence-alpha", type=float)
    sprint.add_argument("--remasking", choices=("low_confidence", "top_k_margin", "neg_entropy"))

    decoding = argparse.ArgumentParser(add_help=False)
    decoding.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="image file (default out.png)")
    decoding.add_argument("--decoder", choices=("turbo", "normal"), default="turbo")
    decoding.add_argument("--decoder-steps", type=int, help="default: 8 turbo, 50 normal")
    decoding.add_argument("--resolution-multiplier", type=int, default=2)

    tasks = parser.add_subparsers(dest="task", required=True)
    t2i = tasks.add_parser("t2i", parents=[common, decoding], help="text to image")
    t2i.add_argument("prompt")
    t2i.add_argument("--width", type=int, default=1024)
    t2i.add_argument("--height", type=int, default=1024)
    t2i.add_argument("--cfg-scale", type=float, default=2.0)
    t2i.add_argument("--mode", choices=("normal", "thinking"), default="normal")
    t2i.add_argument("--thinking-steps", type=int, default=32)
    t2i.add_argument("--thinking-gen-length", type=int, default=4096)

    understand = tasks.add_parser("understand", parents=[common], help="answer a question about an image")
    understand.add_argument("image", type=Path)
    understand.add_argument("question")
    understand.add_argument("--gen-length", type=int, default=2048)
    understand.add_argument("--threshold", type=float, default=0.95)
    understand.add_argument("-o", "--output", type=Path, help="also write the answer to this file")

    edit = tasks.add_parser("edit", parents=[common, decoding], help="edit an image by an instruction")
    edit.add_argument("image", type=Path)
    edit.add_argument("instruction")
    edit.add_argument("--cfg-text-scale", type=float, default=4.0)
    edit.add_argument("--cfg-image-scale", type=float, default=0.0)
    edit.add_argument("--crop", choices=("cover", "reference"), default="cover",
                      help="cover: resize then centre crop (default); reference: crop as the official code")
    edit.add_argument("--crop-base", type=int, default=None,
                      help="crop sizes hold at most (base/32)^2 cells of 32 px (default 512, as the reference; "
                           "64 for the toy checkpoint, which is trained on 64² crops)")
    return parser


def default_model_path() -> Path:
    """$LLADA_MODEL_PATH, else the trained toy checkpoint shipped in the repository (the service's default)."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    from shared.settings import TOY_CHECKPOINT

    return TOY_CHECKPOINT


def default_crop_base(model: Path) -> int:
    """The service's rule: the toy checkpoint is trained on 64² edit crops; any other model gets the reference's."""
    from shared.settings import TOY_CHECKPOINT, TOY_EDIT_CROP_BASE

    return TOY_EDIT_CROP_BASE if model.resolve() == TOY_CHECKPOINT else REFERENCE_CROP_BASE


def sprint_option(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.sprint:
        return None
    names = ("keep_ratio", "cache_warmup_steps", "confidence_alpha", "remasking")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _defined(**kwargs: Any) -> dict[str, Any]:
    """Only the options the user gave, so that the Pipeline's own defaults apply to the rest."""
    return {k: v for k, v in kwargs.items() if v is not None}


class StageBars:
    """A rich progress bar per stage (tokenize, think, denoise, decode), on stderr."""

    def __init__(self, enabled: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.bars = Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total)
        self.bars.update(self.tasks[stage], completed=step, total=total)

    def __enter__(self) -> "StageBars":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)


@contextmanager
def cancel_on_interrupt():
    """First Ctrl-C asks the run to stop at its next step (a clean `Cancelled`); a second one interrupts."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def on_interrupt(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print("\ncancelling at the next step (Ctrl-C again to interrupt now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace, pipe, progress, should_cancel):
    hooks = dict(progress=progress, should_cancel=should_cancel, sprint=sprint_option(args))
    if args.task == "t2i":
        result = pipe.generate_image(
            args.prompt, width=args.width, height=args.height, cfg_scale=args.cfg_scale, mode=args.mode,
            thinking_steps=args.thinking_steps, thinking_gen_length=args.thinking_gen_length,
            block_length=args.block_length, decoder=args.decoder, decoder_steps=args.decoder_steps,
            resolution_multiplier=args.resolution_multiplier, seed=args.seed, **_defined(steps=args.steps), **hooks,
        )
    elif args.task == "edit":
        result = pipe.edit_image(
            args.image, args.instruction, cfg_text_scale=args.cfg_text_scale,
            cfg_image_scale=args.cfg_image_scale, block_length=args.block_length, decoder=args.decoder,
            decoder_steps=args.decoder_steps, resolution_multiplier=args.resolution_multiplier, crop=args.crop,
            crop_base=args.crop_base or default_crop_base(args.model_path),
            seed=args.seed, **_defined(steps=args.steps), **hooks,
        )
    else:
        result = pipe.understand_image(
            args.image, args.question, gen_length=args.gen_length, threshold=args.threshold,
            block_length=args.block_length, seed=args.seed, **_defined(steps=args.steps), **hooks,
        )
    return result


def _report(args: argparse.Namespace, result) -> None:
    timings = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    if result.image is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result.image.save(args.output)
        if result.thinking:
            print(result.thinking)
        width, height = result.image.size
        print(f"wrote {args.output} ({width}x{height}, seed {result.seed}; {timings})", file=sys.stderr)
    else:
        print(result.text)
        if args.output is not None:
            args.output.write_text(result.text + "\n", encoding="utf-8")
        print(f"({timings})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.model.errors import Cancelled, ModelInputError  # after parsing: --help stays instant

    try:
        from workers.model.pipeline import Pipeline

        model = args.model_path = Path(args.model) if args.model else default_model_path()
        decoders = (args.decoder,) if args.task != "understand" else ()
        pipe = Pipeline.from_pretrained(model, device=args.device, dtype=args.dtype, decoders=decoders)
        with cancel_on_interrupt() as should_cancel, StageBars(not args.quiet) as bars:
            result = _run(args, pipe, bars, should_cancel)
    except ModelInputError as err:
        print(f"llada-server run: invalid {err.field}: {err.message}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"llada-server run: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Cancelled:
        print("llada-server run: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    _report(args, result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

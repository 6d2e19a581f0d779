"""`python -m workers.model.toyworld.train.run_image STAGE [--minutes M] [--work-dir D] [--checkpoint C]`:
the image stages one at a time (the lead's runner `python -m workers.model.toyworld.train` calls the same
functions). One torch thread: the machine is shared."""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["vae", "image_tokenizer", "decoder", "decoder_turbo", "write", "gate"])
    parser.add_argument("--work-dir", default="/work/toywork")
    parser.add_argument("--checkpoint", default="/work/toyck")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kw = {} if args.minutes is None else {"minutes": args.minutes}
    if args.stage == "vae":
        from workers.model.toyworld.train.vae import train_vae as run
    elif args.stage == "image_tokenizer":
        from workers.model.toyworld.train.image_tokenizer import train_image_tokenizer as run
    elif args.stage == "decoder":
        from workers.model.toyworld.train.decoder import train_decoder as run
    elif args.stage == "decoder_turbo":
        from workers.model.toyworld.train.decoder import train_decoder_turbo as run
    elif args.stage == "write":
        from workers.model.toyworld.train.image_writer import write_image_parts

        write_image_parts(args.work_dir, args.checkpoint)
        return
    else:
        from workers.model.toyworld.train.image_gate import reconstruction_gate

        print(json.dumps(reconstruction_gate(args.checkpoint, seed=args.seed, work_dir=args.work_dir), indent=2))
        return
    print(json.dumps(run(args.work_dir, seed=args.seed, **kw), indent=2))


if __name__ == "__main__":
    main()

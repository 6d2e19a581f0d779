"""Text-to-image through the engine on one GPU with full-size synthetic weights (issue 6, "On a GPU").

Writes a checkpoint in the official layout whose text-to-image path has the official sizes (random weights):
the backbone of docs/model.md §2.1 (~32 GB bf16), the 6.2B DiT of §5.2 (decoder-turbo/; decoder/ links to the same
file, as the engine loads both modes), the SigVQ embedder of §5.1 with a 16384-code VQ codebook, and the FLUX VAE
of §5.5 (~45 GB on disk); tokenizer and vision encoder stay tiny (text-to-image does not run the encoder). Then, with all three
stages on GPU 0: seconds per image and images per minute at 1, 4 and 8 concurrent jobs through the engine,
8 concurrent understanding jobs vs one at a time (step batching), and the same 8 images sequentially in the
in-process Pipeline (the pipelining baseline; loaded after the engine has let go of the GPU).

    python bench/gpu_engine_t2i.py [--folder /tmp/llada-full] [--out results.json]
    python bench/gpu_engine_t2i.py --small --device cpu --size 256    # the same code on tiny weights
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_backbone_step import OFFICIAL
from model_common import tiny_checkpoint, write_backbone, write_codebook, write_decoders, write_vae

from workers.model.tiny_image_components import TINY_SIGVQ_WIDTH, TINY_VQ_CONFIG

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

OFFICIAL_DIT = {"dim": 3840, "n_heads": 30, "n_kv_heads": 30, "n_layers": 30, "n_refiner_layers": 2,
                "cap_feat_dim": 4096}  # §5.2
OFFICIAL_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}  # §5.5
# Official sizes (§2.1 vocab − image_token_offset = 16384 codes, §5.1 SigVQ width 4096); --small writes the same
# files through the same code with the tiny backbone, DiT, codebook and width (the official VAE is cheap).
SIZES = {"official": dict(backbone=OFFICIAL, dit=OFFICIAL_DIT, codebook=16384, sigvq_width=4096),
         "small": dict(backbone={}, dit={}, codebook=TINY_VQ_CONFIG["num_embeddings"], sigvq_width=TINY_SIGVQ_WIDTH)}


def write_checkpoint(folder: Path, sizes: dict) -> Path:
    started = time.perf_counter()
    tiny_checkpoint(folder)
    write_backbone(folder, sizes["backbone"], shards=8)
    write_codebook(folder, sizes["codebook"], sizes["sigvq_width"])
    write_decoders(folder, sizes["dit"], subfolders=("decoder-turbo",))
    (folder / "decoder" / "config.json").write_text((folder / "decoder-turbo" / "config.json").read_text())
    (folder / "decoder" / "model.safetensors").unlink()
    (folder / "decoder" / "model.safetensors").symlink_to(folder / "decoder-turbo" / "model.safetensors")
    write_vae(folder, OFFICIAL_VAE)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"wrote {size / 2**30:.2f} GiB to {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def concurrent(fn, n: int) -> tuple[float, list[float]]:
    """Run fn(i) for i < n all at once; (wall seconds, per-call seconds)."""
    def timed(i):
        started = time.perf_counter()
        fn(i)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        each = list(pool.map(timed, range(n)))
    return time.perf_counter() - started, each


def photo() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (512, 512), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="where to write the checkpoint (default: a new temporary folder)")
    parser.add_argument("--small", action="store_true", help="tiny backbone and DiT (a smoke run of the same code)")
    parser.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--skip-pipeline", action="store_true", help="no in-process Pipeline baseline")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    import ray

    from workers.engine import EngineConfig, EngineExecutor
    from workers.engine.placement import local_init_resources
    from workers.model import Pipeline

    folder = Path(args.folder or tempfile.mkdtemp(prefix="llada-full-")) / "ckpt"
    folder = write_checkpoint(folder, SIZES["small" if args.small else "official"])
    t2i = dict(width=args.size, height=args.size)  # the service defaults: 8 steps, cfg 2, turbo decoder
    results: dict = {"size": args.size, "t2i": []}

    config = EngineConfig(model_path=str(folder), device=args.device, max_batch=8, max_inflight=8)
    resources = local_init_resources(config) if args.device == "cpu" else {}
    ray.init(include_dashboard=False, resources=resources, log_to_driver=False, logging_level="WARNING")
    started = time.perf_counter()
    engine = EngineExecutor(config)
    engine.describe(timeout_s=900)
    print(f"engine loaded in {time.perf_counter() - started:.0f} s", flush=True)
    engine.generate_image("warm-up", **t2i, seed=0)

    for n in (int(c) for c in args.concurrency.split(",")):
        wall, each = concurrent(lambda i: engine.generate_image(f"picture {i}: a red boat", **t2i, seed=i), n)
        row = {"concurrent": n, "wall_s": wall, "p50_latency_s": statistics.median(each),
               "s_per_image": wall / n, "images_per_minute": 60 * n / wall}
        results["t2i"].append(row)
        print(f"t2i {args.size}px, {n} concurrent: {wall:.1f} s, {row['s_per_image']:.2f} s/image, "
              f"{row['images_per_minute']:.1f} images/min, p50 latency {row['p50_latency_s']:.1f} s", flush=True)

    source = photo()

    def ask(i):
        engine.understand_image(source, f"Question {i}: what is in this picture?", gen_length=128, seed=i)

    ask(0)
    alone = sum(concurrent(ask, 1)[0] for _ in range(8))
    together, _ = concurrent(ask, 8)
    results["understand_batching"] = {"one_at_a_time_s": alone, "concurrent_s": together, "ratio": alone / together}
    print(f"8 understanding jobs (128 tokens): one at a time {alone:.1f} s, concurrent {together:.1f} s -> "
          f"{alone / together:.2f}x", flush=True)
    engine.close()
    ray.shutdown()

    if not args.skip_pipeline:
        pipe = Pipeline.from_pretrained(folder, device="cuda" if args.device == "gpu" else "cpu", decoders=("turbo",))
        pipe.generate_image("warm-up", **t2i, seed=0)
        started = time.perf_counter()
        for i in range(8):
            pipe.generate_image(f"picture {i}: a red boat", **t2i, seed=i)
        sequential = time.perf_counter() - started
        eight = next((r for r in results["t2i"] if r["concurrent"] == 8), None)
        results["pipeline_sequential_8_s"] = sequential
        print(f"Pipeline, 8 images sequentially: {sequential:.1f} s ({60 * 8 / sequential:.1f} images/min)"
              + (f"; engine with 8 in flight is {sequential / eight['wall_s']:.2f}x" if eight else ""), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

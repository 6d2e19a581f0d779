"""The README demo: the embedded stack, jobs over gRPC, outputs in a folder, a summary table.

    .venv/bin/python scripts/demo.py [--output DIR] [--data-dir DIR]

Starts the embedded stack (server.embedded: gateway, worker, reaper; SQLite, local object folder,
filesystem broker, the trained toy checkpoint shipped in `models/toy-shapes`), then through the client SDK
submits a text-to-image job for a picture of the shapes world (`../shared/docs/TOY_WORLD.md`), asks
understanding jobs several questions about the picture it got back, edits it, and prints the answers. It
writes the images, the answers and `summary.json` to the output folder and always stops the stack it
started. The toy model knows only that world: a prompt outside it gets arbitrary output.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's packages come first

from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from client import LladaClient, kind_name, stage_name, state_name  # noqa: E402
from server import embedded  # noqa: E402
from workers.model.toyworld import read_scene  # noqa: E402

# The toy model's pictures are 128 × 128 (a 4 × 4 backbone grid, 32 px per code; TOY_WORLD.md "Resolution").
DEMO_SIZE = 128
PROMPT = "a red circle at the top left on a white background"
TEXT_TO_IMAGE = {"prompt": PROMPT, "width": DEMO_SIZE, "height": DEMO_SIZE, "seed": 7}
# Asked about the picture the text-to-image job returned; everything else at the service's defaults.
QUESTIONS = ("describe the picture", "what shape is it?", "what colour is the shape?", "where is the shape?",
             "what colour is the background?")
EDIT = {"instruction": "make the circle blue", "seed": 7}
JOB_TIMEOUT_S = 600.0

console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def follow(client: LladaClient, job_id: str, label: str, progress: Progress):
    """Waits for the job with a progress bar; returns its final snapshot and the seconds it took."""
    task = progress.add_task(label, total=None, status="QUEUED")
    started = time.perf_counter()

    def show(job) -> None:
        state = state_name(job)
        stage = stage_name(job) if job.stage else ""
        total = job.progress.total or None
        progress.update(task, total=total, completed=job.progress.step,
                        status=f"{state} {stage}".strip())

    job = client.wait(job_id, progress=show, timeout=JOB_TIMEOUT_S)
    progress.update(task, total=1, completed=1, status=state_name(job))
    return job, time.perf_counter() - started


def record(job, seconds: float, files: list[Path], *, asked: str) -> dict:
    return {
        "id": job.id, "kind": kind_name(job), "asked": asked,
        "state": state_name(job), "attempts": job.attempts, "wall_seconds": round(seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(job.stage_seconds.items())},
        "text": job.outputs.text or None, "files": [str(p) for p in files],
        "error": {"code": job.error.code, "message": job.error.message, "field": job.error.field}
        if job.error.code else None,
    }


def run_jobs(client: LladaClient, output: Path) -> list[dict]:
    results = []
    columns = [TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.fields[status]:<20}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        t2i = client.submit_text_to_image(**TEXT_TO_IMAGE)
        job, seconds = follow(client, t2i.id, "text-to-image", progress)
        files = [Path(p) for p in client.download(job, output / "text_to_image.png")] if state_name(job) == "SUCCEEDED" else []
        results.append(record(job, seconds, files, asked=PROMPT))
        if not files:
            return results
        image = files[0].read_bytes()
        # All go in at once; the single worker runs them one after the other.
        asked = [(question, client.submit_understand(image, question)) for question in QUESTIONS]
        edit = client.submit_edit(image, **EDIT)
        for number, (question, submitted) in enumerate(asked, 1):
            job, seconds = follow(client, submitted.id, f"understanding {number}/{len(asked)}", progress)
            files = []
            if state_name(job) == "SUCCEEDED":
                answer = output / f"understanding_{number}.txt"
                answer.write_text(f"{question}\n{job.outputs.text}\n")
                files = [answer]
            results.append(record(job, seconds, files, asked=question))
        job, seconds = follow(client, edit.id, "edit", progress)
        files = [Path(p) for p in client.download(job, output / "edit.png")] if state_name(job) == "SUCCEEDED" else []
        results.append(record(job, seconds, files, asked=EDIT["instruction"]))
    return results


def print_summary(results: list[dict], total_s: float, output: Path) -> None:
    table = Table(title=f"llada-serve demo: {total_s:.1f} s in all, outputs in {output}")
    for column in ("job", "state", "tries", "wall s", "denoise s", "decode s", "output"):
        table.add_column(column)
    for r in results:
        stages = r["stage_seconds"]
        out = f"{r['error']['code']}: {r['error']['message']}" if r["error"] else ", ".join(Path(f).name for f in r["files"])
        table.add_row(r["kind"].lower(), r["state"], str(r["attempts"]), f"{r['wall_seconds']:.1f}",
                      f"{stages.get('denoise', 0):.1f}", f"{stages.get('decode', 0):.1f}" if "decode" in stages else "",
                      out)
    console_out = Console()
    if not console_out.is_terminal:  # a log or a pipe: no terminal width to fit, keep rows on one line
        console_out = Console(width=120)
    console_out.print(table)
    for r in results:
        if r["kind"] == "UNDERSTAND" and r["text"] is not None:
            console_out.print(f"{r['asked']!r} -> {r['text'][:120]!r}")
        elif r["files"]:
            # The world's pixel checker (TOY_WORLD.md) says what the picture shows, whatever model drew it.
            seen = read_scene(Image.open(r["files"][0]))
            console_out.print(f"{r['asked']!r} -> the checker reads: {describe_reading(seen)}")


def describe_reading(seen) -> str:
    if seen.shape is None:
        return f"no shape on a {seen.background} background"
    return f"a {seen.colour} {seen.shape} at the {seen.row} {seen.column} on a {seen.background} background"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo-output"), help="where the outputs go")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".llada" / "demo",
                        help="the embedded stack's data folder (kept between runs)")
    args = parser.parse_args(argv)
    output = args.output.expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # A free port and no metrics port: the demo never collides with a stack the user already runs.
    settings = embedded.settings_for(args.data_dir.expanduser().resolve(), f"127.0.0.1:{free_port()}", 0,
                                     f"127.0.0.1:{free_port()}", 0)
    console.print(f"starting the embedded stack in {settings.data_dir} ...")
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the stack below is always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        info = embedded.start_stack(settings, log=console.print)
    except RuntimeError as err:
        console.print(f"[red]demo: {err}[/red]")
        return 1
    try:
        console.print(f"stack up in {time.perf_counter() - started:.1f} s at {info.grpc_address}")
        with LladaClient(info.grpc_address, api_key=info.api_key) as client:
            results = run_jobs(client, output)
    finally:
        how = embedded.stop_stack(Path(info.data_dir))
        console.print("stack stopped: " + ", ".join(f"{n} {s}" for n, s in how.items()))
    total_s = time.perf_counter() - started
    summary = {"total_seconds": round(total_s, 3), "grpc_address": info.grpc_address, "jobs": results}
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(results, total_s, output)
    ok = len(results) == 2 + len(QUESTIONS) and all(r["state"] == "SUCCEEDED" for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

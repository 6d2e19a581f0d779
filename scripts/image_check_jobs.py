"""The job half of scripts/image-check.sh: what a user does against the containers, through the client SDK.

    python scripts/image_check_jobs.py kinds --server HOST:PORT --api-key KEY --output DIR
    python scripts/image_check_jobs.py stop-during-job --server HOST:PORT --api-key KEY --container NAME

`kinds` submits a text-to-image job, then an understanding and an edit job on its picture, waits for each
and downloads what they made (from the object store, through the presigned URLs). `stop-during-job` submits
a longer text-to-image job, stops the worker container with `podman stop` once the job is denoising, and
checks that the job still succeeds with one attempt and that the container exited 0 (ARCHITECTURE §3:
drain, don't die). Each prints one line per job; the exit status is 0 only when every check held.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's SDK, whichever environment runs the script

from client import LladaClient, stage_name, state_name  # noqa: E402

# Small, as in the demo: seconds each on the tiny checkpoint (the worker's edit crop base is 128).
TEXT_TO_IMAGE = {"prompt": "a lighthouse on a cliff at sunset", "width": 256, "height": 256, "steps": 8, "seed": 7}
UNDERSTAND = {"question": "What is in this picture?", "gen_length": 16, "steps": 8}
EDIT = {"instruction": "make the sky stormy", "steps": 4, "seed": 7}
# Long enough to be mid-job when the worker is stopped, well within the check's drain timeout.
LONG_JOB = {"prompt": "a kite over the sea", "width": 256, "height": 256, "steps": 64, "block_length": 64,
            "decoder_steps": 32, "seed": 11}
JOB_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120  # podman stop -t: the grace period the check gives the worker


def small_png(path: Path, side: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def finish(client: LladaClient, job, label: str, started: float):
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    state = state_name(job)
    print(f"  {label:<14} {state:<10} attempts={job.attempts} {time.monotonic() - started:6.1f} s")
    if state != "SUCCEEDED":
        raise SystemExit(f"{label} job {job.id} ended {state}: {job.error.code} {job.error.message}")
    return job


def run_kinds(client: LladaClient, output: Path) -> None:
    started = time.monotonic()
    t2i = finish(client, client.submit_text_to_image(**TEXT_TO_IMAGE), "text-to-image", started)
    [picture] = [Path(p) for p in client.download(t2i, output / "text_to_image.png")]
    source = small_png(picture)
    started = time.monotonic()
    understand = client.submit_understand(source, **UNDERSTAND)
    edit = client.submit_edit(source, **EDIT)
    understood = finish(client, understand, "understand", started)
    if not understood.outputs.text:
        raise SystemExit(f"understand job {understood.id} succeeded without an answer")
    edited = finish(client, edit, "edit", started)
    files = client.download(edited, output / "edit.png")
    if not files or Path(files[0]).stat().st_size == 0:
        raise SystemExit(f"edit job {edited.id} left no image to download")


def stop_during_job(client: LladaClient, container: str) -> None:
    started = time.monotonic()
    job = client.submit_text_to_image(**LONG_JOB)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = client.get(job.id)
        if state_name(job) == "RUNNING" and stage_name(job) == "denoise" and job.progress.step >= 1:
            break
        if state_name(job) not in ("QUEUED", "RUNNING") or time.monotonic() > deadline:
            raise SystemExit(f"job {job.id} never got under way: {state_name(job)}")
        time.sleep(0.1)
    print(f"  stopping {container} at step {job.progress.step}/{job.progress.total} of job {job.id}")
    stopped = time.monotonic()
    stop = subprocess.run(["podman", "stop", "-t", str(STOP_TIMEOUT_S), container], capture_output=True,
                          text=True, timeout=STOP_TIMEOUT_S + 60)
    stop_s = time.monotonic() - stopped
    exit_code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", container],
                               capture_output=True, text=True, timeout=60).stdout.strip()
    logs = subprocess.run(["podman", "logs", container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60).stdout
    job = client.get(job.id)
    # The job must have finished during the drain, not before the signal reached the worker.
    drained = 0 <= logs.find("Warm shutdown") < logs.rfind("job finished")
    print(f"  finished during the drain: {drained}")
    print(f"  job {state_name(job)} attempts={job.attempts} (submitted {stopped - started:.1f} s before the stop); "
          f"the container exited {exit_code}, {stop_s:.1f} s after the stop")
    if stop.returncode != 0:
        raise SystemExit(f"podman stop failed: {stop.stderr.strip()}")
    if (state_name(job), job.attempts, exit_code, drained) != ("SUCCEEDED", 1, "0", True):
        raise SystemExit("the stopped worker did not finish its job once, during its drain, and exit 0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["kinds", "stop-during-job"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--output", type=Path, help="kinds: where the downloaded results go")
    parser.add_argument("--container", help="stop-during-job: the worker container to stop")
    args = parser.parse_args(argv)
    with LladaClient(args.server, api_key=args.api_key, timeout=30) as client:
        if args.what == "kinds":
            run_kinds(client, args.output)
        else:
            stop_during_job(client, args.container)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP tests' stand-in for a worker: it runs the jobs the gateway enqueued (tests.gateway.queue_double)
through the repository, as a worker would — claim, a progress step, then a result: a PNG of the asked size for an
image job, an answer that names the question for an understanding job. A text holding "[fail]" makes the job
fail with the field it names; ``hold()`` keeps new jobs queued until ``release()``; ``stepwise()`` makes every
move (claim, progress, for an answer its first words as they settle, finish) wait for a ``step()``, so that a
test sees each state before the next."""

from __future__ import annotations

import io
import threading

from PIL import Image

from shared import attempts
from shared.db.models import Job
from shared.objectstore import result_key

WORKER = "http-test-worker"


def png(width: int, height: int, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def answer_to(question: str) -> str:
    return f"an answer to: {question}"


class WorkerDouble:
    def __init__(self, gw):
        self.gw = gw
        self._done = 0
        self._release = threading.Event()
        self._release.set()
        self._steps: threading.Semaphore | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def stepwise(self, on: bool = True) -> None:
        self._steps = threading.Semaphore(0) if on else None

    def step(self) -> None:
        self._steps.release()

    def _next_move(self) -> None:
        steps = self._steps
        if steps is not None:
            assert steps.acquire(timeout=20), "the test did not step the worker double"

    def close(self) -> None:
        self._stop.set()
        self._release.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            if not self._release.is_set() or self._done >= len(self.gw.queue.sent):
                continue
            job_id, _ = self.gw.queue.sent[self._done]
            self._done += 1
            self._work(job_id)

    def _publish(self, job_id: str, state: str) -> None:
        self.gw.events.publish(job_id, {"type": "state", "state": state})

    def _work(self, job_id: str) -> None:
        self._next_move()
        attempt = self.gw.db(attempts.claim_job, job_id, WORKER, heartbeat_timeout_s=60)
        if attempt is None:  # cancelled or deleted while queued
            return
        self._publish(job_id, "RUNNING")
        with self.gw.sessions() as s:
            job = s.get(Job, job_id)
            kind, params = job.kind, dict(job.params)
        self._next_move()
        self.gw.db(attempts.record_progress, attempt, "denoise", 1, 2)
        self.gw.events.publish(job_id, {"type": "progress", "stage": "denoise", "step": 1, "total": 2})
        self._next_move()
        text = params.get("prompt") or params.get("question") or params.get("instruction") or ""
        if "[fail]" in text:
            self.gw.db(attempts.fail_job, attempt, code="INVALID_ARGUMENT", message="the double was told to fail",
                       field=("understand.question" if kind == "UNDERSTAND" else "text_to_image.prompt"))
            self._publish(job_id, "FAILED")
            return
        if kind == "UNDERSTAND":
            settled = " ".join(answer_to(text).split()[:2])  # the first block's words
            self.gw.db(attempts.record_answer, attempt, settled)
            self.gw.events.publish(job_id, {"type": "answer", "chars": len(settled)})
            self._next_move()
            self.gw.db(attempts.finish_job, attempt, output_keys={}, output_text=answer_to(text),
                       timings={"tokenize": 0.01, "denoise": 0.02})
        else:
            key = result_key(job_id, attempt.number, "image.png")
            self.gw.store.put(key, png(params.get("width") or 64, params.get("height") or 64), "image/png")
            self.gw.db(attempts.finish_job, attempt, output_keys={"image": key}, seed=7,
                       timings={"tokenize": 0.01, "denoise": 0.02, "decode": 0.03})
        self._publish(job_id, "SUCCEEDED")

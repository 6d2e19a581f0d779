"""The gateway tests' stand-in for the queue producer (no Celery worker exists in these tests)."""

from dataclasses import dataclass, field


@dataclass
class QueueProducerDouble:
    """Stands in for shared.queue.enqueue_run_job: records (job_id, priority) instead of sending."""

    sent: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, job_id: str, priority: int) -> None:
        self.sent.append((job_id, priority))

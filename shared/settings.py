"""One `Settings` object for every process, read from `LLADA_*` environment variables.

The URLs choose the backends: the defaults give the embedded mode (SQLite, a local folder as object
store, kombu's filesystem broker, a file-backed event bus — all under `data_dir`), and production
sets Postgres / Redis / S3 URLs instead (ARCHITECTURE §5).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLADA_", extra="ignore")

    data_dir: Path = Path("./.llada")

    # Backends. None means "the embedded default under data_dir" (filled in by _fill_defaults).
    database_url: str | None = None
    broker_url: str | None = None
    object_store_url: str | None = None
    event_bus_url: str | None = None
    model_path: str | None = None

    # S3 / MinIO, used when object_store_url is s3://<bucket>.
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # Host[:port] clients outside the cluster reach; presigned URLs are signed for it because the
    # signature covers the Host header. None: same as s3_endpoint.
    s3_public_endpoint: str | None = None
    s3_public_secure: bool | None = None

    # Network services.
    grpc_listen: str = "127.0.0.1:50051"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # Backpressure: SubmitJob answers RESOURCE_EXHAUSTED beyond these many QUEUED jobs.
    max_queued_per_tenant: int = Field(default=100, ge=1)
    max_queued_total: int = Field(default=1000, ge=1)

    # Reliability (ARCHITECTURE §3).
    max_attempts: int = Field(default=3, ge=1)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    # Broker redelivery timeout; must exceed the longest job or Redis re-delivers running tasks.
    visibility_timeout_s: float = Field(default=4 * 3600.0, gt=0)
    # QUEUED jobs older than this are re-sent by the reaper (covers a lost broker message).
    resend_queued_after_s: float = Field(default=300.0, gt=0)
    retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    # Input limits.
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_prompt_chars: int = Field(default=4000, ge=1)

    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)  # S3 SigV4 caps at 7 days
    # Celery queue both the producer and the worker use.
    queue_name: str = "llada.jobs"
    # Key prefix for Redis pub/sub channels of the event bus.
    event_channel_prefix: str = "llada:events:"

    # Embedded mode only: an API key registered for tenant `default_tenant` at start-up.
    default_api_key: str | None = None
    default_tenant: str = "default"

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        # Absolute, so that processes of the embedded stack started elsewhere agree on the paths.
        root = self.data_dir.expanduser().resolve()
        self.data_dir = root
        if self.database_url is None:
            self.database_url = f"sqlite:///{root / 'jobs.db'}"
        if self.broker_url is None:
            self.broker_url = f"filesystem://{root / 'broker'}"
        if self.object_store_url is None:
            self.object_store_url = f"file://{root / 'objects'}"
        if self.event_bus_url is None:
            self.event_bus_url = f"embedded://{root / 'events.db'}"
        if self.model_path is None:
            # The embedded default runs the tiny random checkpoint (ARCHITECTURE §6).
            self.model_path = str(root / "tiny-checkpoint")
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            # One late heartbeat must not get a healthy job reaped.
            raise ValueError("heartbeat_timeout_s must exceed twice heartbeat_interval_s")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self

    @property
    def public_endpoint(self) -> str:
        return self.s3_public_endpoint or self.s3_endpoint

    @property
    def public_secure(self) -> bool:
        return self.s3_secure if self.s3_public_secure is None else self.s3_public_secure


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

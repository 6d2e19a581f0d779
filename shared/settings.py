"""One `Settings` object for every process, read from `LLADA_*` environment variables.

The URLs choose the backends: the defaults give the embedded mode (SQLite, a local folder as object
store, kombu's filesystem broker, a file-backed event bus — all under `data_dir`), and production
sets Postgres / Redis / S3 URLs instead (ARCHITECTURE §5).
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LLADA_"
# LLADA_* variables that other parts of the project read themselves, not settings: the client (server
# address, key), docker-compose's interpolation (.env.example) and the tests.
# A component that reads a new variable of its own adds it here, or every process warns about it.
OTHER_VARIABLES = frozenset({
    "LLADA_SERVER", "LLADA_API_KEY",
    "LLADA_GATEWAY_IMAGE", "LLADA_WORKER_IMAGE", "LLADA_WORKER_CPU_IMAGE", "LLADA_MODEL_DIR",
    "LLADA_WORKER_STOP_GRACE", "LLADA_WORKER_SHM_SIZE", "LLADA_GRPC_PORT", "LLADA_METRICS_HOST_PORT",
    "LLADA_S3_PUBLIC_PORT", "LLADA_S3_BUCKET", "LLADA_SERVICES", "LLADA_COMPONENTS",
})
OTHER_PREFIXES = ("LLADA_TEST_",)
# How alike (difflib ratio, names without the prefix) an unknown name and a setting must be to call the
# unknown one a misspelling (an error): one or two letters off scores >= 0.9, while real variables of the
# deployment score lower (LLADA_S3_PUBLIC_PORT vs s3_public_endpoint 0.81). Above HINT_CUTOFF the warning
# suggests the setting.
MISSPELLING_CUTOFF = 0.85
HINT_CUTOFF = 0.6

log = logging.getLogger("llada.settings")

# The embedded default model: a small LLaDA2.0-Uni trained on the shapes world of ../shared/docs/TOY_WORLD.md,
# in the official layout (`python -m workers.model.toyworld.train` regenerates it). Its edits are trained on
# 64² source crops (a 4 × 4 grid), so the default stack crops edit sources to the 64 base, not the reference's 512.
TOY_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "toy-shapes"
TOY_EDIT_CROP_BASE = 64


class Settings(BaseSettings):
    # extra="forbid": a misspelled keyword (Settings(max_attempt=5)) is an error, not silently dropped.
    # Misspelled LLADA_* environment variables are caught by _check_environment below.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Path("./.llada")

    # Backends. None means "the embedded default under data_dir" (filled in by _fill_defaults).
    # The database, broker and event-bus URLs may carry a password: they are left out of the repr (and so of
    # any log line that shows the settings).
    database_url: str | None = Field(default=None, repr=False)
    broker_url: str | None = Field(default=None, repr=False)
    object_store_url: str | None = None
    event_bus_url: str | None = Field(default=None, repr=False)
    model_path: str | None = None

    # S3 / MinIO, used when object_store_url is s3://<bucket>.
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")  # .get_secret_value(); shown as ********** anywhere else
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # Host[:port] clients outside the cluster reach; presigned URLs are signed for it because the
    # signature covers the Host header. None: same as s3_endpoint.
    s3_public_endpoint: str | None = None
    s3_public_secure: bool | None = None

    # Network services.
    grpc_listen: str = "127.0.0.1:50051"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # The Prometheus ports of the other processes (0 = off): a worker (served by the process that runs its jobs),
    # the reaper and the webhook dispatcher, on metrics_host (the images set 0.0.0.0 for the scraper to reach).
    # The gateway's metrics_port listens on grpc_listen's host.
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9466, ge=0, le=65535)
    reaper_metrics_port: int = Field(default=9467, ge=0, le=65535)
    webhook_metrics_port: int = Field(default=9468, ge=0, le=65535)
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
    # On SIGTERM a worker lets its running jobs finish for this long, then hands them back (re-queued at
    # once, not counted as failed attempts) and exits 0. Keep it below the pod's terminationGracePeriodSeconds
    # (3600 s in k8s/) and compose's stop_grace_period, minus the time a hand-back and Ray's shutdown take.
    drain_timeout_s: float = Field(default=3300.0, ge=0)
    # Health files (shared/health_file.py) for `llada-healthcheck worker|reaper`; None: not written. A worker
    # keeps its file while it consumes with its model loaded (removed when it drains or the model fails); the
    # reaper rewrites its file after every pass. The images set both to a path under /tmp.
    worker_ready_file: Path | None = None
    reaper_pass_file: Path | None = None
    # The reaper's sweep removes input objects that no job names once they are this old (a gateway that died
    # between its upload and its insert); younger ones may belong to a submit still under way.
    orphan_grace_s: float = Field(default=900.0, gt=0)

    # Input limits.
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_prompt_chars: int = Field(default=4000, ge=1)
    # Input images the gateway decodes at once (each at most ~64 MiB decoded: shared/images.py's pixel
    # limit), so concurrent submits of large images cannot exhaust its memory; the others wait their turn.
    max_concurrent_image_decodes: int = Field(default=2, ge=1)

    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)  # S3 SigV4 caps at 7 days
    # Celery queue both the producer and the worker use.
    queue_name: str = "llada.jobs"
    # Key prefix for Redis pub/sub channels of the event bus.
    event_channel_prefix: str = "llada:events:"

    # Embedded mode only: an API key that authenticates as tenant `default_tenant` (a secret, like the S3 key).
    default_api_key: SecretStr | None = None
    default_tenant: str = "default"

    # Gateway. On SIGTERM unary calls in flight get shutdown_grace_s to finish (open WatchJob streams end
    # at once and their clients re-call); below Kubernetes' default 30 s termination grace.
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # WatchJob re-reads the database this often even without events: the safety net for an event lost
    # by the bus (or published by a process that has no bus), so a watch never stalls for long.
    watch_poll_interval_s: float = Field(default=2.0, gt=0)
    # Open WatchJob streams one tenant may hold on one gateway process; beyond it RESOURCE_EXHAUSTED, so that
    # a single tenant cannot take every stream (and memory) of the process.
    max_watches_per_tenant: int = Field(default=100, ge=1)
    # RPCs one gateway process serves at once (grpc.aio's maximum_concurrent_rpcs; beyond it gRPC itself
    # answers RESOURCE_EXHAUSTED). Open watches count, and so do health probes: keep it well above the
    # watches expected per process.
    max_concurrent_rpcs: int = Field(default=2000, ge=1)

    # Webhooks (shared.webhooks, services.webhooks): a submit's webhook URL must be https unless this allows http
    # (a test or a receiver inside a trusted network).
    webhook_allow_http: bool = False
    # Networks (CIDRs, JSON in the environment: '["10.0.0.0/8"]') a webhook may reach beyond public addresses;
    # loopback, private, link-local (metadata) and the like are refused otherwise, judged at each try.
    webhook_allow_networks: list[str] = Field(default_factory=list)
    # One try: connect and read timeouts each. A try is leased for 2 × this + 10 s, then another dispatcher
    # may retry it (a dispatcher that died mid-try).
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Giving up: after this many tries, or once the next try would come this long after the event.
    webhook_max_tries: int = Field(default=10, ge=1)
    webhook_max_age_s: float = Field(default=24 * 3600.0, gt=0)
    # Backoff between tries: this doubled after each failed one, capped, with jitter (half of it random).
    webhook_backoff_s: float = Field(default=2.0, gt=0)
    webhook_backoff_cap_s: float = Field(default=600.0, gt=0)
    # Tries one dispatcher process has in flight at once, and how often it looks for due deliveries when idle.
    webhook_concurrency: int = Field(default=16, ge=1)
    webhook_poll_interval_s: float = Field(default=0.25, gt=0)
    # CA bundle for https receivers (None: certifi's); a private CA for receivers inside the network.
    webhook_ca_file: Path | None = None
    # The dispatcher's pass file for `llada-healthcheck webhooks` (shared/health_file.py); None: not written.
    webhook_pass_file: Path | None = None

    # HTTP front door (services.http): JSON, OpenAI-compatible routes and the dashboard, a client of the gateway.
    http_listen: str = "127.0.0.1:8080"
    # The gateway it calls (host:port); None: grpc_listen. With http_gateway_ca_file, over TLS trusting that CA.
    http_gateway: str | None = None
    http_gateway_ca_file: Path | None = None
    # The OpenAI-style calls wait this long for their job; past it they answer 202 with the job's id to follow.
    http_wait_timeout_s: float = Field(default=300.0, gt=0)
    # The largest request body (an edit's upload, a job's base64 image); beyond it 413 before it is read.
    http_max_body_bytes: int = Field(default=48 * 1024 * 1024, ge=1)
    # Where it dials result objects (host:port) when the presigned URLs' host, s3_public_endpoint, is not reachable
    # from it (compose: minio:9000 while URLs name localhost:9000). The request keeps the Host the URL is signed
    # for, so the signature still holds. None: dial the URL's own host.
    http_object_store_address: str | None = None
    # Its Prometheus port; 0 = off. Not the gateway's metrics_port: both run side by side in the embedded stack.
    http_metrics_port: int = Field(default=9465, ge=0, le=65535)

    # Traces (shared.tracing): the OTLP/HTTP traces URL of a collector (e.g. http://otel-collector:4318/v1/traces);
    # None: off. One trace per job, from its submit through every attempt's stages.
    otlp_endpoint: str | None = None

    # Logs (shared.logs): the level of every process, and its lines: "json" (one object per line, with the
    # job_id, attempt and tenant of a job as fields) or "text" (for a person reading a terminal).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Worker engine layout (workers/engine/config.py validates them); None: the engine's own default.
    engine_placement: dict[str, int] | None = None  # JSON in the environment, e.g. {"tokenizer": 0, ...}
    engine_replicas: int | None = None
    engine_max_batch: int | None = None
    engine_max_inflight: int | None = None
    engine_device: str | None = None
    engine_ray_address: str | None = None
    # What runs a job in the Celery worker (ARCHITECTURE §4): "engine" — the Ray engine, which pipelines
    # several jobs per replica (the worker then admits replicas × engine_max_inflight jobs at once, on
    # threads); "pipeline" — the in-process Pipeline, one job per worker process (the embedded stack's
    # choice); or "module:factory", a callable taking the Settings (benchmarks, tests).
    worker_executor: str = Field(default="engine", pattern=r"^(engine|pipeline|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")

    # Editing (docs/model.md §3.5): the source image is cropped to the crop list of this base resolution.
    # 512 is the reference (≤ 16² cells of 32 px, ~1024 tokens denoised and ~1024² px decoded whatever the
    # input size), so results compare with it; a deployment may lower it to edit in seconds at a lower
    # resolution. Unset with the toy checkpoint as the model: TOY_EDIT_CROP_BASE. A positive multiple of 32.
    edit_crop_base: int = Field(default=512, ge=32, multiple_of=32)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the malformed one
        return value

    @model_validator(mode="before")
    @classmethod
    def _check_environment(cls, data: Any) -> Any:
        check_environment(os.environ)
        return data

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
            # The embedded default serves the trained toy checkpoint shipped in the repository (issue 12).
            self.model_path = str(TOY_CHECKPOINT)
        if "edit_crop_base" not in self.model_fields_set and Path(self.model_path).resolve() == TOY_CHECKPOINT:
            self.edit_crop_base = TOY_EDIT_CROP_BASE
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


def check_environment(environ: Mapping[str, str]) -> list[str]:
    """Refuse a LLADA_* variable that is a misspelled setting; warn about other unknown ones.

    A near miss (LLADA_MAX_ATTEMTPS) is an error naming the setting it resembles: silently running with
    the default is the surprise an operator would least expect. A name like no setting may belong to a
    tool or script of the deployment, so it is only logged. Returns the unknown names.
    """
    fields = list(Settings.model_fields)
    unknown = sorted(
        name for name in (key.upper() for key in environ)
        if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX):].lower() not in Settings.model_fields
        and name not in OTHER_VARIABLES and not name.startswith(OTHER_PREFIXES))
    for name in unknown:
        # Compared without the common prefix, which would make every pair look alike.
        suffix = name[len(ENV_PREFIX):].lower()
        close = difflib.get_close_matches(suffix, fields, n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            raise ValueError(f"environment variable {name} is not a setting; "
                             f"did you mean {ENV_PREFIX}{close[0].upper()}?")
        hint = difflib.get_close_matches(suffix, fields, n=1, cutoff=HINT_CUTOFF)
        log.warning("environment variable %s is not a llada-serve setting and is ignored%s", name,
                    f" (did you mean {ENV_PREFIX}{hint[0].upper()}?)" if hint else "", extra={"variable": name})
    return unknown


def describe_settings_error(err: ValidationError) -> str:
    """One line per problem, naming the setting, without pydantic's echo of the inputs (secrets among them)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'environment'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in err.errors())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

# syntax=docker/dockerfile:1
# The CPU worker variant: same code path as the GPU worker on the tiny random checkpoint, which it makes
# under /models/tiny on first start (for development, CI-like smoke runs and the compose `cpu` profile).
# Build from the repository root: docker build -f docker/worker-cpu.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of the pinned torch first, so installing the project finds it satisfied and never pulls CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY workers ./workers
COPY client ./client
RUN pip install -e .

COPY --chmod=0755 docker/worker-drain.sh /usr/local/bin/llada-worker-drain
COPY --chmod=0755 docker/worker-cpu-entrypoint.sh /usr/local/bin/llada-worker-cpu-entrypoint

RUN useradd --system --uid 10001 --gid 0 --create-home --home-dir /home/llada --shell /usr/sbin/nologin llada \
    && mkdir -p /models \
    && chown 10001:0 /models
USER 10001
ENV HOME=/home/llada \
    LLADA_WORKER_READY_FILE=/tmp/llada/worker.ready \
    LLADA_MODEL_PATH=/models/tiny

STOPSIGNAL SIGTERM
# Ready: Celery consumes and the model is loaded (the worker keeps LLADA_WORKER_READY_FILE fresh meanwhile and
# removes it when it drains). Local, not through the broker: a Redis hiccup does not make every worker unhealthy.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["llada-healthcheck", "worker"]

ENTRYPOINT ["tini", "--", "llada-worker-cpu-entrypoint"]
CMD ["celery", "-A", "workers.celery_app", "worker", "--prefetch-multiplier=1", "--loglevel=INFO"]

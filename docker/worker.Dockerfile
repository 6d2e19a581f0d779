# syntax=docker/dockerfile:1
# The GPU worker: Celery consumer + Ray with the three model actors. torch comes from the CUDA PyTorch
# base image; the model folder is mounted at /models/LLaDA2.0-Uni at run time, never baked in.
# Build from the repository root: docker build -f docker/worker.Dockerfile .
# The base must carry the torch release pyproject.toml pins (2.13.0); the build stops if it does not.
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime
FROM ${TORCH_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# tini as PID 1 reaps Ray's subprocesses and forwards SIGTERM to Celery only (not to the whole group),
# so Ray's actors keep running while Celery finishes its job during a warm shutdown.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY workers ./workers
COPY client ./client
COPY server ./server
# Check the base's torch before pip runs: a different release would make pip fetch another torch build.
RUN python -c "import sys, torch; v = torch.__version__.split('+')[0]; sys.exit(None if v == '2.13.0' else f'base image has torch {v}; pyproject.toml pins 2.13.0')" \
    && pip install -e .

COPY --chmod=0755 docker/worker-drain.sh /usr/local/bin/llada-worker-drain

RUN useradd --system --uid 10001 --gid 0 --create-home --home-dir /home/llada --shell /usr/sbin/nologin llada
USER 10001
ENV HOME=/home/llada \
    LLADA_WORKER_READY_FILE=/tmp/llada/worker.ready \
    LLADA_MODEL_PATH=/models/LLaDA2.0-Uni \
    LLADA_METRICS_HOST=0.0.0.0 \
    LLADA_WORKER_METRICS_PORT=9466
# The worker's metrics (job life, steps, the process) for Prometheus.
EXPOSE 9466

# Drain on SIGTERM: no new job; the running ones finish within LLADA_DRAIN_TIMEOUT_S or are handed back.
STOPSIGNAL SIGTERM
# Ready: Celery consumes and the model is loaded (the worker keeps LLADA_WORKER_READY_FILE fresh meanwhile and
# removes it when it drains). Local, not through the broker: a Redis hiccup does not make every worker unhealthy.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["llada-healthcheck", "worker"]

ENTRYPOINT ["tini", "--"]
CMD ["celery", "-A", "workers.celery_app", "worker", "--prefetch-multiplier=1", "--loglevel=INFO"]

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

# Only the CPU build of torch may go in. Its local version (+cpu) exists on PyTorch's CPU index, or in a wheel
# folder the build host's pip configuration names, and never on PyPI, whose torch is the CUDA build with ~2.7 GB
# of nvidia packages: the constraint makes pip fail rather than take that one, for torch here and while the
# project installs (torch's own dependencies come with the project, from the usual index).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
COPY docker/torch-cpu-constraints.txt /tmp/torch-cpu-constraints.txt
RUN pip install --no-deps --index-url "${TORCH_CPU_INDEX}" -c /tmp/torch-cpu-constraints.txt torch

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY workers ./workers
COPY client ./client
COPY server ./server
# The check stops a build that got a CUDA torch or nvidia packages all the same.
RUN pip install -c /tmp/torch-cpu-constraints.txt -e . \
    && python -c "import importlib.metadata as md, sys, torch; nv = sorted(n for n in (d.metadata['Name'] for d in md.distributions()) if n.lower().startswith('nvidia')); sys.exit(f'not the CPU torch: {torch.__version__}, CUDA {torch.version.cuda}, {nv}' if torch.version.cuda or nv else 0)"

COPY --chmod=0755 docker/worker-drain.sh /usr/local/bin/llada-worker-drain
COPY --chmod=0755 docker/worker-cpu-entrypoint.sh /usr/local/bin/llada-worker-cpu-entrypoint

RUN useradd --system --uid 10001 --gid 0 --create-home --home-dir /home/llada --shell /usr/sbin/nologin llada \
    && mkdir -p /models \
    && chown 10001:0 /models
USER 10001
ENV HOME=/home/llada \
    LLADA_WORKER_READY_FILE=/tmp/llada/worker.ready \
    LLADA_MODEL_PATH=/models/tiny \
    LLADA_METRICS_HOST=0.0.0.0 \
    LLADA_WORKER_METRICS_PORT=9466
# The worker's metrics (job life, steps, the process) for Prometheus.
EXPOSE 9466

STOPSIGNAL SIGTERM
# Ready: Celery consumes and the model is loaded (the worker keeps LLADA_WORKER_READY_FILE fresh meanwhile and
# removes it when it drains). Local, not through the broker: a Redis hiccup does not make every worker unhealthy.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["llada-healthcheck", "worker"]

ENTRYPOINT ["tini", "--", "llada-worker-cpu-entrypoint"]
CMD ["celery", "-A", "workers.celery_app", "worker", "--prefetch-multiplier=1", "--loglevel=INFO"]

# syntax=docker/dockerfile:1
# The gateway image: no torch. It also runs the migrations, the admin command, the reaper and the webhook
# dispatcher, none of which needs torch (build from the repository root:
# docker build -f docker/gateway.Dockerfile .).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the requirement list changes.
COPY docker/requirements-gateway.txt /tmp/requirements-gateway.txt
RUN pip install -r /tmp/requirements-gateway.txt

COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY workers ./workers
COPY client ./client
COPY server ./server
# --no-deps: pyproject's dependencies include torch, which this image must never contain. The install also
# puts the project's commands on PATH (llada, llada-healthcheck).
RUN pip install --no-deps -e . \
    && python -c "import importlib.util, sys; sys.exit('torch leaked into the gateway image' if importlib.util.find_spec('torch') else 0)"

RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin llada
USER 10001

# The reaper and the webhook dispatcher (run from this image) record each pass here for
# `llada-healthcheck reaper` and `llada-healthcheck webhooks`.
ENV LLADA_GRPC_LISTEN=0.0.0.0:50051 \
    LLADA_METRICS_PORT=9464 \
    LLADA_METRICS_HOST=0.0.0.0 \
    LLADA_HTTP_METRICS_PORT=9465 \
    LLADA_REAPER_METRICS_PORT=9467 \
    LLADA_WEBHOOK_METRICS_PORT=9468 \
    LLADA_REAPER_PASS_FILE=/tmp/llada/reaper.pass \
    LLADA_WEBHOOK_PASS_FILE=/tmp/llada/webhooks.pass
# The gateway's gRPC and metrics; the metrics of the HTTP front door, the reaper and the webhook dispatcher when
# this image runs them.
EXPOSE 50051 9464 9465 9467 9468

# The check of the process CMD starts, the gateway: gRPC health where LLADA_GRPC_LISTEN says it listens (TLS
# when configured). The reaper, the webhook dispatcher and the migrations run from this image too, each with its
# own check (or none): docker-compose.yml and k8s/ set them; `docker run` of another command should too
# (--health-cmd/--no-healthcheck).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["llada-healthcheck", "gateway"]

CMD ["python", "-m", "services.gateway"]

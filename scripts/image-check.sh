#!/usr/bin/env bash
# The image check: builds the three images with podman and runs them as a deployment would.
#
#   bash scripts/image-check.sh [--venv DIR] [--keep]
#
# 1. podman, runc and mmdebstrap (installed with apt-get when missing);
# 2. a stand-in for the Python base image, made from Debian bookworm packages (mmdebstrap minbase with
#    python3.11, pip, venv and the CA bundle) with this machine's pip configuration and CA bundle copied in,
#    and a stand-in for the CUDA PyTorch base (the same plus the CPU torch wheel); the local wheel folders and
#    file:// indexes the pip configuration names are mounted read-only into every build;
# 3. the gateway, worker-cpu and worker images built from docker/ unchanged (--format docker keeps HEALTHCHECK),
#    each checked: uid 10001, its own health check, no torch in the gateway, only the CPU torch in worker-cpu;
# 4. migrations, an API key, then the gateway, the reaper and a CPU worker on the host network, against this
#    machine's Postgres (a throwaway database) and Redis (an empty database number of its own) and a loopback
#    moto S3 server; each container's health check must pass;
# 5. one job of each kind through the SDK (scripts/image_check_jobs.py), the worker's and the reaper's metrics
#    scraped from their containers, then the worker is stopped during a job: the job must still succeed with
#    one attempt and the container exit 0;
# 6. each image's build time and size, and the total time.
# Everything it started or made is removed at the end, whatever happened (--keep keeps the images and the
# work folder). crun fails on this kind of machine ("cgroups in hybrid mode"): every container runs with runc,
# which needs explicit ulimits. About 10 minutes on 2 cores; exit status 0 only when every check held.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "image-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

STARTED=$(date +%s)
RUN_ID=llada-imgchk-$$
WORK=$(mktemp -d "/tmp/$RUN_ID.XXXX")
TAG=localhost/llada-image-check
# runc must be given the limits: podman's defaults (about a million open files and four million processes)
# are more than this kind of machine lets a container set, and runc then refuses to start it.
ULIMITS=(--ulimit nofile=16384:16384 --ulimit nproc=16384:16384)
PODMAN_RUN=(podman run --runtime runc --network host "${ULIMITS[@]}")
# Health checks run when this script asks (podman healthcheck run): no systemd here for podman's timers.
SERVICE=(-d --health-interval disable)
PG=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
DB=""
REDIS_DB=""
MOTO_PID=""
declare -A BUILD_S SIZE

say() { printf '\n[image-check %4ds] %s\n' "$(($(date +%s) - STARTED))" "$*"; }
fail() { echo "image-check: FAILED: $*" >&2; exit 1; }

cleanup() {
    local status=$?
    set +e
    say "cleaning up"
    for name in worker reaper gateway; do
        if [ "$status" -ne 0 ] && podman container exists "$RUN_ID-$name" 2>/dev/null; then
            echo "--- last lines of $RUN_ID-$name:"; podman logs --tail 25 "$RUN_ID-$name" 2>&1
        fi
        podman rm -f -t 0 "$RUN_ID-$name" >/dev/null 2>&1
    done
    [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
    [ -n "$DB" ] && "${PG[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    [ -n "$REDIS_DB" ] && redis-cli -h 127.0.0.1 -n "$REDIS_DB" flushdb >/dev/null
    if [ "$KEEP" -eq 0 ]; then
        podman rmi -f "$TAG/gateway" "$TAG/worker-cpu" "$TAG/worker" "$TAG/torch-base" "$TAG/python-base" >/dev/null 2>&1
        rm -rf "$WORK"
    else
        echo "kept: images $TAG/*, work folder $WORK"
    fi
    [ "$status" -eq 0 ] && echo "image-check: passed in $(($(date +%s) - STARTED)) s" || echo "image-check: FAILED (exit $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------- tools
say "tools"
missing=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail "${missing[*]} missing, and installing them needs root"
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || fail "apt-get install ${missing[*]}"
fi
for tool in psql redis-cli; do command -v "$tool" >/dev/null || fail "$tool is needed (Postgres and Redis clients)"; done
if [ -z "$VENV" ]; then
    bash "$ROOT/scripts/bootstrap.sh"
    VENV=$ROOT/.venv
fi
PY=$VENV/bin/python
[ -x "$PY" ] && [ -x "$VENV/bin/moto_server" ] || fail "$VENV has no python or moto_server (dev extras)"
"${PG[@]}" -c "SELECT 1" >/dev/null || fail "no Postgres on 127.0.0.1:5432 accepting user postgres"
[ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ] || fail "no Redis on 127.0.0.1:6379"
podman --version

# --------------------------------------------------------------------------------------- stand-in bases
# The folders this machine's pip configuration names (find-links, file:// indexes) are mounted read-only.
MOUNTS=()
for dir in $("$PY" -m pip config list 2>/dev/null | grep -Eo "(file://)?/[^' ]+" | sed 's#^file://##' | sort -u); do
    dir=${dir%/simple}; [ -d "$dir" ] && MOUNTS+=(-v "$dir:$dir:ro")
done
echo "pip folders mounted into the builds: ${MOUNTS[*]:-none}"
# The machine's CA bundle too: package registries may be reached through a proxy that this machine trusts.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA_BUNDLE" ] || CA_BUNDLE=""
PIP_FILES=()
for f in /etc/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt /root/.config/pip/pip.conf; do
    [ -f "$f" ] && PIP_FILES+=("$f")
done

say "stand-in Python base (mmdebstrap bookworm minbase)"
t0=$(date +%s)
# python:3.11-slim has `python` and `pip` on PATH and installs into the system interpreter: the same here.
mmdebstrap --quiet --variant=minbase \
    --include=python3.11,python3-pip,python3-venv,ca-certificates,passwd \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED "$1"/var/cache/apt/*.bin; rm -rf "$1"/var/lib/apt/lists/*' \
    --customize-hook="for f in ${PIP_FILES[*]} ${CA_BUNDLE}; do mkdir -p \"\$1\$(dirname \$f)\" && cp \$f \"\$1\$f\"; done" \
    bookworm "$WORK/python-base.tar" || fail "mmdebstrap could not make the stand-in base"
podman import --quiet --change 'CMD ["python3"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$WORK/python-base.tar" "$TAG/python-base" >/dev/null
rm -f "$WORK/python-base.tar"

say "stand-in CUDA PyTorch base (the Python one plus the CPU torch wheel)"
TORCH_PIN=$(sed -n 's/^torch==//p' "$ROOT/docker/torch-cpu-constraints.txt")
printf 'FROM %s\nRUN pip install --no-cache-dir "torch==%s"\n' "$TAG/python-base" "$TORCH_PIN" > "$WORK/torch-base.Containerfile"
podman build --quiet --layers=false --runtime runc --network host "${MOUNTS[@]}" -f "$WORK/torch-base.Containerfile" \
    -t "$TAG/torch-base" "$WORK" >/dev/null || fail "the stand-in torch base did not build"
BASES_S=$(($(date +%s) - t0))

# ------------------------------------------------------------------------------------------- images
build() {  # build NAME DOCKERFILE BUILD-ARG...
    local name=$1 dockerfile=$2 t0; shift 2
    say "building $name ($dockerfile)"
    t0=$(date +%s)
    # --layers=false: no intermediate images, so a build that fails half-way leaves nothing behind either.
    podman build --layers=false --format docker --runtime runc --network host "${ULIMITS[@]}" "${MOUNTS[@]}" "$@" \
        -f "$ROOT/$dockerfile" -t "$TAG/$name" "$ROOT" \
        > "$WORK/build-$name.log" 2>&1 || { tail -40 "$WORK/build-$name.log"; fail "$name did not build"; }
    BUILD_S[$name]=$(($(date +%s) - t0))
    SIZE[$name]=$(podman image inspect --format '{{.Size}}' "$TAG/$name")
}
build gateway docker/gateway.Dockerfile --build-arg "PYTHON_IMAGE=$TAG/python-base"
build worker-cpu docker/worker-cpu.Dockerfile --build-arg "PYTHON_IMAGE=$TAG/python-base"
build worker docker/worker.Dockerfile --build-arg "TORCH_IMAGE=$TAG/torch-base"

say "checking the images"
for name in gateway worker-cpu worker; do
    user=$(podman image inspect --format '{{.Config.User}}' "$TAG/$name")
    uid=$("${PODMAN_RUN[@]}" --rm --no-healthcheck --entrypoint id "$TAG/$name" -u)
    check=$(podman image inspect --format '{{join .Config.Healthcheck.Test " "}}' "$TAG/$name")
    role=$([ "$name" = gateway ] && echo gateway || echo worker)
    echo "  $name: USER $user, runs as uid $uid, HEALTHCHECK $check"
    [ "$user" = 10001 ] && [ "$uid" = 10001 ] || fail "$name does not run as uid 10001"
    [ "$check" = "CMD llada-healthcheck $role" ] || fail "$name's HEALTHCHECK is not its own role's ($role)"
done
"${PODMAN_RUN[@]}" --rm --no-healthcheck "$TAG/gateway" python -c "import torch" 2>/dev/null \
    && fail "the gateway image has torch"
cpu_torch=$("${PODMAN_RUN[@]}" --rm --no-healthcheck --entrypoint python "$TAG/worker-cpu" -c \
    "import importlib.metadata as md, torch; print(torch.__version__, torch.version.cuda, sum(d.metadata['Name'].lower().startswith('nvidia') for d in md.distributions()))")
echo "  worker-cpu torch: version, CUDA, nvidia packages = $cpu_torch"
[ "$cpu_torch" = "$TORCH_PIN None 0" ] || fail "worker-cpu holds another torch than $TORCH_PIN"

# ----------------------------------------------------------------------------------------- backends
say "backends: a database, a Redis database number, a moto S3 server"
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DB=${RUN_ID//-/_}
"${PG[@]}" -c "CREATE DATABASE $DB"
for n in $(seq 15 -1 1); do
    # SETNX claims an empty database number against a concurrent check; flushed at the end.
    if [ "$(redis-cli -h 127.0.0.1 -n "$n" dbsize)" = 0 ] \
        && [ "$(redis-cli -h 127.0.0.1 -n "$n" setnx llada-image-check "$RUN_ID")" = 1 ]; then
        REDIS_DB=$n; break
    fi
done
[ -n "$REDIS_DB" ] || fail "no empty Redis database number between 1 and 15"
S3_PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" > "$WORK/moto.log" 2>&1 &
MOTO_PID=$!
GRPC_PORT=$(free_port)
WORKER_METRICS_PORT=$(free_port)
REAPER_METRICS_PORT=$(free_port)
cat > "$WORK/llada.env" <<EOF
LLADA_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/$DB
LLADA_BROKER_URL=redis://127.0.0.1:6379/$REDIS_DB
LLADA_EVENT_BUS_URL=redis://127.0.0.1:6379/$REDIS_DB
LLADA_EVENT_CHANNEL_PREFIX=$RUN_ID:events:
LLADA_QUEUE_NAME=$RUN_ID
LLADA_OBJECT_STORE_URL=s3://llada
LLADA_S3_ENDPOINT=127.0.0.1:$S3_PORT
LLADA_S3_ACCESS_KEY=image-check
LLADA_S3_SECRET_KEY=image-check
LLADA_S3_SECURE=false
LLADA_GRPC_LISTEN=127.0.0.1:$GRPC_PORT
LLADA_METRICS_PORT=0
LLADA_WORKER_METRICS_PORT=$WORKER_METRICS_PORT
LLADA_REAPER_METRICS_PORT=$REAPER_METRICS_PORT
LLADA_EDIT_CROP_BASE=128
LLADA_DRAIN_TIMEOUT_S=60
EOF
echo "  database $DB, Redis database $REDIS_DB, S3 on 127.0.0.1:$S3_PORT, gRPC on 127.0.0.1:$GRPC_PORT"

# ------------------------------------------------------------------------------------------ services
say "migrations, an API key, gateway, reaper, CPU worker"
RUN_ENV=(--env-file "$WORK/llada.env")
"${PODMAN_RUN[@]}" --rm --no-healthcheck "${RUN_ENV[@]}" "$TAG/gateway" python -m shared.db upgrade \
    || fail "migrations"
API_KEY=$("${PODMAN_RUN[@]}" --rm --no-healthcheck "${RUN_ENV[@]}" "$TAG/gateway" \
    python -m services.gateway.admin create-key --tenant image-check | tail -1)
[ -n "$API_KEY" ] || fail "create-key printed no key"
start() {  # start NAME PODMAN-RUN-ARGUMENTS...: podman's complaints about systemd timers go to a log
    local name=$1; shift
    "${PODMAN_RUN[@]}" "${SERVICE[@]}" --name "$RUN_ID-$name" "${RUN_ENV[@]}" "$@" >/dev/null 2>>"$WORK/podman.log" \
        || { cat "$WORK/podman.log"; fail "$name did not start"; }
}
start gateway "$TAG/gateway"
# The reaper runs from the gateway image with its own check, not the image's (the gateway's).
start reaper --health-cmd '["llada-healthcheck", "reaper"]' "$TAG/gateway" python -m workers.reaper
start worker --shm-size 1g "$TAG/worker-cpu"

wait_healthy() {  # wait_healthy NAME SECONDS: runs the container's own health check until it passes
    local name=$RUN_ID-$1 deadline=$(($(date +%s) + $2)) line
    while true; do
        line=$(podman healthcheck run "$name" 2>&1) && { echo "  $1: healthy ${line}"; return 0; }
        [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || fail "$1 exited: $(podman logs --tail 20 "$name" 2>&1)"
        [ "$(date +%s)" -lt "$deadline" ] || fail "$1 not healthy within $2 s ($line)"
        sleep 2
    done
}
wait_healthy gateway 120
wait_healthy reaper 120
wait_healthy worker 600
for name in gateway reaper worker; do
    echo "  $name says: $(podman exec "$RUN_ID-$name" llada-healthcheck "$name")"
done

# ----------------------------------------------------------------------------------------------- jobs
say "one job of each kind through the SDK"
JOBS=(env PYTHONPATH="$ROOT" "$PY" "$ROOT/scripts/image_check_jobs.py")
"${JOBS[@]}" kinds --server "127.0.0.1:$GRPC_PORT" --api-key "$API_KEY" --output "$WORK/results" || fail "jobs"

say "the worker's and the reaper's metrics, served from their images"
scrape() {  # scrape PORT FAMILY: the endpoint answers and holds FAMILY
    "$PY" - "$1" "$2" <<'PYEOF' || fail "metrics on port $1 lack $2"
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
found = [line for line in text.splitlines() if line.startswith(sys.argv[2])]
print("  " + (found[0] if found else f"no {sys.argv[2]}"))
sys.exit(0 if found else 1)
PYEOF
}
scrape "$WORKER_METRICS_PORT" llada_jobs_finished_total
scrape "$REAPER_METRICS_PORT" llada_reaper_passes_total

say "stopping the worker during a job"
"${JOBS[@]}" stop-during-job --server "127.0.0.1:$GRPC_PORT" --api-key "$API_KEY" --container "$RUN_ID-worker" \
    || fail "stop during a job"

# -------------------------------------------------------------------------------------------- summary
say "summary"
printf '  %-12s %8s %10s\n' image "build s" "size MB"
printf '  %-12s %8s %10s\n' "(bases)" "$BASES_S" ""
for name in gateway worker-cpu worker; do
    printf '  %-12s %8s %10s\n' "$name" "${BUILD_S[$name]}" "$((SIZE[$name] / 1000000))"
done
echo "  every check held in $(($(date +%s) - STARTED)) s"

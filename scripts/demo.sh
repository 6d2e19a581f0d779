#!/usr/bin/env bash
# The demo: starts the embedded stack, submits a text-to-image, an understanding and an edit job over gRPC,
# writes the results to ./demo-output (or --output DIR) and stops the stack. Installs first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python scripts/demo.py "$@"

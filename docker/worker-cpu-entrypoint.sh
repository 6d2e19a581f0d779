#!/bin/sh
# Makes the tiny random checkpoint on first start (into the mounted /models volume), then runs the command.
set -eu
model_path="${LLADA_MODEL_PATH:-/models/tiny}"
if [ ! -f "$model_path/config.json" ]; then
    echo "making the tiny checkpoint in $model_path"
    python -m workers.model.tiny_checkpoint "$model_path"
fi
exec "$@"

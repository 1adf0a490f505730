#!/usr/bin/env bash
# Serve the offline dashboard (TensorBoard, HPARAMS tab included) on localhost.
# Usage: ./run_tensorboard.sh [--logdir data/logs] [--port 6006]
set -euo pipefail
logdir=data/logs
port=6006
while [ $# -gt 0 ]; do
  case "$1" in
    --logdir) logdir="${2:?--logdir needs a directory}"; shift 2 ;;
    --port) port="${2:?--port needs a number}"; shift 2 ;;
    *) echo "error: unknown option $1 (allowed: --logdir DIR, --port N)" >&2; exit 2 ;;
  esac
done
exec "$(dirname "$0")/util/with_venv.sh" tensorboard --logdir "$logdir" --host 127.0.0.1 \
  --port "$port"

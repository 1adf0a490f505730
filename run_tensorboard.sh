#!/usr/bin/env bash
# Serve the offline dashboard (TensorBoard, HPARAMS tab included) on localhost (127.0.0.1 only).
# Usage: ./run_tensorboard.sh [--logdir data/logs] [--port 6006]   (or --port=6006)
# A bad option is one line on stderr and exit code 2, before TensorBoard starts.
set -euo pipefail
logdir=data/logs
port=6006
usage="allowed: --logdir DIR, --port N"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help)
      sed -n '2,4p' "$0" | cut -c3-; exit 0 ;;
    --logdir=*|--port=*)  # --name=value, as run_sweep.sh takes it
      set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --logdir|--port)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "error: $1 needs a value ($usage)" >&2; exit 2
      fi
      if [ "$1" = --logdir ]; then logdir="$2"; else port="$2"; fi
      shift 2 ;;
    *) echo "error: unknown option $1 ($usage)" >&2; exit 2 ;;
  esac
done
if ! [[ "$port" =~ ^[1-9][0-9]*$ ]] || [ "$port" -gt 65535 ]; then
  echo "error: --port=$port is not a port number (1-65535)" >&2; exit 2
fi
# A port another program holds: one line and exit 2 here, not TensorBoard's traceback. Bound
# as TensorBoard's server binds (werkzeug's allow_reuse_address: SO_REUSEADDR), so that what
# a TensorBoard stopped a moment ago left (TIME-WAIT connections, no listener) passes here
# as it passes there; a socket listening on the port still refuses it.
if ! "$(dirname "$0")/util/with_venv.sh" python -c "
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('127.0.0.1', int(sys.argv[1])))
    except OSError as error:
        sys.exit(f'error: --port={sys.argv[1]} is taken on 127.0.0.1 ({error.strerror}): '
                 'choose another, e.g. --port 6007')
" "$port"; then
  exit 2
fi
if [ ! -d "$logdir" ]; then  # it may be made later (a sweep about to start): say so, serve anyway
  echo "note: --logdir $logdir does not exist (yet): the dashboard stays empty until runs" \
    "log there (./run_sweep.sh prints its sweep's folder)" >&2
fi
exec "$(dirname "$0")/util/with_venv.sh" tensorboard --logdir "$logdir" --host 127.0.0.1 \
  --port "$port"

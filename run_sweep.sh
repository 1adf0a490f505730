#!/usr/bin/env bash
# Start sweep agents on every GPU (or one on the CPU). Usage:
#   ./run_sweep.sh sweeps/quickstart.yaml      a new local sweep, no W&B server needed
#   ./run_sweep.sh <local-sweep-id>            more agents on an existing local sweep
#   ./run_sweep.sh <entity/project/sweep-id>   agents on a W&B sweep (after `wandb sweep`)
#   ./run_sweep.sh sweeps/x.yaml --dry-run     check the file, print what it runs, create nothing
# Options: --gpus 0,1 --agents-per-gpu N --agents N (CPU) --count N --project P --pack K|auto
#   --heartbeat S --heartbeat-timeout S; batch jobs: --pbs N or --slurm N (--help lists all)
exec "$(dirname "$0")/util/with_venv.sh" python -m agent.launch "$@"

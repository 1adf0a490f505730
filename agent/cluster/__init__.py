"""Agents as batch jobs on PBS Pro and SLURM clusters (`./run_sweep.sh SWEEP --pbs N`)."""

"""Agents as batch jobs on PBS Pro and SLURM clusters (`./run_sweep.sh SWEEP --pbs N`).

`submit` is the command-line side; `schedulers` holds PBS and SLURM as classes on one base
(options -> `jobs.JobSpec` -> script text -> submit command); `scripts` fills the bash
templates in templates/, shell-quoting every value.
"""

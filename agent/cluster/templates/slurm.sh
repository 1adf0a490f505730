{## A SLURM job array: each task runs agents in the submit directory (shared storage), on the
    sweep itself. Directive values are checked to need no quoting (`Scheduler.job_spec`):
    sbatch reads these lines itself, not through a shell. The same options go on sbatch's
    command line (`SLURM.options`): there SBATCH_* variables do not override them. ##}
#!/bin/bash
{% for option in sbatch_options %}
#SBATCH {{ option }}
{% endfor %}
# Written by: {{ command_line }}
# Submitted with the options above on sbatch's command line too, where they win over the
# shell's SBATCH_* variables (SBATCH_TIMELIMIT, SBATCH_PARTITION, ...): those override
# #SBATCH lines
# Submit again with: sbatch {{ sbatch_options }} {{ job_dir }}/slurm.sh

{% include "environment.sh" %}
cd {{ submit_dir }} || exit 1
{% if local_sweep %}
# A local sweep is one SQLite file: safe for the agents of one node only. Its directory
# records the node that works on it and the job holding that node (written whole, then
# linked into place: a task starting at the same moment never reads it half-written).
# A task on another node leaves while that job is queued or running (this array, or
# another submission on the same sweep); once it has ended, the task takes the sweep over.
sweep_dir={{ local_sweep }}
host="$(hostname)"
echo "$host ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-0}}" > "$sweep_dir/node.$$"
# The first task on the sweep: its record is in place, the name it was written under goes
# (left, it would be the same file as the record, which mv below refuses to move onto it)
if ln "$sweep_dir/node.$$" "$sweep_dir/node" 2>/dev/null; then rm -f "$sweep_dir/node.$$"; fi
read -r node holder < "$sweep_dir/node"
if [ "$node" != "$host" ]; then
  # Only squeue's word that the holder is gone frees the sweep: no squeue, no take-over.
  queued="$(squeue -h -j "$holder" -o %i 2>&1)"; asked=$?
  if { [ "$asked" = 0 ] && [ -z "$queued" ]; } || [[ "$queued" == *"Invalid job id"* ]]; then
    mv -f "$sweep_dir/node.$$" "$sweep_dir/node"
    sleep 1  # a task of another node taking over at the same moment: the last one wins
    read -r node holder < "$sweep_dir/node"
  fi
fi
if [ "$node" != "$host" ]; then
  rm -f "$sweep_dir/node.$$"
  echo "error: this local sweep runs on $node (job $holder); agents on other nodes need a W&B sweep" >&2
  exit 3
fi
# This node's latest job holds the sweep now (a later job on this node, after an earlier
# one ended, must not leave the record naming the ended one).
if [ -e "$sweep_dir/node.$$" ]; then mv -f "$sweep_dir/node.$$" "$sweep_dir/node"; fi
{% endif %}
{% if container and local_sweep %}
{% set bind_vars = ["code_dir", "PWD", "sweep_dir"] %}
{% else %}
{% set bind_vars = ["code_dir", "PWD"] %}
{% endif %}
{% set code_var = "code_dir" %}
{% include "agents.sh" %}

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
# records the node that works on it and every job of that node holding it (this array, and
# another submission on the same sweep landing there). A task on another node leaves while
# any of those jobs is queued or running; once all have ended, the task takes the sweep over.
sweep_dir={{ local_sweep }}
host="$(hostname)"
job="${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-0}}"
# squeue's word that job $1 has ended; only that frees the sweep (no squeue: it holds it)
gone() {
  local queued asked
  queued="$(squeue -h -j "$1" -o %i 2>&1)"; asked=$?
  { [ "$asked" = 0 ] && [ -z "$queued" ]; } || [[ "$queued" == *"Invalid job id"* ]]
}
# The record is read and rewritten under a lock, so that two jobs starting at once on this
# node both stay in it (a record naming only the latest let a task elsewhere take the sweep
# over once that one ended, while the other still ran); written whole, then moved into
# place, so that no reader sees it half-written. Prints: mine, took (the record was another
# node's, whose jobs have ended) or the node and jobs holding it.
held="$(
  (
    flock 9 2>/dev/null  # no flock, or none on this file system: unlocked, as a rename is
    if [ ! -e "$sweep_dir/node" ]; then
      # The first task on the sweep: a link is made only where no record is, so a task of
      # another node starting at the same moment (where no lock reaches) reads the one made
      echo "$host $job" > "$sweep_dir/node.$$"
      if ln "$sweep_dir/node.$$" "$sweep_dir/node" 2>/dev/null; then
        rm -f "$sweep_dir/node.$$"
        echo mine
        exit
      fi
      rm -f "$sweep_dir/node.$$"
    fi
    record=()
    if [ -e "$sweep_dir/node" ]; then read -r -a record < "$sweep_dir/node"; fi
    node="${record[0]-}" alive=""
    for holder in "${record[@]:1}"; do
      # this job is added again below, on its own node; on another, its other tasks hold it
      if { [ "$holder" != "$job" ] || [ "$node" != "$host" ]; } && ! gone "$holder"; then
        alive="$alive $holder"
      fi
    done
    if [ "$node" != "$host" ] && [ -n "$alive" ]; then echo "$node$alive"; exit; fi
    [ "$node" = "$host" ] || alive=""
    echo "$host$alive $job" > "$sweep_dir/node.$$" && mv -f "$sweep_dir/node.$$" "$sweep_dir/node"
    if [ "$node" = "$host" ]; then echo mine; else echo took; fi
  ) 9>>"$sweep_dir/.node.lock"
)"
if [ "$held" = took ]; then
  sleep 1  # a task of another node taking over at the same moment: the last one wins
  held="$(cat "$sweep_dir/node")"
  [ "${held%% *}" != "$host" ] || held=mine
fi
if [ "$held" != mine ]; then
  read -r node holders <<< "$held"
  word=job; [ "${holders// /}" = "$holders" ] || word="jobs"
  echo "error: this local sweep runs on $node ($word $holders); agents on other nodes need a W&B sweep" >&2
  exit 3
fi
{% endif %}
{% if container and local_sweep %}
{% set bind_vars = ["code_dir", "PWD", "sweep_dir"] %}
{% else %}
{% set bind_vars = ["code_dir", "PWD"] %}
{% endif %}
{% set code_var = "code_dir" %}
{% include "agents.sh" %}

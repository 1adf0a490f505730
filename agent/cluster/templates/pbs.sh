{## One PBS Pro job: agents in $SCRATCHDIR (MetaCentrum's scratch_local), else in the job's
    $TMPDIR (PBS Pro's, made for each job), on a copy of the code (and of a local sweep);
    logs, offline runs, dataset cache and sweep store copied back on exit. Directive values are
    checked to need no quoting (`Scheduler.job_spec`): qsub reads these lines itself. ##}
#!/bin/bash
#PBS -N {{ name }}
{% if queue %}
#PBS -q {{ queue }}
{% endif %}
{% if account %}
#PBS -A {{ account }}
{% endif %}
#PBS -l select=1:ncpus={{ cpus }}{% if gpus %}:ngpus={{ gpus }}{% endif %}:mem={{ mem }}{% if scratch %}:scratch_local={{ scratch }}{% endif +%}
#PBS -l walltime={{ walltime }}
#PBS -j oe
#PBS -o {{ job_dir }}/pbs-{{ index }}.out
# Job {{ index }} of {{ jobs }}, written by: {{ command_line }}
# Submit again with: qsub {{ job_dir }}/pbs-{{ index }}.sh

{% include "environment.sh" %}
# The directory this script was written for, not PBS_O_WORKDIR (where qsub ran): a script
# resubmitted by hand from elsewhere (`qsub <its path>`) works on the same sweep, checkpoints
# and logs
submit_dir={{ submit_dir }}
# MetaCentrum's scratch (scratch_local), else the directory PBS Pro makes for each job and
# removes after it (--scratch none asks for no scratch_local, which other sites do not know)
scratch="${SCRATCHDIR:-${TMPDIR:-}}"
[ -n "$scratch" ] || { echo "error: neither \$SCRATCHDIR nor \$TMPDIR is set: ask for scratch (--scratch 20gb: scratch_local in -l select), or run where PBS sets TMPDIR for each job" >&2; exit 2; }
# A folder of this job's own: $TMPDIR may be one folder for every job on the node (/tmp),
# where a fixed name let two jobs work in, and remove, the same folder
job_name="${PBS_JOBID:-$$}"
work="$scratch/sweep-job-${job_name//[^A-Za-z0-9._-]/_}"
{% if local_sweep %}
sweep_dir={{ local_sweep }}
sweep_copy="$work/data/sweeps/"{{ local_sweep.name }}
{% endif %}
copied_in=0
{% if local_sweep %}

# The sweep store's copy in scratch: taken, and merged back (agent/cluster/store_copy.py).
# A command, not a function: `$!` of it in the background is the merging process itself.
{% if container %}
store_copy=("$apptainer" exec --bind "$work,$submit_dir,$sweep_dir" --pwd "$work" --env PYTHONPATH="$work" {{ container }} {{ image_python }} -m agent.cluster.store_copy)
{% else %}
store_copy=(env PYTHONPATH="$work" {{ python }} -m agent.cluster.store_copy)
{% endif %}
{% endif %}

# shellcheck disable=SC2329  # called by the EXIT trap below
copy_back() {
  # Results go back to the submit directory; scratch is emptied only when they did.
  local failed=0
  cd / || true  # out of $work before it is removed
  rm -f "$work/data/runs"  # the link to the shared checkpoints, not the checkpoints
{% if local_sweep %}
  if [ "$copied_in" = 1 ]; then
    # The store first, within the scheduler's grace before SIGKILL (PBS's kill_delay,
    # 10 s): the job's ended runs merged into the sweep's store, in well under a second.
    kill "$merger" 2>/dev/null; wait "$merger" 2>/dev/null
    if "${store_copy[@]}" merge "$sweep_copy/sweep.db" "$work/sweep-base.db" "$sweep_dir/sweep.db"; then
      rm -rf "$work/data/sweeps"
    else
      failed=1
    fi
  fi
{% endif %}
  if [ "$copied_in" = 1 ]; then
    # -u: only what is new or changed (logs, offline runs, a new dataset cache); the
    # sweep's store goes back by merging only: a copy of the job's store over it would drop
    # what other jobs merged (left in scratch when its merge failed)
    for entry in "$work/data"/* "$work/data"/.[!.]*; do
      [ -e "$entry" ] && [ "$entry" != "$work/data/sweeps" ] || continue
      cp -a -u "$entry" "$submit_dir/data/" || failed=1
    done
    if [ -d "$work/wandb" ]; then
      mkdir -p "$submit_dir/wandb" &&
        cp -a -u "$work/wandb/." "$submit_dir/wandb/" || failed=1
    fi
  fi
  if [ "$failed" = 0 ]; then rm -rf "$work"
  else echo "error: copying results back failed; they are in $(hostname):$work" >&2; fi
}
trap copy_back EXIT

mkdir -p "$work/data" "$submit_dir/data/runs" || exit 1
# The code, without environments and results
tar -C "$code_dir"{% for path in not_code %} --exclude={{ path }}{% endfor %} -cf - . | tar -C "$work" -xf - || exit 1
# Datasets and their decoded cache (read by every trial)
if [ -d "$submit_dir/data" ]; then
  tar -C "$submit_dir/data"{% for path in not_input_data %} --exclude=./{{ path }}{% endfor %} -cf - . | tar -C "$work/data" -xf - || exit 1
fi
# Checkpoints stay on shared storage: a preempted run's checkpoint must be there for
# the next job, and one write per epoch is light.
ln -s "$submit_dir/data/runs" "$work/data/runs"
{% if local_sweep %}
# The store as one consistent snapshot (SQLite's backup), and again as what the job
# started from, once no other job works on the sweep (a job queued behind another waits);
# the runs the job ends are merged back every {{ merge_every_s }} s and at its end.
mkdir -p "$sweep_copy" &&
  "${store_copy[@]}" take --job "${PBS_JOBID:-}" "$sweep_dir/sweep.db" "$sweep_copy/sweep.db" "$work/sweep-base.db" || exit 1
"${store_copy[@]}" merge --every {{ merge_every_s }} "$sweep_copy/sweep.db" "$work/sweep-base.db" "$sweep_dir/sweep.db" &
merger=$!
{% endif %}
copied_in=1

cd "$work" || exit 1
{% set code_var = "work" %}
{% set bind_vars = ["work", "submit_dir"] %}
{% include "agents.sh" %}

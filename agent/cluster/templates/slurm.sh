{## A SLURM job array: each task runs agents in the submit directory (shared storage), on the
    sweep itself. Directive values are checked to need no quoting (`Scheduler.job_spec`):
    sbatch reads these lines itself, not through a shell. ##}
#!/bin/bash
#SBATCH --job-name={{ name }}
#SBATCH --array=0-{{ jobs - 1 }}
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{ cpus }}
#SBATCH --mem={{ mem_mb }}M
#SBATCH --time={{ time }}
{% if gpus %}
#SBATCH --gres=gpu:{{ gpus }}
{% endif %}
{% if scratch_mb %}
#SBATCH --tmp={{ scratch_mb }}M
{% endif %}
{% if queue %}
#SBATCH --partition={{ queue }}
{% endif %}
#SBATCH --output={{ job_dir }}/slurm-%A_%a.out
#SBATCH --chdir={{ submit_dir }}
# Written by: {{ command_line }}
# Submit again with: sbatch {{ job_dir }}/slurm.sh

{% include "environment.sh" %}
cd {{ submit_dir }} || exit 1
{% if local_sweep and jobs > 1 %}
# A local sweep is one SQLite file: safe for the agents of one node only. The
# first task records its node (written whole, then linked into place: a task
# starting at the same moment never reads it half-written); a task on another
# node leaves.
job_dir={{ job_dir }}
hostname > "$job_dir/node.$$"
ln "$job_dir/node.$$" "$job_dir/node" 2>/dev/null
rm -f "$job_dir/node.$$"
if [ "$(cat "$job_dir/node")" != "$(hostname)" ]; then
  echo "error: this local sweep runs on $(cat "$job_dir/node"); agents on other nodes need a W&B sweep" >&2
  exit 3
fi
{% endif %}
{% if container and local_sweep %}
sweep_dir={{ local_sweep }}
{% set bind_vars = ["code_dir", "PWD", "sweep_dir"] %}
{% else %}
{% set bind_vars = ["code_dir", "PWD"] %}
{% endif %}
{% set code_var = "code_dir" %}
{% include "agents.sh" %}

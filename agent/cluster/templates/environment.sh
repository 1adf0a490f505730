{## The start of every job script, after the directives: the user's set-up lines (--setup),
    shell settings, where the code is, the W&B settings of the submitting shell, and
    (container) the apptainer binary. ##}
{% if setup is not none %}
{## First, before any command of ours: #PBS/#SBATCH lines at its top are still directives
    (only comments come before them), and `set -u` does not apply to scripts written without
    it (`module` of some sites reads unset variables) ##}
# ---- --setup {{ setup_path }}, as it was at submission ----
{{ setup | verbatim }}
# ---- end of --setup ----
{% endif %}
set -uo pipefail
trap 'exit 143' TERM INT  # until the agents run

code_dir={{ code_dir }}
{% for name, value in settings.items() %}
{## `{{-` keeps `${NAME+set}` together: the job's own environment wins ##}
[ -n "${ {{- name }}+set}" ] || export {{ name }}={{ value }}
{% endfor %}
# The launcher's closing hint to go on submits again the same way: the agents' options of
# its command line below (--agents, --agents-per-gpu, --pack, --project, --heartbeat...),
# then these
export SWEEP_JOB_OPTIONS={{ job_options }}
{% if not gpus %}
export CUDA_VISIBLE_DEVICES=""  # a CPU job: leave the node's GPUs alone
{% endif %}
{% if container %}
apptainer="$(command -v apptainer || command -v singularity)" || { echo "error: neither apptainer nor singularity on this node" >&2; exit 2; }
{% endif %}

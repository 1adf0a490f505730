{## The agents of every job script. The including template sets `code_var` (the shell
    variable holding the code's directory) and `bind_vars` (the shell variables naming the
    directories a container must see). ##}
# In the background, so that this shell passes SIGTERM (the scheduler's walltime or
# qdel/scancel) on at once; a foreground child would hold the trap until it ended.
# `timeout` stops the agents {{ margin_s }} s before the walltime so that the results are
# safe before the scheduler's own SIGTERM and SIGKILL. Either way the current run
# ends `preempted` with its checkpoint, and the next agent resumes it.
# The walltime runs from the job's start ($SECONDS: this shell's age), not from here:
# what the job did before (copying the code and data into scratch, setting up) took some of it.
stop_after=$(( {{ stop_after_s }} - SECONDS ))
[ "$stop_after" -gt 0 ] || stop_after=1
{% if container %}
{## --nv: the host's NVIDIA driver inside the image ##}
timeout --signal=TERM "$stop_after" "$apptainer" exec {% if gpus %}--nv {% endif %}--bind {% for var in bind_vars %}"${{ var }}"{% if not loop.last %},{% endif %}{% endfor %} --pwd "$PWD" --env PYTHONPATH="${{ code_var }}" {{ container }} {{ image_python }} {{ launch }} &
{% else %}
{## the venv's bin first on the PATH, as util/with_venv.sh puts it: a sweep's own program
    then finds its `python` (agent/sweep/program.py caller_environment) on a node whose
    PATH has none, or one without wandb ##}
timeout --signal=TERM "$stop_after" env PYTHONPATH="${{ code_var }}" PATH={{ python_bin }}:"$PATH" {{ python }} {{ launch }} &
{% endif %}
agents=$!
trap 'kill -TERM "$agents" 2>/dev/null' TERM INT
while :; do
  wait "$agents"; status=$?
  kill -0 "$agents" 2>/dev/null || break  # a signal cut the wait short: wait again
done
trap - TERM INT
if [ "$status" = 124 ]; then
  echo "agents stopped {{ margin_s }} s before the walltime; the next job resumes the preempted run" >&2
  status=0
fi
exit "$status"

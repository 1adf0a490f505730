{## The agents of every job script. The including template sets `code_var` (the shell
    variable holding the code's directory) and `bind_vars` (the shell variables naming the
    directories a container must see). ##}
# In the background, so that this shell passes SIGTERM (the scheduler's walltime or
# qdel/scancel) on at once; a foreground child would hold the trap until it ended.
# `timeout` stops the agents {{ margin_s }} s before the walltime so that the results are
# safe before the scheduler's own SIGTERM and SIGKILL. Either way the current run
# ends `preempted` with its checkpoint, and the next agent resumes it.
{% if container %}
{## --nv: the host's NVIDIA driver inside the image ##}
timeout --signal=TERM {{ stop_after_s }} "$apptainer" exec {% if gpus %}--nv {% endif %}--bind {% for var in bind_vars %}"${{ var }}"{% if not loop.last %},{% endif %}{% endfor %} --pwd "$PWD" --env PYTHONPATH="${{ code_var }}" {{ container }} {{ image_python }} {{ launch }} &
{% else %}
timeout --signal=TERM {{ stop_after_s }} env PYTHONPATH="${{ code_var }}" {{ python }} {{ launch }} &
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

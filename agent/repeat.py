"""`python -m agent.repeat <sweep> --top 2 --by model --seeds 5 [--run]`: repeat sweeps of the
best runs, for means and confidence intervals in the study report (agent/report/repeat.py)."""

from agent.report.repeat import main
from util.errors import exit_command

if __name__ == "__main__":
    exit_command(main)  # after a Ctrl-C of --run: killed by SIGINT, its closing lines out

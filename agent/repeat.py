"""`python -m agent.repeat <sweep> --top 2 --by model --seeds 5 [--run]`: repeat sweeps of the
best runs, for means and confidence intervals in the study report (agent/report/repeat.py)."""

from agent.report.repeat import main
from util.errors import exit_on_user_error

if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))

"""`python -m agent.report <sweep>`: write the study report (agent/report/document.py)."""

from agent.report.document import main
from util.errors import exit_on_user_error

raise SystemExit(exit_on_user_error(main))

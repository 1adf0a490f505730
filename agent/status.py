"""`python -m agent.status <local-sweep>`: a local sweep's runs by state, the best so far, ETAs;
without a sweep, every local sweep, newest first."""

from agent.sweep.status import main
from util.errors import exit_on_user_error

if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))

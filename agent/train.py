"""`python -m agent.train --key=value ...`: run one trial from the command line.

Accepts exactly what `wandb agent` passes as ${args} (`--lr=0.05 --augment=True`), plus
`--config run.yaml` and `--help`. Bad input: one line, exit code 2, nothing loaded or written.
"""

from __future__ import annotations

import signal
import sys

from util.errors import exit_on_user_error
from agent.params import help_table, parse_args, validate

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a terminated job

USAGE = """usage: python -m agent.train [--config FILE] [--PARAMETER=VALUE ...]

Train one configuration and report it to the sinks chosen by --sinks. Booleans take
True/False/true/false; lists take [a, b] or a,b. --config reads a YAML mapping of
parameter: value that the command line overrides. A run started again with the same
--run_id resumes from its last checkpoint.

parameters:
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE + help_table())
        return 0
    config = validate(parse_args(argv))

    from agent.trial.loop import Preempted, TrialHooks, train

    terminated = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    try:
        train(config, TrialHooks(interrupted=lambda: bool(terminated)))
    except Preempted as stop:
        print(f"preempted: {stop}; run it again with the same --run_id to resume",
              file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))

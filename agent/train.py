"""`python -m agent.train ...` or `python agent/train.py ...`: run one trial from the command line.

Accepts what every `wandb agent` command macro produces (agent.params.parse_args), plus
`--config run.yaml` and `--help`. Started by `wandb agent`, the run's parameter file completes
the arguments as wandb.config would. Bad input: one line, exit code 2, nothing written.
"""

from __future__ import annotations

import os
import signal
import sys

if __name__ == "__main__" and not __package__:
    # `python agent/train.py` (W&B's default command for `program: agent/train.py`) puts agent/
    # first on sys.path, where its modules shadow top-level ones: import from the repository.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

from agent.params import RunConfig, help_table, parse_args, validate  # noqa: E402
from util.errors import (  # noqa: E402
    INTERRUPTED_EXIT_CODE,
    UserError,
    exit_command,
    stop_at_next_step,
    storage_problem,
)

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a terminated job

USAGE = """usage: python -m agent.train [--config FILE] [--PARAMETER=VALUE ...]

Train one configuration and report it to the sinks chosen by --sinks. Takes every form
`wandb agent` passes: --key=value, --key value, key=value, +key=value, ++key=value, a bare
--flag for a true boolean, a JSON object, or the path of a JSON file. Booleans take
True/False/true/false; lists take [a, b] or a,b; None means the default. --config reads a
YAML mapping of parameter: value that the command line overrides. A run started again with
the same --run_id resumes from its last checkpoint.

parameters:
"""


def run_config(argv: list[str], environ: dict | None = None) -> RunConfig:
    """The validated config of this trial: the arguments, completed under `wandb agent` by the
    run's parameter file (the values wandb.config holds), with the wandb sink on."""
    from agent.sweep.wandb_agent import agent_run_values, with_wandb_sink

    from_agent = agent_run_values(environ)  # {} unless W&B's agent started this run
    config = validate({**parse_args(argv), **from_agent})
    return with_wandb_sink(config) if from_agent else config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE + help_table())
        return 0
    config = run_config(argv)

    from agent.trial.loop import Preempted, TrialHooks, train

    # SIGTERM (a scheduler, W&B's agent stopping a run) or Ctrl-C: preempted at the next
    # step (a Ctrl-C raised KeyboardInterrupt mid-step: the run ended failed, with a
    # traceback); a second Ctrl-C ends the process at once, its start-up not waited out
    signalled: list[int] = []
    stop_at_next_step(signalled)
    try:
        train(config, TrialHooks(interrupted=lambda: bool(signalled)))
    except Preempted as stop:
        print(f"preempted: {stop}{what_is_left(stop.summary)}", file=sys.stderr)
        # after a Ctrl-C, killed by SIGINT (exit_command): `train && next` goes no further
        return INTERRUPTED_EXIT_CODE if signal.SIGINT in signalled else PREEMPTED_EXIT_CODE
    except OSError as error:
        problem = storage_problem(error)  # a full or read-only disk: one line, not a bug
        if problem is None:
            raise
        raise UserError(f"{problem}; the last whole epoch's checkpoint stands: run it again "
                        "with the same --run_id to resume") from None
    return 0


def what_is_left(summary: dict) -> str:
    """What a preempted run has to resume from, for the end of its line: its checkpoint, or
    nothing (its first epoch; its folder deleted while it trained; checkpoint: false), when
    running it again starts it over."""
    if summary.get("no_checkpoint"):
        return (f", but no checkpoint of it is kept ({summary['no_checkpoint']}): run again "
                "with the same --run_id, it starts over from scratch")
    if not summary.get("epochs_done"):
        return (", before its first checkpoint: run again with the same --run_id, it starts "
                "over from scratch")
    return "; run it again with the same --run_id to resume"


if __name__ == "__main__":
    exit_command(main)  # after a Ctrl-C: killed by SIGINT, its closing line out

"""`python -m agent.report`'s command line, parsed and checked without the report's own
modules: a mistyped option is answered in a fraction of a second, not after torch and
matplotlib load (about 4 s on two idle cores, three times that under load)."""

from __future__ import annotations

import argparse
import math

from agent.params import TEXT_KINDS
from util.errors import CommandParser, UserError, brief

DESCRIPTION = "turn a sweep into the study a course or a paper asks for"
# The run groups' rule (stats.GroupRule) takes its defaults from here.
EXPLODE_FACTOR = 10.0
STUCK_MARGIN = 0.05


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    """The report's options, checked (UserError, one line; a usage error exits 2)."""
    parser = CommandParser(prog="python -m agent.report", description=DESCRIPTION)
    parser.add_argument("sweep", help="local sweep id or directory, or entity/project/sweep_id")
    parser.add_argument("--out", default="reports", help="reports go to OUT/<sweep id>/")
    parser.add_argument("--explode-factor", type=float, default=EXPLODE_FACTOR,
                        help="diverged: a final loss above this many times ln(classes), "
                        "its last accuracy at chance")
    parser.add_argument("--stuck-margin", type=float, default=STUCK_MARGIN,
                        help="stuck: best validation accuracy below 1/classes + this")
    args = parser.parse_args(argv)
    if not 1 < args.explode_factor < math.inf or not 0 <= args.stuck_margin < 1:
        raise UserError(f"--explode-factor={args.explode_factor} and --stuck-margin="
                        f"{args.stuck_margin}: expected a finite factor > 1 and a margin in [0, 1)")
    allowed, is_path = TEXT_KINDS["path"]
    if not is_path(args.out):
        raise UserError(f"--out={brief(args.out)}: expected {allowed}")
    return args

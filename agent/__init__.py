"""Sweep agents for image-classifier studies.

The flow, one sub-package per arrow (docs/architecture.md has the picture):
sweep YAML -> `sweep/` (checks, store, controller, agent loop) -> `trial/` (one training run,
its sinks) -> `report/` (the study). `cluster/` writes PBS and SLURM jobs. The modules at this
level are the commands (`train`, `launch`, `status`, `repeat`) and what every layer shares
without importing torch: the parameter table (`params`), the metric catalogue (`metrics`),
ids (`ids`), YAML reading (`yaml_file`) and what a sweep file searches over (`sweep_space`).
"""

import sys


def _quiet_interrupt(kind, value, traceback, _default=sys.excepthook):
    """Ctrl-C before a command has set up its own handling (while its modules load, in its
    first second or two) ends it with one word, not a traceback of the imports."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return
    _default(kind, value, traceback)


sys.excepthook = _quiet_interrupt

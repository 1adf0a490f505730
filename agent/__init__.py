"""Sweep agents for image-classifier studies.

The flow, one sub-package per arrow (docs/architecture.md has the picture):
sweep YAML -> `sweep/` (checks, store, controller, agent loop) -> `trial/` (one training run,
its sinks) -> `report/` (the study). `cluster/` writes PBS and SLURM jobs. The modules at this
level are the commands (`train`, `launch`, `status`, `repeat`) and what every layer shares
without importing torch: the parameter table (`params`), the metric catalogue (`metrics`),
ids (`ids`), YAML reading (`yaml_file`) and what a sweep file searches over (`sweep_space`).
"""

import sys

from util.errors import quiet_interrupt

sys.excepthook = quiet_interrupt

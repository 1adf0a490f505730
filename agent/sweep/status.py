"""`python -m agent.status <sweep>`: a local sweep's runs by state, the best so far, and the
running runs with their epoch and an ETA."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.params import BY_NAME
from agent.sweep.store import STATES, Run, SweepStore
from agent.sweep.target import open_store
from util.errors import CommandParser


@dataclass(frozen=True)
class BestRun:
    run: Run
    metric: str  # the sweep's metric name
    value: float


def best_run(store: SweepStore) -> BestRun | None:
    """The best finished or stopped run by the sweep's metric and goal."""
    metric = store.sweep().config.get("metric", {})
    name, goal = metric.get("name", "val/acc"), metric.get("goal", "maximize")
    scored = []
    for run in store.runs():
        value = (run.summary or {}).get(name)
        if run.state in ("finished", "stopped") and isinstance(value, (int, float)):
            scored.append((value, run))
    if not scored:
        return None
    value, run = (max if goal == "maximize" else min)(scored, key=lambda pair: pair[0])
    return BestRun(run, name, value)


def render_status(store: SweepStore, console: Console | None = None) -> None:
    console = console or Console()
    sweep = store.sweep()
    runs = store.runs()
    counts = Counter(run.state for run in runs)
    # names and values are the user's text: escaped, so that "[/x]" is shown, not parsed
    console.print(f"[bold]sweep {sweep.id}[/] ({escape(sweep.name)}, "
                  f"{escape(str(sweep.config.get('method')))}): "
                  + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    best = best_run(store)
    if best:
        console.print(f"best so far: {best.run.id} {escape(best.metric)}={best.value:.4f}")
    # Only what the sweep varies is worth a column; the fixed values are in the YAML.
    varying = [name for name, spec in sweep.config.get("parameters", {}).items()
               if "value" not in spec]
    show = lambda v: f"{v:.4g}" if isinstance(v, float) else escape(str(v))  # noqa: E731
    table = Table("run", "state", "epoch", "val/acc", "test/acc", "ETA",
                  *(escape(str(name)) for name in varying))
    def epochs_of(run: Run) -> int | None:  # another program's `epochs` may be anything
        epochs = run.config.get("epochs", BY_NAME["epochs"].default)
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    for run in runs:
        summary = run.summary or {}
        last = run.history[-1] if run.history else {}
        eta = ""
        if run.state == "running" and run.epoch and epochs_of(run):
            per_epoch = (time.time() - run.started) / run.epoch
            eta = f"{per_epoch * (epochs_of(run) - run.epoch):.0f}s"
        val = summary.get("val/acc", last.get("val/acc"))
        test = summary.get("test/acc")
        table.add_row(run.id, run.state, f"{run.epoch}/{epochs_of(run) or '?'}",
                      f"{val:.4f}" if isinstance(val, float) else "",
                      f"{test:.4f}" if isinstance(test, float) else "", eta,
                      *(show(run.config.get(name, "")) for name in varying))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m agent.status", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="local sweep id or directory")
    render_status(open_store(parser.parse_args(argv).sweep))
    return 0


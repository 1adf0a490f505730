"""Run-directory sink: a run's summary.json and confusion.json beside its checkpoint.

Always on (the report reads confusion.json of the best run, and a run's directory should say
how it ended without a database). Files are replaced atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.trial.sinks import RunInfo, Sink
from util.errors import naming


class RunDirSink(Sink):
    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        self.run_dir = Path(run.run_dir)

    def log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        write_json(self.run_dir / "confusion.json",
                   {"classes": list(classes), "matrix": matrix.tolist()})

    def finish(self, summary: dict, state: str) -> None:
        if summary and state in ("finished", "stopped", "diverged"):
            write_json(self.run_dir / "summary.json", summary)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    try:
        with naming(partial):
            partial.write_text(json.dumps(payload, indent=1, default=float))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)  # a full disk leaves no partial file behind

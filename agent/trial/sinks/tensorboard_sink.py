"""TensorBoard sink: scalars, histograms, a confusion image, and hparams for the HPARAMS tab.

The hparams summaries go into the run's own event file (not a sub-run, as add_hparams does), so
HPARAMS lists the run itself and reads its final metrics from the same scalar tags the
SCALARS tab shows.
"""

from __future__ import annotations

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from agent import metrics
from agent.trial.sinks import RunInfo, Sink

# The metrics HPARAMS shows as columns; each is a scalar tag written during or at the end of
# the run.
HPARAM_METRICS = metrics.names(hparams=True)


class TensorBoardSink(Sink):
    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        self.writer = SummaryWriter(log_dir=run.log_dir)
        experiment, session_start, self._session_end = hparams_summaries(
            hparams, {name: 0.0 for name in HPARAM_METRICS})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        self.writer.flush()

    def log_step(self, step: int, metrics: dict) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, step)
        for name, values in histograms.items():
            self.writer.add_histogram(name, values, step)
        self.writer.flush()

    def log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        self.writer.add_image("test/confusion_matrix", confusion_image(matrix), step,
                              dataformats="CHW")
        header = "| true \\ predicted | " + " | ".join(classes) + " |"
        rule = "|---" * (len(classes) + 1) + "|"
        rows = [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
                for name, row in zip(classes, matrix.tolist())]
        self.writer.add_text("test/confusion_matrix", "\n".join([header, rule, *rows]), step)

    def finish(self, summary: dict, state: str) -> None:
        step = summary.get("global_step", 0)
        for name in metrics.names(when=metrics.END, hparams=True):
            if summary.get(name) is not None:
                self.writer.add_scalar(name, float(summary[name]), step)
        self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()


def confusion_image(matrix: torch.Tensor, cell: int | None = None) -> torch.Tensor:
    """A white-to-blue heat map of row-normalised counts, as a uint8 (3, H, W) image."""
    k = matrix.shape[0]
    cell = cell or max(2, 256 // k)
    rates = matrix.float() / matrix.sum(1, keepdim=True).clamp_min(1)
    image = torch.stack([1 - 0.9 * rates, 1 - 0.6 * rates, torch.ones_like(rates)])
    image = image.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return (image * 255).round().to(torch.uint8)

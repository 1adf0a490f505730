"""Console sink: a rich progress bar per epoch with live loss, accuracy and throughput, one
line per finished epoch, and a closing summary table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent import metrics
from agent.trial.sinks import RunInfo, Sink

SUMMARY_ROWS = metrics.names(summary=True)


class ConsoleSink(Sink):
    bar_owner: ConsoleSink | None = None  # the sink whose progress bar is live, if any

    def __init__(self):
        self.console = Console()
        self.progress = None

    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        self.epochs = config["epochs"]
        self.progress = None
        resumed = f", resumed after epoch {run.resumed_epoch}" if run.resumed_epoch else ""
        self.console.print(
            f"[bold]run {escape(run.name)}[/] ({config['model']}, {config['optimizer']}, "
            f"lr={config['lr']:g}, batch_size={config['batch_size']}, "
            f"dataset={config['dataset']}){resumed}")

    def epoch_start(self, epoch: int, steps: int) -> None:
        if not self.console.is_terminal:  # logs and CI get the epoch lines only
            return
        if ConsoleSink.bar_owner not in (None, self):  # one live bar a process: a pack's
            return                                     # first member shows it
        ConsoleSink.bar_owner = self
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[live]}"), TimeElapsedColumn(), console=self.console,
            transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, live="")
        self.first_step = epoch * steps  # every epoch has the same number of steps

    def log_step(self, step: int, metrics: dict) -> None:
        if self.progress is None:
            return
        live = (f"loss {metrics['train/step_loss']:.4f}  acc {metrics['train/step_acc']:.3f}  "
                f"{metrics['perf/images_per_s']:,.0f} img/s")
        self.progress.update(self.task, completed=step - self.first_step, live=live)

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if ConsoleSink.bar_owner is self:
            ConsoleSink.bar_owner = None

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        self._stop_bar()
        val = (f"  val {metrics['val/loss']:.4f} {metrics['val/acc']:6.2%}"
               if "val/acc" in metrics else "")
        self.console.print(
            f"epoch {metrics['epoch']}/{self.epochs}  train {metrics['train/loss']:.4f} "
            f"{metrics['train/acc']:6.2%}{val}  lr {metrics['lr']:.3g}  "
            f"{metrics['perf/images_per_s']:,.0f} img/s  {metrics['perf/epoch_s']:.1f}s",
            highlight=False)

    def finish(self, summary: dict, state: str) -> None:
        self._stop_bar()
        table = Table(title=f"run {summary.get('run_id', '')}: {state}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in SUMMARY_ROWS:
            if key in summary and summary[key] is not None:
                value = summary[key]
                table.add_row(escape(key), f"{value:.4f}" if isinstance(value, float)
                              else escape(str(value)))  # class names come from users' files
        self.console.print(table)

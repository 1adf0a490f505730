"""Console sink: a header naming the run's place in its sweep ("run 12/80", ETA) and every
swept parameter, a rich progress bar per epoch with live loss, accuracy and throughput, one
line per finished epoch, and a closing line (a sweep's run) or table (a lone run). Lines fit
80 columns."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent import metrics
from agent.commands import script
from agent.sweep_space import duration_text, leaf_value, short_number, swept_leaves
from agent.trial.sinks import RunInfo, Sink, agents_sharing_output, given_values
from nn.schedules import scheduled_lr

SUMMARY_ROWS = metrics.names(summary=True)
# What a lone run's header shows (a sweep's run shows what its sweep varies instead).
LONE_RUN_PARAMETERS = ("dataset", "model", "optimizer", "lr", "batch_size", "dropout", "epochs")


def header_lines(run: RunInfo, config: dict) -> list[str]:
    """`run 12/80 k3x9q0ab  model=cnn optimizer=adam lr=0.001 dropout=0.3` and, in a sweep,
    a second line with the sweep's name, runs done and ETA."""
    sweep = run.sweep or {}
    # a nested parameter's leaves by their dotted names (another program's runs differ there)
    swept = [p.name for p in swept_leaves(sweep.get("config"))] if sweep else []
    names = swept or [n for n in LONE_RUN_PARAMETERS if n in config]
    given = given_values(run, config)  # a null as None, as ${args} passes it
    setting = " ".join(f"{n}={short_number(leaf_value(given, n, None))}" for n in names)
    progress = sweep.get("progress") or {}
    index = (progress.get("index") or {}).get(run.id)
    place = f"run {index}/{progress.get('total') or '?'}" if index else "run"
    resumed = f" (resumed after epoch {run.resumed_epoch})" if run.resumed_epoch else ""
    lines = [f"{place} {run.name}{resumed}  {setting}"]
    if sweep:
        eta = progress.get("eta_s")
        left = "" if eta is None else ", under a second left" if eta < 0.5 else \
            f", about {duration_text(eta)} left"  # not 'about 0 s' while runs are left
        line = (f"  sweep {sweep.get('name')} ({sweep.get('id')}): "
                f"{progress.get('done', 0)} done{left}")
        fixed = _fixed(config, swept)
        lines.append(f"{line}; {fixed}" if fixed and len(line) + len(fixed) < 78 else line)
    return lines


def _fixed(config: dict, swept: list[str]) -> str:
    """The fixed values a reader needs beside the swept ones to judge a run: epochs, batch."""
    keys = [k for k in ("epochs", "batch_size") if k not in swept and k in config]
    return " ".join(f"{k}={short_number(config[k])}" for k in keys)


class ConsoleSink(Sink):
    bar_owner: ConsoleSink | None = None  # the sink whose progress bar is live, if any

    def __init__(self):
        self.console = Console()
        self.progress = None

    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        self.epochs = config["epochs"]
        self.config = config
        self.progress = None
        self.run = run
        # other agents of the launch write to this terminal too: lines that name their run,
        # and no live bar, whose redrawing would overwrite the lines they print under it
        self.shared = agents_sharing_output() > 1
        self.tensorboard = "tensorboard" in config.get("sinks", ())
        for line in header_lines(run, config):
            self.console.print(line, style="bold" if line.startswith("run") else None,
                               highlight=False, markup=False, soft_wrap=True)

    def epoch_start(self, epoch: int, steps: int) -> None:
        # The epoch line shows the lr of the epoch's first step: what a PyTorch scheduler's
        # get_last_lr() says before the epoch, the lr an epoch-wise scheduler trains all of
        # it with. Ours steps every batch (as OneCycleLR does), and the lr at the epoch's
        # end, which the row holds for TensorBoard and W&B (their x is the step), is the
        # next step's: a decay's last epoch read "lr 0". A range "a->b" would not fit 80
        # columns at common values (0.0905->0.0868).
        cfg = self.config
        self.epoch_lr = scheduled_lr(cfg["lr"], epoch * steps, steps, cfg["epochs"],
                                     cfg["warmup_epochs"], cfg["schedule"])
        if not self.console.is_terminal or self.shared:  # logs and CI get the epoch lines only
            return
        if ConsoleSink.bar_owner not in (None, self):  # one live bar a process: a pack's
            return                                     # first member shows it
        ConsoleSink.bar_owner = self
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(bar_width=20),
            MofNCompleteColumn(), TextColumn("{task.fields[live]}"), TimeElapsedColumn(),
            console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, live="")
        self.first_step = epoch * steps  # every epoch has the same number of steps

    def log_step(self, step: int, metrics: dict) -> None:
        if self.progress is None:
            return
        live = (f"loss {metrics['train/step_loss']:.3f} acc {metrics['train/step_acc']:.2f} "
                f"{metrics['perf/step_images_per_s']:,.0f} img/s")
        self.progress.update(self.task, completed=step - self.first_step, live=live)

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if ConsoleSink.bar_owner is self:
            ConsoleSink.bar_owner = None

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        self._stop_bar()
        self.console.print(epoch_line(self.run, self.epochs, metrics, lr=self.epoch_lr,
                                      named=self.shared), highlight=False, soft_wrap=True)

    def finish(self, summary: dict, state: str) -> None:
        self._stop_bar()
        if self.run.sweep:  # one line a run: a sweep of 80 runs stays readable
            self.console.print(end_line(self.run, summary, state), highlight=False,
                               markup=False, soft_wrap=True)
            return
        table = Table(title=f"run {summary.get('run_id', '')}: {state}")
        table.add_column("metric", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        for key in SUMMARY_ROWS:
            if key in summary and summary[key] is not None:
                value = summary[key]
                table.add_row(escape(key), f"{value:.4f}" if isinstance(value, float)
                              else escape(str(value)))  # class names come from users' files
        self.console.print(table)
        if self.tensorboard:  # the logs it names exist only with the TensorBoard sink
            board = script("run_tensorboard.sh")
            self.console.print(f"TensorBoard: {board} --logdir {self.run.log_dir}",
                               highlight=False, markup=False, soft_wrap=True)


def epoch_line(run: RunInfo, epochs: int, metrics: dict, *, lr: float,
               named: bool = False) -> str:
    """`epoch 3/10 train 0.4123 88.10% val 0.4311 87.20% lr 0.05 12,345 img/s 1.2s`, `lr`
    the one the epoch's first step trained with (ConsoleSink.epoch_start), within
    80 columns for any epoch count, loss, lr and rate (a blow-up as 1.2e4, 1e-05 as 1e-5,
    a GPU's rate as 1.23M); where lines of several runs interleave (a pack's members, or
    `named`: the runs of agents that share a terminal), the run's name replaces the word
    epoch and the epoch time is left out (a pack's is the same on every line; the rate
    says how fast a run went, and the name takes the room)."""
    val = (f" val {_loss(metrics['val/loss'])} {_acc(metrics['val/acc'])}"
           if "val/acc" in metrics else "")
    named = named or run.pack > 1
    who = run.name[:12] if named else "epoch"
    epoch_s = metrics["perf/epoch_s"]
    seconds = "" if named else f" {epoch_s:.1f}s" if epoch_s < 100 else f" {epoch_s:.0f}s"
    shown_lr = short_number(lr).replace("e-0", "e-")  # 9.71e-05 as 9.71e-5
    return (f"{who} {metrics['epoch']}/{epochs} train {_loss(metrics['train/loss'])} "
            f"{_acc(metrics['train/acc'])}{val} lr {shown_lr} "
            f"{_rate(metrics['perf/images_per_s'])} img/s{seconds}")


def _acc(value: float) -> str:
    """88.10% in six characters; 100.0% too."""
    return f"{value:6.2%}" if value < 0.99995 else f"{value:.1%}"


def _rate(value: float) -> str:
    """12,345 as such; 123,456 and up as 123k, 1.23M: a GPU's rates fit the line too."""
    if value >= 999_500:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.0f}k" if value >= 1e5 else f"{value:,.0f}"


def _loss(value: float) -> str:
    """0.5123 as such; a loss that blew up (1.2e4, inf) in as few characters."""
    if abs(value) < 1000 or not math.isfinite(value):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value}"
    return f"{value:.1e}".replace("e+0", "e").replace("e+", "e")


def end_line(run: RunInfo, summary: dict, state: str) -> str:
    """`run 12/80 k3x9q0ab finished: val/acc 0.8123 test/acc 0.8050 (45 s)`."""
    progress = (run.sweep or {}).get("progress") or {}
    index = (progress.get("index") or {}).get(run.id)
    place = f"run {index}/{progress.get('total') or '?'}" if index else "run"
    parts = [f"{name} {summary[name]:.4f}" for name in ("val/acc", "test/acc")
             if isinstance(summary.get(name), float)]
    wall = summary.get("wall_s")
    return (f"{place} {run.name} {state}" + (": " + " ".join(parts) if parts else "")
            + (f" ({duration_text(wall)})" if isinstance(wall, (int, float)) else ""))

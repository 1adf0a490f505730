"""What every report section shares: the markdown being written (`Report`), the study's
computed context (`Context`: swept parameters, groups, baselines, the data actually used),
and how numbers and configurations are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.report import stats
from agent.report.curves import LossCurve, loss_curve, step_losses
from agent.report.study import RunRecord, Study
from agent.sweep_space import log_scaled, short_number, swept_parameters

if TYPE_CHECKING:  # figures imports matplotlib and torch: agent.repeat plans without them
    from agent.report.figures import Drawn


class Report:
    """Markdown lines and figure files, gathered section by section."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / "report.md"
        self.lines: list[str] = []
        self.figures: dict[str, Drawn] = {}  # file name -> what it shows

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + " --- |" * len(header))
        self.add(*("| " + " | ".join(row) + " |" for row in rows))
        self.add("")

    def figure(self, drawn: Drawn, alt: str) -> None:
        self.figures[drawn.path.name] = drawn
        self.add(f"![{alt}]({drawn.path.name})", "")


@dataclass
class DataUsed:
    """The images the runs actually trained, validated and were tested on."""

    dataset: str
    source: str  # the files they were decoded from
    classes: list[str]
    full_train: int  # the dataset's training set before the validation split
    val_split: float
    train_subset: int  # 0: all
    train_labels: list[int]  # of the images trained on
    val_labels: list[int]
    test_labels: list[int]


@dataclass
class Context:
    """The study and what every section computes from it once."""

    study: Study
    out_dir: Path
    rule: stats.GroupRule
    swept: list[str]  # the sweep's search space (else the parameters that vary)
    scored: list[RunRecord]  # runs with a value of the sweep's metric, best first
    curves: dict[str, LossCurve] = field(default_factory=dict)  # by run id
    verdicts: dict[str, stats.Verdict] = field(default_factory=dict)  # by run id
    data: DataUsed | None = None
    base: stats.Baselines | None = None
    level: float = 0.95
    # swept parameters no run uses (Param.used_when), left out of `swept`: name -> why
    idle: dict[str, str] = field(default_factory=dict)
    # settings with repeat sweeps (agent.repeat) over fresh seeds: seeds_section finds them
    repeated: int = 0

    @property
    def classes(self) -> int | None:
        if self.data is not None:
            return len(self.data.classes)
        found = {r.summary.get("classes") for r in self.study.runs} - {None}
        if not found:  # the dataset's files are not here: its class count is known anyway
            from util.datasets import class_count

            found = {class_count(str(r.params.get("dataset"))) for r in self.study.runs}
            found -= {None}
        return found.pop() if len(found) == 1 else None

    def group_of(self, run: RunRecord) -> str:
        verdict = self.verdicts.get(run.id)
        return verdict.group if verdict else ""

    def diverged(self, run: RunRecord) -> bool:
        """Whether `run` diverged (stats.DIVERGED): its last value means nothing (the heat
        map's "div"), and a loss of 90 among losses near 1 would set any mean or ranking."""
        return self.group_of(run) == stats.DIVERGED

    def not_diverged(self, runs: list[RunRecord]) -> list[RunRecord]:
        """`runs` less those that diverged, in their order."""
        return [r for r in runs if not self.diverged(r)]

    def classify(self, runs: list[RunRecord]) -> None:
        """Read each ended run's loss curve and group it (stats.classify) into `curves` and
        `verdicts`: the sweep's runs, and the repeat sweeps' runs the seeds section reads."""
        for run in runs:
            if run.id in self.curves:
                continue
            self.curves[run.id] = loss_curve(run)
            if self.classes:
                verdict = stats.classify(run, step_losses(self.curves[run.id]), self.classes,
                                         self.rule)
                if verdict is not None:
                    self.verdicts[run.id] = verdict


def _numbers(ctx: Context, name: str) -> list[float] | None:
    """The distinct values of `name` over the study's runs, sorted, when all are numbers."""
    values = {r.config.get(name, r.params.get(name)) for r in ctx.study.runs
              if not isinstance(r.config.get(name), list)}
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             for v in values):
        return None
    return sorted(values)


def log_distribution(ctx: Context, name: str) -> str | None:
    """The log-scaled distribution the sweep draws `name` from (log_uniform_values,
    q_log_uniform, inv_log_uniform, log_normal...), else None."""
    spec = ((ctx.study.sweep_config or {}).get("parameters") or {}).get(name)
    kind = str(spec.get("distribution", "")) if isinstance(spec, dict) else ""
    log = any(p.name == name and p.log and p.values is None
              for p in swept_parameters(ctx.study.sweep_config))
    return kind if log else None


def log_axis(ctx: Context, name: str) -> bool:
    """Whether the figures and correlations read `name` on a log scale: positive numbers
    drawn from a log distribution (log_distribution), or values spanning two decades
    (sweep_space.log_scaled). A random search's draws can span less than its distribution:
    1.94 of the 3 decades of a log_uniform_values lr between 1e-4 and 0.1, which a linear
    axis crowds at its low end as it would the whole range."""
    values = _numbers(ctx, name)
    if values is None or values[0] <= 0:
        return False
    return log_distribution(ctx, name) is not None or log_scaled(values)


def log_text(ctx: Context, names: list[str]) -> str:
    """'two decades or more, or powers of two spread 8-fold or more: here lr, batch_size':
    which of `names` the figures and correlations read on a log scale (log_axis), by the
    rule and by name; one that only its log distribution puts there is said to be ('here
    batch_size, lr; lr drawn from log_uniform_values')."""
    logged = [name for name in names if log_axis(ctx, name)]
    drawn = [f"{name} drawn from {log_distribution(ctx, name)}" for name in logged
             if not log_scaled(_numbers(ctx, name))]
    return ("two decades or more, or powers of two spread 8-fold or more (batch sizes): "
            + (f"here {', '.join(logged)}" if logged else "none here")
            + (f"; {', '.join(drawn)}" if drawn else ""))


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci_text(values: list[float], level: float = 0.95) -> str:
    mean, half, n = stats.t_interval(values, level)
    return f"{mean:.4f} ± {half:.4f} (n={n})" if half is not None else f"{mean:.4f} (n={n})"


def diverged_left_out(count: int) -> str:
    """The sentence saying that `count` diverged runs were left out of a table or a figure,
    and why (the heat map writes "div" for them)."""
    return (f"Left out: {count} run{'s' if count != 1 else ''} that diverged (a diverged "
            "run's last value means nothing: \"div\" in the heat map)")


def stopped_text(run: RunRecord) -> str:
    """' (stopped early at epoch 2 of 4)' for a run the sweep's early termination cut short,
    else ''."""
    note = stopped_note(run)
    return f" ({note})" if note else ""


def stopped_note(run: RunRecord) -> str:
    """'stopped early at epoch 2 of 4' for a run the sweep's early termination cut short,
    else '': for a text already in parentheses ('(0.1100, stopped early at epoch 1 of 3)')."""
    if not stats.stopped_early(run):
        return ""
    done = stats.epochs_done(run)
    return f"stopped early at epoch {done} of {run.params.epochs}"


def fmt_value(run: RunRecord, name: str) -> str:
    """The run's value of `name` as tables write it (0.001, 0, dense)."""
    return config_text(run, [name]).split("=", 1)[1]


def config_text(run: RunRecord, names: list[str], sep: str = ", ") -> str:
    """`model=cnn, lr=0.001`: the run's values of `names` (numbers in short form)."""
    return sep.join(f"{n}={short_number(run.config.get(n, run.params.get(n)))}" for n in names)

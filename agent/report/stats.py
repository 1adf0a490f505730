"""The numbers of a study report, as pure functions of runs and labels: baselines and the
chance bound, confidence intervals and tests between configurations, the groups (diverged,
stuck, converged), hyper-parameter importance, hardest classes."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from agent.report.options import EXPLODE_FACTOR, STUCK_MARGIN
from agent.report.study import RunRecord
from agent.sweep_space import log_scaled

DIVERGED, COLLAPSED, STUCK, FALLING, CONVERGED = (
    "diverged", "collapsed", "stuck", "falling", "converged")
GROUPS = (DIVERGED, COLLAPSED, STUCK, FALLING, CONVERGED)
# the groups of runs that ended at chance: their values are real, and learnt nothing
AT_CHANCE = (COLLAPSED, STUCK, FALLING)


# ---------------------------------------------------------------- baselines

@dataclass(frozen=True)
class Baselines:
    """What a model that learnt nothing scores on the real test set."""

    classes: int
    test_size: int
    random_draw: float  # accuracy of one seeded draw of uniform guesses
    chance: float  # its expectation, 1 / classes (whatever the class balance)
    chance_bound: float  # accuracy uniform guessing stays at or below in `level` of draws
    level: float
    majority: float  # accuracy of always predicting majority_classes[0]
    majority_classes: list[int]  # the most frequent class(es) of the training images used
    majority_count: int  # training images of each of them
    majority_range: tuple[float, float]  # its accuracy over the tied classes (min, max)

    @property
    def tied(self) -> bool:
        return len(self.majority_classes) > 1


def baselines(train_labels: list[int], test_labels: list[int], classes: int, seed: int = 0,
              level: float = 0.95) -> Baselines:
    """A random model (uniform guesses: one seeded draw, its expectation 1/K and the one-sided
    `level` binomial upper bound on the test size) and a majority-class model (the most
    frequent class of `train_labels`; every class tied for most frequent is listed, the
    baseline predicts the smallest index of them)."""
    from scipy import stats

    test = np.asarray(test_labels)
    guesses = np.random.default_rng(seed).integers(0, classes, size=len(test))
    counts = Counter(train_labels)
    top = max(counts.values())
    tied = sorted(c for c, n in counts.items() if n == top)
    accuracy = [float((test == c).mean()) for c in tied]
    bound = float(stats.binom.ppf(level, len(test), 1 / classes) / len(test))
    return Baselines(classes, len(test), float((guesses == test).mean()), 1 / classes, bound,
                     level, accuracy[0], tied, top, (min(accuracy), max(accuracy)))


def better_than_random(runs: list[RunRecord], base: Baselines,
                       metric: str = "test/acc") -> tuple[list[RunRecord], list[RunRecord]]:
    """(kept, left out): a run is kept when its test accuracy is above the random model's
    upper bound on the test size (Baselines.chance_bound); a run without one is left out."""
    kept = [r for r in runs if (r.metric(metric) or -1.0) > base.chance_bound]
    return kept, [r for r in runs if r not in kept]


def stopped_early(run: RunRecord) -> bool:
    """Whether the sweep's early termination (hyperband) cut `run` short: its metric is the
    value at the epoch it was stopped at, not a final one (the store's state `stopped`)."""
    return run.state == "stopped"


def full_length(runs: list[RunRecord]) -> list[RunRecord]:
    """`runs` less those early termination stopped (their values are partial)."""
    return [r for r in runs if not stopped_early(r)]


# ---------------------------------------------------------------- intervals and tests

def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float | None, int]:
    """Mean, half-width of the `level` Student-t interval (None for n < 2), n."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, None, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, half, n


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means; 1.0 when
    both samples are constant and equal, 0.0 when constant and different (constant and
    equal but for rounding: same_mean)."""
    from scipy import stats

    # constant: every value equal to the first but for rounding. np.std is no test of it:
    # the mean of 0.4 three times reads 0.4000000000000001, so their std is 5.6e-17, not 0,
    # and scipy's t on two such samples is rounding noise over rounding noise (p = 0.29)
    if _constant(a) and _constant(b):
        return 1.0 if same_mean(a[0], b[0]) else 0.0
    with warnings.catch_warnings():  # nearly equal values: scipy warns of precision loss,
        warnings.simplefilter("ignore", RuntimeWarning)  # and its p-value is still right
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def same_mean(a: float, b: float) -> bool:
    """Whether two means are equal: exactly, but for the last bits of their rounding (the
    mean of 0.7, 0.1 and 0.4 reads 0.39999999999999997, that of 0.4 three times 0.4)."""
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _constant(values: list[float]) -> bool:
    return all(same_mean(float(v), float(values[0])) for v in values)


def tie_classes(values: list[float]) -> dict[float, float]:
    """Each of `values` -> the value it ranks and ties as: the smallest of its class of
    values equal but for rounding (same_mean), so that `==` on the result is a tie.

    same_mean is no equivalence (a ~ b and b ~ c need not give a ~ c), so neither a sort
    that compares with it nor "within 1e-12 of the best" is a well-defined order. Here the
    distinct values are sorted and each joins the class of the one just below it where
    same_mean holds: the classes depend on the set of values alone, not their order, and
    sorting by class is a total order. Means of real metrics (accuracies k/n, float32
    losses, averaged over seeds) that truly differ do so by far more than 1e-12 of their
    size, so a class joins only means that differ by rounding. Rounding each value to 12
    significant digits would be simpler but splits two such means that sit on either side
    of a rounding boundary (an accuracy k/8192 has 13 digits, the last a 5)."""
    classes: dict[float, float] = {}
    below = None
    for value in sorted(set(values)):
        classes[value] = classes[below] if below is not None and same_mean(below, value) \
            else value
        below = value
    return classes


def mean_ranking(items: list, mean, goal: str, place) -> list:
    """`items` best first by `mean(item)` (by `goal`), those of means equal but for rounding
    (tie_classes) by `place(item)`: the order the report and agent.repeat rank settings in."""
    score = tied_mean(items, mean)
    sign = -1.0 if goal == "maximize" else 1.0
    return sorted(items, key=lambda item: (sign * score(item), place(item)))


def tied_mean(items: list, mean):
    """A function giving each of `items` its mean as ranking and ties read it (tie_classes
    over the means of `items`): items tied at a cut compare equal, for tied_at_cut."""
    means = {id(item): float(mean(item)) for item in items}
    tied = tie_classes(list(means.values()))
    return lambda item: tied[means[id(item)]]


def best_means(samples: dict[str, list[float]], goal: str) -> list[str]:
    """The keys of `samples` whose mean is the best by `goal`, in their order: one, or all
    of those that tie at it (tie_classes: equal but for rounding)."""
    means = {k: float(np.mean(v)) for k, v in samples.items()}
    tied = tie_classes(list(means.values()))
    top = (max if goal == "maximize" else min)(tied.values())
    return [k for k, mean in means.items() if tied[mean] == top]


def supported_best(samples: dict[str, list[float]], goal: str,
                   alpha: float = 0.05) -> tuple[str | None, dict[str, float]]:
    """The configuration whose mean is best, if Welch's t-test finds it better than every
    other one at family-wise level `alpha` (Holm's step-down correction over those
    comparisons); else None, and None where several tie at the best mean (best_means: no
    one of them is better). Also the Holm-adjusted p-value of each comparison of the best
    mean (the first of those tied) with the others. Samples with fewer than 2 values take
    no part."""
    usable = {k: v for k, v in samples.items() if len(v) >= 2}
    if len(usable) < 2:
        return None, {}
    tied = best_means(usable, goal)
    leader = tied[0]
    raw = {k: welch_p(usable[leader], v) for k, v in usable.items() if k != leader}
    adjusted = holm(raw)
    supported = len(tied) == 1 and all(p < alpha for p in adjusted.values())
    return (leader if supported else None), adjusted


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), monotone, capped at 1."""
    order = sorted(p_values, key=p_values.get)
    m, running, out = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        out[key] = running
    return out


# ---------------------------------------------------------------- groups

@dataclass(frozen=True)
class GroupRule:
    """Diverged: a loss went non-finite (the trial stops the run at the first), or the run
    ended with its loss far above where training starts: its last epoch's mean training or
    validation loss (its last logged step's where it recorded no epoch) above
    `explode_factor` x ln K, ln K being the loss of a uniform prediction, where a freshly
    initialised classifier starts, and its last epoch's validation accuracy (training
    accuracy without a validation split; none recorded counts as at chance) below chance
    1/K + `stuck_margin`: a model that predicts garbage. A run that ends above that level
    with its last accuracy above chance is no divergence either: it predicts, and so large
    a cross-entropy comes from a few confident mistakes (large logits, as adam at a high lr
    gives: a digits run ended at a training loss of 138 and a val/acc of 0.81): converged,
    its large loss named (Verdict.large_loss). A loss that rose past that level and came
    back below it is no divergence: such a run is stuck or converged by its accuracy, its
    spike named.
    Collapsed: not diverged, its best validation accuracy (training accuracy without a
    validation split) reached chance 1/K + `stuck_margin`, and its last epoch's is below
    it again: it left chance and ended back at it (a run that reached 0.375, then sat at a
    loss of ln 10 and an accuracy of 0.06 to 0.13 for its last 12 epochs).
    The runs whose best accuracy stayed below 1/K + `stuck_margin` did not leave chance;
    of them, still falling: the last epoch's mean training loss at least `falling_share`
    below that of the epoch halfway through the run (the first of 2 epochs, the second of
    3 or 4, the eighth of 15), so that more epochs might have left chance; stuck: the
    others, whose loss was flat (a single epoch is read as flat: it has no trend), a run
    whose loss spiked past the divergence level and came back (its fall is the spike's
    return, not learning), and one whose logged steps of its second half sit at ln K
    (UNIFORM_BAND; its epoch means fall from a first epoch that spiked below that level).
    Converged: every other run."""

    explode_factor: float = EXPLODE_FACTOR
    stuck_margin: float = STUCK_MARGIN
    # a loss within 2% of where it was halfway is flat: a run at chance drifting to ln K
    # over 8 epochs (2.324 to 2.302 on digits) is not falling, one that fell 2.56 to 2.36
    # in its second of 2 epochs (8%) is
    falling_share: float = 0.02

    def explode_at(self, classes: int) -> float:
        return self.explode_factor * math.log(classes)

    def stuck_below(self, classes: int) -> float:
        return 1 / classes + self.stuck_margin

    def describe(self, classes: int) -> str:
        return (f"**diverged**: a loss went non-finite (the trial stops the run there), or "
                f"the run ended with its loss far above where training starts: its last "
                f"epoch's training or validation loss above {self.explode_factor:g} x ln "
                f"{classes} = {self.explode_at(classes):.1f} (ln {classes} = "
                f"{math.log(classes):.2f} is the loss of a uniform guess, where an "
                f"initialised network starts) and its last validation accuracy below "
                f"{self.stuck_below(classes):.3f}, at chance (a run that ended above that "
                f"loss with its accuracy above chance predicts: so large a cross-entropy "
                f"comes from a few confident mistakes, and it is converged, its large loss "
                f"named); a loss that rose above that and came back "
                f"is no divergence (the run is stuck or converged by its accuracy, its "
                f"spike named); **collapsed**: not diverged, its best validation accuracy "
                f"reached chance 1/{classes} + {self.stuck_margin:g} = "
                f"{self.stuck_below(classes):.3f} and its last epoch's is below that again "
                f"(it left chance and ended back at it); **stuck**: not diverged, the best "
                f"validation accuracy never reached {self.stuck_below(classes):.3f}, and its "
                f"training loss flat (its last epoch's mean not {self.falling_share:.0%} below "
                "that of the epoch halfway through the run; one epoch, a loss that spiked "
                "and came back, or one whose logged steps of the run's second half all lie "
                f"within {UNIFORM_BAND:.0%} of ln {classes}, the loss of a uniform guess, "
                "counts as flat); **did not leave chance, loss still "
                "falling**: the best validation accuracy below "
                f"{self.stuck_below(classes):.3f} too, but the last epoch's mean training "
                f"loss at least {self.falling_share:.0%} below that of the epoch halfway "
                "through: more epochs might have left chance; **converged**: every other run "
                "(it left chance and did not end at it; it need not have finished learning)")


@dataclass(frozen=True)
class Verdict:
    group: str
    reason: str  # the numbers that decided it
    peak_loss: float | None  # the largest finite loss seen
    best_acc: float | None  # the best validation (else training) accuracy
    # a run not diverged whose loss rose past the rule's level and came back: what rose,
    # how far, and where it ended ('epoch training loss 512 > 23.0, ended at 2.87'); ""
    spike: str = ""
    # a run not diverged whose final loss is above the rule's level though its last accuracy
    # is above chance (the stuck bound): which loss, and both numbers ('final training loss
    # 138 > 23.0, last accuracy 0.810 >= 0.150'); ""
    large_loss: str = ""


FINAL_NAMES = {"train/loss": "training loss", "val/loss": "validation loss"}


def final_losses(run: RunRecord, step_losses: list[float]) -> dict[str, float]:
    """{name: value} of the losses `run` ended with: its last recorded epoch's mean training
    and validation loss, or its last logged step's loss where it recorded no epoch loss."""
    rows = [row for row in run.history
            if any(isinstance(row.get(key), (int, float)) for key in FINAL_NAMES)]
    if rows:
        return {name: float(rows[-1][key]) for key, name in FINAL_NAMES.items()
                if isinstance(rows[-1].get(key), (int, float))}
    return {"training-step loss": float(step_losses[-1])} if step_losses else {}


def classify(run: RunRecord, step_losses: list[float], classes: int,
             rule: GroupRule) -> Verdict | None:
    """The run's group under `rule`, from its step losses and epoch history; None for a run
    with no loss and no accuracy at all (it never finished an epoch nor diverged)."""
    sources = {"training-step loss": [float(v) for v in step_losses]}
    for key, name in (("train/loss", "epoch training loss"), ("val/loss", "validation loss")):
        sources[name] = [float(row[key]) for row in run.history
                         if isinstance(row.get(key), (int, float))]
    peaks = {name: max(v for v in values if math.isfinite(v)) for name, values in
             sources.items() if any(math.isfinite(v) for v in values)}
    peak = max(peaks.values()) if peaks else None
    accuracies = [row.get("val/acc", row.get("train/acc")) for row in run.history]
    accuracies = [float(a) for a in accuracies if isinstance(a, (int, float))]
    best = max(accuracies) if accuracies else None
    if run.summary.get("diverged") or not all(
            math.isfinite(v) for values in sources.values() for v in values):
        return Verdict(DIVERGED, "loss went non-finite", peak, best)
    bound = rule.explode_at(classes)
    finals = final_losses(run, sources["training-step loss"])
    above = {name: v for name, v in finals.items() if v > bound}
    large = ""
    if above:
        name = max(above, key=above.get)
        ended = f"final {name} {above[name]:.3g} > {bound:.1f}"
        last = _epoch_values(run, "val/acc", "train/acc")
        if not last or last[-1][1] < rule.stuck_below(classes):
            at = f", last accuracy {_below(last[-1][1], rule.stuck_below(classes))}" \
                if last else ""
            return Verdict(DIVERGED, ended + at, peak, best)
        # a model that predicts better than chance: its large cross-entropy comes from
        # a few confident mistakes (large logits, adam at a high lr), not from garbage
        large = f"{ended}, last accuracy {last[-1][1]:.3f} >= {rule.stuck_below(classes):.3f}"
    spike = ""
    if peak is not None and peak > bound and not large:
        name = max(peaks, key=peaks.get)
        spike = f"{name} {peak:.3g} > {bound:.1f}, ended at {max(finals.values()):.3g}"
    if best is None:
        return None
    spiked = f"; its loss spiked and came back ({spike})" if spike else ""
    if best < rule.stuck_below(classes):
        group, trend = _trend(run, rule, spike, sources["training-step loss"], classes)
        return Verdict(group, f"best accuracy {_below(best, rule.stuck_below(classes))}"
                       + trend + spiked, peak, best, spike)
    collapse = _collapse(run, classes, rule, finals)
    if collapse:
        return Verdict(COLLAPSED, collapse + spiked, peak, best, spike)
    return Verdict(CONVERGED, f"best accuracy {best:.3f}" + (f"; {large}" if large else ""),
                   peak, best, spike, large)


def at_chance_label(group: str, run: RunRecord) -> str:
    """How a run of one of the AT_CHANCE groups is named beside its value ('stuck at
    chance', 'did not leave chance in 2 epochs'); "" for the other groups."""
    if group == FALLING:
        done = epochs_done(run)
        return f"did not leave chance in {done} epoch{'s' if done != 1 else ''}"
    return {COLLAPSED: "collapsed to chance", STUCK: "stuck at chance"}.get(group, "")


def _epoch_values(run: RunRecord, *keys: str) -> list[tuple[int, float]]:
    """(epoch, value) of the first of `keys` each history row holds a number for."""
    out = []
    for i, row in enumerate(run.history):
        value = next((row[k] for k in keys if isinstance(row.get(k), (int, float))), None)
        if value is not None:
            out.append((int(row.get("epoch", i + 1)), float(value)))
    return out


# A run whose logged training losses of its second half all lie within UNIFORM_BAND of ln K
# sits at the loss of a uniform guess (its output collapsed to one distribution, whatever the
# batch): stuck, even where its epoch means fall (a spike in its first epoch, 3.56 then 2.30
# for a cnn whose steps read 2.29 to 2.32 from step 16 of 76; another, with dropout 0.5,
# 2.29 to 2.33 after a spike to 11.1: 1.3% off ln 10). Needs STEP_TREND_MIN logged
# steps: a run that learns passes ln K with steps on both sides of the band.
UNIFORM_BAND = 0.02
STEP_TREND_MIN = 8


def _trend(run: RunRecord, rule: GroupRule, spike: str, step_losses: list[float],
           classes: int) -> tuple[str, str]:
    """(STUCK or FALLING, the words on its training loss) for a run that did not leave
    chance (GroupRule: still falling where its last epoch's mean training loss is
    `falling_share` below that of the epoch halfway through the run, unless its logged
    steps of the second half sit at ln K: UNIFORM_BAND)."""
    losses = _epoch_values(run, "train/loss")
    if spike:  # its fall is the spike's return (named beside it), not learning
        return STUCK, ""
    if len(losses) < 2:
        return STUCK, "; one epoch: no trend in its loss to read"
    (mid, before), (last, after) = losses[(len(losses) - 1) // 2], losses[-1]
    change = f"{before:#.3g} at epoch {mid}, {after:#.3g} at epoch {last}"
    if not after < before * (1 - rule.falling_share):
        return STUCK, f"; its training loss flat ({change})"
    tail, uniform = step_losses[len(step_losses) // 2:], math.log(classes)
    if len(step_losses) >= STEP_TREND_MIN \
            and all(abs(v - uniform) <= UNIFORM_BAND * uniform for v in tail):
        return STUCK, (f"; its training loss at ln {classes} = {uniform:.2f}, the loss of a "
                       f"uniform guess, in the last {len(tail)} of its {len(step_losses)} "
                       f"logged steps ({min(tail):.3g} to {max(tail):.3g}; its epoch means "
                       f"{change})")
    return FALLING, f"; its training loss still falling ({change})"


def _collapse(run: RunRecord, classes: int, rule: GroupRule,
              finals: dict[str, float]) -> str:
    """Why `run`, which left chance, collapsed (GroupRule), or "": its best and last
    accuracy and where it came back to chance, its last losses beside ln K."""
    accuracies = _epoch_values(run, "val/acc", "train/acc")
    bound = rule.stuck_below(classes)
    if not accuracies or accuracies[-1][1] >= bound:
        return ""
    since = accuracies[-1][0]
    for epoch, accuracy in reversed(accuracies):
        if accuracy >= bound:
            break
        since = epoch
    top, best = max(accuracies, key=lambda pair: pair[1])
    losses = ", ".join(f"{name} {value:#.3g}" for name, value in finals.items())
    return (f"left chance (best accuracy {best:.3f} at epoch {top}), back at it from epoch "
            f"{since}: last accuracy {_below(accuracies[-1][1], bound)}"
            + (f", {losses} (ln {classes} = {math.log(classes):.2f})" if losses else ""))


def _below(value: float, bound: float, digits: int = 3) -> str:
    """'0.1497 < 0.1500': `value` under `bound` with `digits` decimals, more where both
    would print the same ('0.150 < 0.150' for an accuracy of 0.14967)."""
    while f"{value:.{digits}f}" == f"{bound:.{digits}f}" and digits < 12:
        digits += 1
    return f"{value:.{digits}f} < {bound:.{digits}f}"


# ---------------------------------------------------------------- parameters

@dataclass
class Setting:
    """One configuration of a sweep less its seed: the runs that differ only in `seed` are
    repeats of one setting, never settings of their own."""

    runs: list[RunRecord]  # its scored runs, best first

    @property
    def key(self) -> str:
        return setting_key(self.best)

    @property
    def best(self) -> RunRecord:
        return self.runs[0]

    @property
    def seeds(self) -> set[int]:
        return {r.params.seed for r in self.runs}

    def values(self, metric: str) -> list[float]:
        return [r.metric(metric) for r in self.runs if r.metric(metric) is not None]


def setting_key(run: RunRecord) -> str:
    """What a run's setting is: its sweep config less `seed` (and the sweep's own record)."""
    return json.dumps({k: v for k, v in run.config.items() if k not in ("seed", "sweep")},
                      sort_keys=True, default=str)


def settings_of(runs: list[RunRecord]) -> list[Setting]:
    """`runs` (scored, best first) grouped into their settings, in order of first run."""
    settings: dict[str, Setting] = {}
    for run in runs:
        settings.setdefault(setting_key(run), Setting([])).runs.append(run)
    return list(settings.values())


def ranked_settings_per_group(runs: list[RunRecord], by: str, metric: str, goal: str,
                              order: list[RunRecord]) -> dict[str, list[Setting]]:
    """Every setting (runs less their seed) of each value of the parameter `by`, ranked by
    its mean `metric` over the seeds the sweep gave it (one run: its value); settings of
    means equal but for rounding (tie_classes) in the order of their first run in `order`
    (the sweep's runs, in the sweep's order). `runs` are scored runs, best first."""
    place = {run.id: i for i, run in enumerate(order)}

    def first(setting: Setting) -> int:
        return min(place.get(r.id, len(place)) for r in setting.runs)

    def mean(setting: Setting) -> float:
        return float(np.mean(setting.values(metric)))

    groups: dict[str, list[Setting]] = {}
    for setting in settings_of(runs):
        groups.setdefault(str(setting.best.params.get(by)), []).append(setting)
    # each group ranked on its own, its ties (tie_classes) read over its own means alone, as
    # tied_mean over a group's list reads them for the tables and agent.repeat; the groups
    # in the order of their best settings, ranked alike
    ranked = {group: mean_ranking(settings, mean, goal, first)
              for group, settings in groups.items()}
    order = mean_ranking(list(ranked), lambda group: mean(ranked[group][0]), goal,
                         lambda group: first(ranked[group][0]))
    return {group: ranked[group] for group in order}


def best_settings_per_group(runs: list[RunRecord], by: str, count: int, metric: str,
                            goal: str, order: list[RunRecord]) -> dict[str, list[Setting]]:
    """The best `count` settings of each value of `by` (ranked_settings_per_group)."""
    return {group: settings[:count] for group, settings in
            ranked_settings_per_group(runs, by, metric, goal, order).items()}


def last_epoch_value(run: RunRecord, metric: str) -> float | None:
    """`metric`'s finite value in the run's last epoch row, else None: where an open run
    (running, preempted) stands, which its summary does not hold until it ends."""
    value = run.history[-1].get(metric) if run.history else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def epochs_done(run: RunRecord) -> int:
    """The epochs a run trained before it ended (its summary's epochs_done, else its
    history's rows)."""
    done = run.summary.get("epochs_done")
    return int(done) if isinstance(done, (int, float)) else len(run.history)


def cut_short_passed(settings: list[Setting], metric: str, goal: str,
                     full: frozenset[str] = frozenset()) -> tuple[list[Setting], Setting | None]:
    """(passed over, kept for it): of one group's settings (ranked best first), those the
    sweep's early termination (hyperband) stopped on every seed, which are none of the
    group's best: hyperband stops a run that scores below the others at the same epoch (Li
    et al., "Hyperband", JMLR 2018), and its value is from that epoch. Where every setting
    of the group was stopped, the furthest stands for the group (kept; ties by its mean,
    then the ranking) and the others are passed over. One rule for agent.repeat's picks and
    the report's "By ..." tables, so that they name the same settings as a group's best.
    Settings whose key is in `full` count as full-length ones (the report's repeated
    settings: their fresh seeds ran the full length)."""
    short = [s for s in settings if s.key not in full and all(stopped_early(r) for r in s.runs)]
    if not short or len(short) < len(settings):
        return short, None
    sign = 1.0 if goal == "maximize" else -1.0
    # means equal but for rounding tie (tied_mean): max keeps the first of them, in the
    # ranking's order (the sweep's)
    mean = tied_mean(short, lambda s: np.mean(s.values(metric)))
    furthest = max(short, key=lambda s: (max(epochs_done(r) for r in s.runs),
                                         sign * mean(s)))
    return [s for s in short if s is not furthest], furthest


def tied_at_cut(ranked: list, count: int, score) -> tuple[list, list]:
    """(kept, left out): the items of `ranked` (best first) that score exactly as the last
    of its first `count`, on each side of that cut; ([], []) when the cut splits no tie.
    Where it splits one, the order of equal items, not their scores, chose what is kept.
    Means are ranked with ties by rounding (mean_ranking): score them with tied_mean."""
    if count <= 0 or len(ranked) <= count:
        return [], []
    last = score(ranked[count - 1])
    left = [item for item in ranked[count:] if score(item) == last]
    if not left:
        return [], []
    return [item for item in ranked[:count] if score(item) == last], left


def settings_tied_at_cut(settings: list[Setting], count: int, metric: str) -> tuple[list, list]:
    """tied_at_cut of `settings` (ranked best first) by their mean `metric`, means equal
    but for rounding tied as mean_ranking ranked them."""
    return tied_at_cut(settings, count, tied_mean(settings, lambda s: np.mean(s.values(metric))))


def default_by(study) -> str:
    """The groups `agent.repeat` forms without --by: by model where the sweep's runs vary it
    (a model comparison), else by optimizer where they do (an optimizer study: each
    optimizer's best, not the two best runs overall), else by batch size where they try
    each of its values more than once (a batch-size study: each batch size's best lr over
    fresh seeds; a random search that draws a batch size for each run would repeat every
    run), else by model (one group: the best)."""
    varied = set(varying_parameters(study.runs))
    if not every_value_repeated(study.runs, "batch_size"):
        varied.discard("batch_size")
    return next((name for name in ("model", "optimizer", "batch_size") if name in varied),
                "model")


def every_value_repeated(runs: list[RunRecord], name: str) -> bool:
    """Whether every value of the numeric parameter `name` is given to more than one run:
    the levels of a study (a grid's `values`), not a value drawn for each run."""
    counts = Counter(float(r.config[name]) for r in runs
                     if isinstance(r.config.get(name), (int, float)))
    return bool(counts) and min(counts.values()) > 1


def varying_parameters(runs: list[RunRecord]) -> list[str]:
    """Parameters that take more than one value across the runs, in first-seen order."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.config if k not in names and k != "sweep"]
    return [n for n in names
            if len({repr(r.config.get(n)) for r in runs if n in r.config}) > 1]


def numeric_values(values: list) -> np.ndarray | None:
    """Values as numbers (log10 where the figures read them on a log scale:
    sweep_space.log_scaled), or None if any is categorical."""
    if any(isinstance(v, (bool, str, list)) or v is None for v in values):
        return None
    array = np.asarray(values, dtype=float)
    if log_scaled(sorted(set(array.tolist()))):
        array = np.log10(array)
    return array


def correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r, None when either side is constant or there are fewer than 3 points."""
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def importance(runs: list[RunRecord], parameters: list[str], metric: str,
               seed: int = 0) -> list[dict]:
    """Per parameter: Pearson correlation with the metric (numeric parameters, log10 from
    two decades on) and a random forest's impurity importance (categorical ones one-hot
    encoded, summed back), as W&B's importance panel shows them. Needs 4 scored runs."""
    from sklearn.ensemble import RandomForestRegressor

    scored = [r for r in runs if r.metric(metric) is not None]
    if len(scored) < 4 or not parameters:
        return []
    target = np.asarray([r.metric(metric) for r in scored])
    columns, owners, rows = [], [], []
    for name in parameters:
        values = [r.params.get(name) for r in scored]
        numeric = numeric_values(values)
        if numeric is not None:
            columns.append(numeric)
            owners.append(name)
            corr = correlation(numeric, target)
        else:
            for level in sorted({repr(v) for v in values}):
                columns.append(np.asarray([repr(v) == level for v in values], dtype=float))
                owners.append(name)
            corr = None
        rows.append({"parameter": name, "correlation": corr})
    forest = RandomForestRegressor(n_estimators=200, random_state=seed)
    forest.fit(np.stack(columns, axis=1), target)
    for row in rows:
        row["importance"] = float(sum(weight for weight, owner in
                                      zip(forest.feature_importances_, owners)
                                      if owner == row["parameter"]))
    return sorted(rows, key=lambda row: -row["importance"])


def hardest_classes(accuracies: list[float], classes: list[str], count: int = 3) -> list[str]:
    """The `count` classes of lowest accuracy, 'name (12.5%)', lowest first; when more
    classes tie with the last one shown, a last entry says how many (no tied class is picked
    over another unsaid)."""
    order = sorted(range(len(classes)), key=lambda i: accuracies[i])
    shown = [f"{classes[i]} ({accuracies[i]:.1%})" for i in order[:count]]
    if order[count:] and accuracies[order[count]] == accuracies[order[count - 1]]:
        tied = sum(1 for i in order[count:] if accuracies[i] == accuracies[order[count - 1]])
        shown.append(f"and {tied} more at {accuracies[order[count - 1]]:.1%}")
    return shown

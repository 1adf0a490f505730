"""The numbers of a study report, as pure functions of runs and labels: baselines, confidence
intervals, the convergence rule, hyper-parameter importance, hardest classes."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from agent.report.study import RunRecord

CONVERGENCE_RULE = ("a run is **divergent** when its loss went non-finite (the trial stopped it "
                    "and flagged `diverged`), or when its last validation loss is above its "
                    "first; every other run with a validation loss is **convergent**")


def baselines(train_labels: list[int], test_labels: list[int], classes: int,
              seed: int = 0) -> dict[str, float]:
    """Accuracy on the real test set of a random model (uniform guesses, seeded) and of a
    majority-class model (the training set's most frequent class)."""
    test = np.asarray(test_labels)
    guesses = np.random.default_rng(seed).integers(0, classes, size=len(test))
    majority = Counter(train_labels).most_common(1)[0][0]
    return {"random": float((guesses == test).mean()),
            "majority": float((test == majority).mean()),
            "majority_class": int(majority)}


def t_interval(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, half-width of the 95% t-interval (None for n < 2), n."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, None, n
    half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, half, n


def is_divergent(run: RunRecord) -> bool | None:
    """The CONVERGENCE_RULE; None when the run has no validation loss to judge by."""
    if run.summary.get("diverged"):
        return True
    losses = [row["val/loss"] for row in run.history if "val/loss" in row]
    if not losses:
        return None
    if not all(math.isfinite(v) for v in losses):
        return True
    return losses[-1] > losses[0]


def best_per_group(runs: list[RunRecord], by: str, count: int) -> dict[str, list[RunRecord]]:
    """The first `count` runs (already best first) for each value of the parameter `by`."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        bucket = groups.setdefault(str(run.params.get(by)), [])
        if len(bucket) < count:
            bucket.append(run)
    return groups


def varying_parameters(runs: list[RunRecord]) -> list[str]:
    """Parameters that take more than one value across the runs, in first-seen order."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.config if k not in names and k != "sweep"]
    return [n for n in names
            if len({repr(r.config.get(n)) for r in runs if n in r.config}) > 1]


def _numeric(values: list) -> np.ndarray | None:
    """Values as numbers (log10 where they span more than two decades), or None if any
    is categorical."""
    if any(isinstance(v, (bool, str, list)) or v is None for v in values):
        return None
    array = np.asarray(values, dtype=float)
    if (array > 0).all() and array.max() / array.min() > 100:
        array = np.log10(array)
    return array


def importance(runs: list[RunRecord], parameters: list[str], metric: str,
               seed: int = 0) -> list[dict]:
    """Per parameter: Pearson correlation with the metric (numeric parameters) and a random
    forest's impurity importance (categorical ones one-hot encoded, summed back), as W&B's
    importance panel shows them. Needs at least 4 scored runs."""
    from sklearn.ensemble import RandomForestRegressor

    scored = [r for r in runs if r.metric(metric) is not None]
    if len(scored) < 4 or not parameters:
        return []
    target = np.asarray([r.metric(metric) for r in scored])
    columns, owners, rows = [], [], []
    for name in parameters:
        values = [r.params.get(name) for r in scored]
        numeric = _numeric(values)
        if numeric is not None:
            columns.append(numeric)
            owners.append(name)
            corr = (float(np.corrcoef(numeric, target)[0, 1])
                    if numeric.std() > 0 and target.std() > 0 else None)
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
    order = sorted(range(len(classes)), key=lambda i: accuracies[i])
    return [f"{classes[i]} ({accuracies[i]:.1%})" for i in order[:count]]

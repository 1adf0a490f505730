"""How often a sweep's runs draw values that a rule between parameters refuses (agent/params.py
RULES: nesterov needs sgd with momentum > 0, kernel_size is odd), as W&B's engine draws them.

Each swept parameter a rule reads is a list of cells, each a value the trial takes alone with
its probability: a listed value 1/n (by its probabilities for categorical_w_probabilities in a
random search), a grid point 1/n (every point of a grid runs, once: listed twice, or 1 and
1.0, it is one point, sweeps/grid_search.py; a grid whose run_cap is below its size runs its
first run_cap points only, each read by refused_points), a point of an int_uniform or q_
lattice its mass (draw_mass.atom_masses), and a continuous draw (or a lattice of more than
ENUMERATE_LIMIT points) CELLS equal shares of u, the quantile level at which the engine's ppf
draws (sweeps/params.py HyperParameter.ppf; u uniform for random search, the unit cube its
Gaussian process searches for bayes), each read at its middle. Values a parameter refuses alone
are left out: the range check judges them (agent/sweep/config.py _judge_draws_outside). The rule
is read on every combination of cells, its share the product of theirs (the engine draws each
parameter apart). Where a continuous draw's verdict changes between neighbouring cells, or
between a cell and the end of the values the parameter takes, the change is found by bisection
on u through the engine's own ppf: an interval of refused values counts its measure, and a
single value its own, 0 (momentum=0.0, the end of uniform [0, 0.99]). A refused interval
narrower than a cell and between two middles that pass is missed: no rule has one (the refused
values of each are an end of a range, or whole numbers, which are lattice points).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.params import BY_NAME, Param, coerce
from agent.sweep.draw_mass import JUDGED, atom_masses, outside, quantum
from agent.sweep.engine import as_type, draws, yaml_hash
from util.errors import UserError

CELLS = 64  # shares of u a continuous draw is read at (its verdict's changes are bisected)
# The most combinations of cells read for one rule (a microsecond each): nesterov's four
# parameters with 2 x 8 x 7 values and a lattice of 1000 momenta are 112,000. Beyond, the
# largest list is thinned to every few of its values, and the probability is `estimated`.
COMBINATION_LIMIT = 200_000
BISECTIONS = 400  # the most verdict changes located by bisection; beyond, `estimated`
STEPS = 64  # halvings of a cell per bisection: 2**-64 of its share of u
SKIP = object()  # a value the parameter refuses alone (the range check's)


@dataclass(frozen=True)
class Marginal:
    """One swept parameter's draws the trial takes alone: `values` (typed as the trial holds
    them, SKIP where refused alone) with their probabilities (`masses`); for a continuous
    draw, each cell's share of u (`spans`) and the typed value the engine draws at a u
    (`at`); `estimated` where the masses are a part of a sparse lattice's."""

    values: list
    masses: list[float]
    spans: list[tuple[float, float]] | None = None
    at: Callable[[float], Any] | None = None
    estimated: bool = False


@dataclass(frozen=True)
class Refused:
    """What a rule refuses of a sweep's draws: the `probability` that a run draws it, the
    combination of the most probability (`example`, {name: typed value}) and the rule's
    line for it (`error`); `estimated` where cells were thinned or a bisection skipped."""

    probability: float
    example: dict
    error: str
    estimated: bool = False


def typed(param: Param, value: Any) -> Any:
    """`value` as the engine hands it, as the trial holds it (agent/params.py validate: a
    null is the default), or SKIP where the trial refuses it alone."""
    value = as_type(value, param.type, param.item_type)
    if value is None:
        return list(param.default) if param.type is list else param.default
    try:
        return coerce(param, value)
    except (UserError, OverflowError, ValueError, TypeError):
        return SKIP


def marginal(name: str, spec: dict, method: str) -> Marginal | None:
    """The cells of parameter `name`'s filled `spec` under `method`; None for a fixed value
    (part of the base) or a spec no cell reads (the engine refuses it in a grid)."""
    param = BY_NAME[name]
    if "value" in spec:
        return None
    if "values" in spec or method == "grid":
        listed = _grid_values(spec) if "values" not in spec else spec["values"]
        if listed is None:
            return None
        if method == "grid":  # the engine's grid runs each point once: 1 and 1.0 are one
            points: dict[str, Any] = {}
            for value in listed:  # the last value of a point, as grid_search.py keeps it
                points[yaml_hash(value)] = value
            listed = list(points.values())
        weights = spec.get("probabilities") if method != "grid" else None
        weights = weights or [1.0] * len(listed)
        total = float(sum(weights))
        return _merged([typed(param, v) for v in listed], [w / total for w in weights])
    if spec.get("distribution") not in JUDGED:
        return None
    found = outside(name, spec)
    if found.inside is None:
        return Marginal([], [])
    if found.inside.values is not None and quantum(spec) is not None:
        values = list(found.inside.values)
        masses = atom_masses(spec, values)
        short = abs(sum(masses) - (1 - found.probability)) > 1e-9
        return _merged([typed(param, v) for v in values], masses,
                       estimated=found.estimated or short)
    return _stretch(name, spec, found.taken or (0.0, 1.0))


def _merged(values: list, masses: list[float], estimated: bool = False) -> Marginal:
    """One cell per value the trial holds, with the masses of those that give it summed (in
    the order each first comes): a list repeating its values (`[sgd, sgd, adam]`, weights
    written as repeats) stays as short as its distinct values, so that its combinations are
    read whole; _within_limit thinned it by position, each kept value standing for its
    neighbours, which a list alternating its values does not have."""
    merged: dict[Any, list] = {}  # by type and repr: a list value (channels) is unhashable
    for value, mass in zip(values, masses):
        key = value if value is SKIP else (type(value), repr(value))
        merged.setdefault(key, [value, 0.0])[1] += mass
    return Marginal([value for value, _ in merged.values()],
                    [mass for _, mass in merged.values()], estimated=estimated)


def _grid_values(spec: dict) -> list | None:
    """A grid's values of a distribution over a range, as the engine's grid takes them."""
    listed = draws(spec, "grid").values
    if listed is None and spec.get("distribution") == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))  # at most GRID_LIMIT: checked first
    return None if listed is None else list(listed)


def _stretch(name: str, spec: dict, taken: tuple[float, float]) -> Marginal:
    """A continuous draw (or a lattice too large to list) over the u in `taken`: CELLS
    equal shares, each read at its middle through the engine's own ppf."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps.params import HyperParameter
    engine, param = HyperParameter(name, dict(spec)), BY_NAME[name]

    def values_at(us: list[float]) -> list:
        with np.errstate(all="ignore"):
            drawn = np.atleast_1d(np.asarray(engine.ppf(np.array(us, dtype=float))))
        return [typed(param, value) for value in drawn.tolist()]

    low, high = taken
    edges = [low + (high - low) * i / CELLS for i in range(CELLS)] + [high]
    spans = list(zip(edges[:-1], edges[1:]))
    middles = [(a + b) / 2 for a, b in spans]
    return Marginal(values_at(middles), [b - a for a, b in spans], spans=spans,
                    at=lambda u: values_at([u])[0])


def refused_share(rule: Callable[[dict], None], base: dict, group: list[str],
                  marginals: dict[str, Marginal]) -> Refused | None:
    """The share of draws of the parameters `group` (each drawn apart, by its marginal) that
    `rule` refuses, the others at `base` (a validated config): None where it refuses none."""
    cells = [marginals[name] for name in group]
    cells, thinned = _within_limit(cells)
    verdicts: dict[tuple, str | None] = {}
    total, best = 0.0, (-1.0, None, "")
    for index in itertools.product(*(range(len(m.values)) for m in cells)):
        values = [m.values[i] for m, i in zip(cells, index)]
        if any(value is SKIP for value in values):
            continue
        error = verdicts[index] = _verdict(rule, base, group, values)
        if error is not None:
            mass = math.prod(m.masses[i] for m, i in zip(cells, index))
            total += mass
            if mass > best[0]:
                best = (mass, dict(zip(group, values)), error)
    refined, example, skipped = _refine(rule, base, group, cells, verdicts)
    if best[1] is None and example is not None:
        best = (0.0, *example)
    if best[1] is None:
        return None
    probability = min(1.0, max(0.0, total + refined))
    estimated = thinned or skipped or any(m.estimated for m in cells)
    return Refused(probability, best[1], best[2], estimated)


def refused_points(rule: Callable[[dict], None], base: dict, group: list[str],
                   points: list[dict]) -> Refused | None:
    """The share of `points` (the runs a grid makes where its run_cap is below its size, each
    {name: value typed as the trial holds it}) whose values of `group` `rule` refuses over
    `base`, with the combination refused in most of them; None where it refuses none. Such
    runs are the grid's first run_cap points, not a product of each parameter's values, so
    each point is read rather than the parameters' shares multiplied."""
    refused: dict[str, list] = {}  # by repr: a list value (channels) is unhashable
    for point in points:
        values = [point[name] for name in group]
        if any(value is SKIP for value in values):
            continue  # refused alone: the check of each value alone judged it
        error = _verdict(rule, base, group, values)
        if error is not None:
            refused.setdefault(repr(values), [0, dict(zip(group, values)), error])[0] += 1
    if not refused:
        return None
    _, example, error = max(refused.values(), key=lambda entry: entry[0])
    return Refused(sum(entry[0] for entry in refused.values()) / len(points), example, error)


def _verdict(rule: Callable[[dict], None], base: dict, group: list[str],
             values: list) -> str | None:
    """The rule's line for `values` of `group` over `base`, None where it takes them."""
    config = {**base, **dict(zip(group, values))}
    try:
        rule(config)
    except UserError as error:
        return str(error)
    return None


def _within_limit(cells: list[Marginal]) -> tuple[list[Marginal], bool]:
    """`cells` with the longest list of values thinned (its ends kept, each kept value
    carrying the mass of those it stands for) until their combinations are at most
    COMBINATION_LIMIT; whether any was."""
    thinned = False
    while math.prod(len(m.values) for m in cells) > COMBINATION_LIMIT:
        longest = max(range(len(cells)), key=lambda i: len(cells[i].values))
        m = cells[longest]
        keep = max(2, len(m.values) // 2)
        picks = sorted(set(np.linspace(0, len(m.values) - 1, keep).round().astype(int)))
        masses = [0.0] * len(picks)
        for i, mass in enumerate(m.masses):  # each value's mass to its nearest pick
            masses[min(range(len(picks)), key=lambda j: abs(picks[j] - i))] += mass
        cells[longest] = Marginal([m.values[i] for i in picks], masses, estimated=True)
        thinned = True
    return cells, thinned


def _refine(rule, base, group, cells, verdicts) -> tuple[float, tuple | None, bool]:
    """The correction to the refused share where a continuous draw's verdict changes within
    its cells (bisected on u), a refused (example, line) found there, and whether a change
    was left unbisected (more than BISECTIONS)."""
    correction, example, budget = 0.0, None, BISECTIONS
    for d, m in enumerate(cells):
        if m.spans is None:
            continue
        others = [j for j in range(len(cells)) if j != d]
        for rest in itertools.product(*(range(len(cells[j].values)) for j in others)):
            weight = math.prod(cells[j].masses[i] for j, i in zip(others, rest))
            line = [verdicts.get(rest[:d] + (i,) + rest[d:], SKIP)
                    for i in range(len(m.values))]
            if weight == 0 or all(v is SKIP for v in line):
                continue
            held = [cells[j].values[i] for j, i in zip(others, rest)]

            def verdict_at(u: float, held=held, d=d, m=m) -> tuple[dict, Any]:
                value = m.at(u)
                values = dict(zip(group, held[:d] + [value] + held[d:]))
                if value is SKIP:
                    return values, SKIP
                return values, _verdict(rule, base, group, list(values.values()))

            changes = _changes(m, line, verdict_at)
            if len(changes) > budget:
                return correction, example, True
            budget -= len(changes)
            for lo, hi, naive, lo_refused, first in changes:
                t, found = _boundary(lo, hi, lo_refused, verdict_at, first)
                correction += weight * ((t - naive) if lo_refused else (naive - t))
                example = example or found
    return correction, example, False


def _refused(verdict: Any) -> bool:
    return verdict is not SKIP and verdict is not None


def _changes(m: Marginal, line: list, verdict_at) -> list[tuple]:
    """Where the verdict along a continuous draw's cells changes: (lo, hi, the u where the
    cells' count switches, whether lo's verdict is a refusal, lo's or hi's refused (values,
    line)), between neighbouring cells' middles and between each end of the values taken
    and its cell's middle (an end drawn refused: underflow to 0.0, momentum's 0)."""
    middles = [(a + b) / 2 for a, b in m.spans]
    found = []
    for i in range(len(line) - 1):
        if SKIP in (line[i], line[i + 1]) or _refused(line[i]) == _refused(line[i + 1]):
            continue
        found.append((middles[i], middles[i + 1], m.spans[i][1], _refused(line[i]), None))
    for end, i in ((m.spans[0][0], 0), (m.spans[-1][1], len(line) - 1)):
        values, verdict = verdict_at(end)
        if SKIP in (verdict, line[i]) or _refused(verdict) == _refused(line[i]):
            continue
        first = (values, verdict) if _refused(verdict) else None
        if i == 0:
            found.append((end, middles[0], end, _refused(verdict), first))
        else:
            found.append((middles[i], end, end, not _refused(verdict), first))
    return found


def _boundary(lo: float, hi: float, lo_refused: bool, verdict_at,
              first: tuple | None) -> tuple[float, tuple | None]:
    """The u where the verdict changes between lo and hi (lo's a refusal or not), bisected
    STEPS times: the last u known refused, with its (values, line)."""
    found = first
    for _ in range(STEPS):
        middle = (lo + hi) / 2
        if not lo < middle < hi:
            break
        values, verdict = verdict_at(middle)
        if _refused(verdict):
            found = (values, verdict)
        if _refused(verdict) == lo_refused:
            lo = middle
        else:
            hi = middle
    return (lo if lo_refused else hi), found

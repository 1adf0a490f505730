"""Notes on what a q_ distribution's rounding makes of a parameter's draws.

W&B's sweep engine draws q_uniform, q_log_uniform, q_log_uniform_values, q_normal,
q_log_normal and q_beta as round(x / q) * q of the continuous draw x (q 1.0 where the spec
gives none), and a grid takes q_uniform as np.arange(min, max, q). We draw exactly what it
draws; where that rounding is most likely not what was meant, creating the sweep says so in
one line a parameter (a note, not a refusal: W&B runs such a sweep without a word):

- every draw is one value, or 99% of them are (a q as wide as the range it rounds);
- a 0 where the continuous draw is never near 0 (a log scale, lr: q_log_uniform over
  e**-10 to e**-2 with q 0.01 draws 0 in 59% of runs), in at least ZERO_NOTED of the draws;
- a bounded range rounded to its two ends only (q_beta with its default q 1: 0 or 1).

A 0 inside the range a spec gives (q_uniform from -1 to 1, q_normal, q_beta's [0, 1]) is
the quantisation meant, and no note.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.sweep.engine import Rounding, rounding

ZERO_NOTED = 0.001  # the least share of draws at 0 that a note names (1 run in 1000)
ONE_VALUE = 0.99  # the share of draws one value takes from which the range counts as collapsed
HOW = "W&B's engine draws round(x / q) * q"


def rounding_notes(config: dict) -> list[str]:
    """One note per parameter of `config` (an engine-filled sweep config; nested
    parameters too) whose q rounds its draws to 0 where the range has no 0, to one value,
    or to a bounded range's two ends (the module's doc), each starting `note: parameters.`."""
    notes = []
    grid = config.get("method") == "grid"
    for path, name, spec in _specs(config.get("parameters"), "parameters"):
        if grid:  # the grid's q_uniform is np.arange: no rounding (others it refuses)
            note = _grid_note(name, spec)
        else:
            rounded = rounding(name, spec)
            note = _note(name, spec, rounded) if rounded is not None else None
        if note:
            notes.append(f"note: {path}: {note}")
    return notes


def _specs(parameters: Any, within: str):
    """(path, name, spec) of each parameter, nested ones within theirs."""
    if not isinstance(parameters, dict):
        return
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            continue
        path = f"{within}.{name}"
        if "parameters" in spec:
            yield from _specs(spec["parameters"], f"{path}.parameters")
        else:
            yield path, name, spec


def _note(name: str, spec: dict, r: Rounding) -> str | None:
    """The one note `r` is worth, the most telling first, or None."""
    kind, q = spec["distribution"], _number(r.q)
    head = f"{kind} with q={q}"
    width = r.high - r.low
    if r.every and 0 < width < math.inf:  # (min = max asks for one value; unbounded: below)
        return (f"{head} draws {name}={_number(r.common)} every time: {HOW}, and each x it "
                f"draws, {_number(r.low)} to {_number(r.high)}, rounds to it; a q below "
                f"{_below(width)} draws more than one value")
    if r.common_share >= ONE_VALUE:  # not every time: an unbounded draw's far tails
        return (f"{head} draws {name}={_number(r.common)} in "
                f"{_percent(min(r.common_share, 1 - 1e-9))} of its draws: {HOW}, x from "
                f"{_terms(spec)}; a smaller q spreads them")
    if r.zero_is_rounding and r.zero_share >= ZERO_NOTED:
        return (f"{head} draws {name}=0 in {_percent(r.zero_share)} of its draws: {HOW}, "
                f"and {_zero_range(kind, spec, r)}")
    if math.isfinite(width) and 0 < width <= r.q:
        ends = [_number(v) for v in rounding_ends(r)]
        return (f"{head} draws {name} as {ends[0]} or {ends[1]} only: {HOW}, and q is as "
                f"wide as the range it rounds, {_number(r.low)} to {_number(r.high)}; a q "
                f"below {_below(width)} draws more values")
    return None


def rounding_ends(r: Rounding) -> list[float]:
    """The rounded values of a bounded range's two ends (np.round, half to even)."""
    return [float(np.round(end / r.q) * r.q) for end in (r.low, r.high)]


def _zero_range(kind: str, spec: dict, r: Rounding) -> str:
    """Where in the range x is within q/2 of 0 (rounds to 0), and the q that keeps 0 out."""
    within = f"within q/2 = {_number(r.q / 2)} of 0"
    share = _percent(r.zero_share)
    keep_out = f"; a q below {_below(2 * r.low)} keeps 0 out" if r.low > 0 else \
        f"; a q below {_below(-2 * r.high)} keeps 0 out" if r.high < 0 else ""
    if kind == "q_log_uniform":  # the spec's own terms: exponents
        return (f"x = e**u is {within} for u from {_number(spec['min'])} to "
                f"{_number(math.log(r.q / 2))} (of {_number(spec['min'])} to "
                f"{_number(spec['max'])}: {share} of the range in log space){keep_out}")
    if kind in ("q_log_uniform_values", "q_uniform"):
        ends = (r.low, r.q / 2) if r.low > 0 else (-r.q / 2, r.high)
        space = " in log space" if kind == "q_log_uniform_values" else ""
        return (f"x is {within} from {_number(ends[0])} to {_number(ends[1])} (of "
                f"{_number(r.low)} to {_number(r.high)}: {share} of the range{space})"
                f"{keep_out}")
    return f"x ({_terms(spec)}) is {within} in {share} of draws; a smaller q draws fewer 0s"


def _grid_note(name: str, spec: dict) -> str | None:
    """A grid's q_uniform (np.arange(min, max, q), max left out) that tries one value."""
    if spec.get("distribution") != "q_uniform":
        return None
    low, high, q = spec.get("min"), spec.get("max"), spec.get("q", 1.0)
    try:
        values = np.arange(low, high, q).tolist()
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if len(values) != 1 or not high - low > 0:
        return None
    return (f"q_uniform with q={_number(q)} in a grid tries {name}={_number(values[0])} "
            f"only: W&B's grid takes np.arange(min, max, q), max left out; a q below "
            f"{_below(high - low)} adds values")


def _terms(spec: dict) -> str:
    """The distribution's own terms: `log_normal with mu 0, sigma 1`."""
    terms = ", ".join(f"{key} {_number(spec[key])}" for key in ("min", "max", "mu", "sigma",
                                                                  "a", "b") if key in spec)
    return spec["distribution"][2:] + (f" with {terms}" if terms else "")


def _percent(share: float) -> str:
    """A share as a percentage that reads 0% or 100% only when it is."""
    if share in (0.0, 1.0):
        return f"{share * 100:.0f}%"
    p = share * 100
    text = f"{p:.2g}" if p < 10 else f"{p:.0f}" if p < 99 else f"{p:.2f}".rstrip("0")
    text = text.rstrip(".")
    if float(text) >= 100:
        return "over 99.99%"
    return f"{text}%"


def _number(value: float) -> str:
    """A number as the note shows it: an integer as one, else 3 significant digits."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}"


def _below(bound: float) -> str:
    """A number under `bound` (> 0) at 2 significant digits, rounded down: a q written as
    shown is below the bound, where 3 digits rounded up could reach it."""
    unit = 10 ** (math.floor(math.log10(bound)) - 1)
    value = math.floor(bound / unit) * unit
    if value >= bound:  # bound had 2 digits: the next smaller number
        value -= unit
    return f"{value:.2g}"

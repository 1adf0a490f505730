"""How much of a sweep distribution's draws our trainer refuses, in closed form.

W&B's engine draws a parameter as its distribution's quantile function at u
(sweeps/params.py HyperParameter.ppf; u uniform on [0, 1) for random search, a point of the
unit cube its Gaussian process searches for bayes), and a q_ distribution rounds that draw to
np.round(x / q) * q (integers when q is an int). The trainer refuses a value outside the
parameter's range (agent/params.py). `outside` gives the probability of such a draw from the
distribution's cdf (scipy.stats, in the engine's own parametrisation), with q's multiples taken
as the engine computes them, and what the draws the trainer takes span.

The engine's own HyperParameter.cdf is not used for these probabilities: it takes the value,
so for a log form it cannot tell the draws that underflow to 0.0 (e**u, u below -745.13: a
value lr refuses) from those that give 5e-324 (u up to -744.44: a value lr takes); it has no
sf, and 1 - cdf loses an upper tail below 1e-16. tests/test_draw_mass.py checks that the two
agree wherever the engine's cdf is defined; the values the rule check reads are the engine's
own ppf's (agent/sweep/rule_mass.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats as stats

from agent.params import BY_NAME, Param, coerce
from agent.sweep.engine import ENUMERATE_LIMIT, Draws, as_type
from util.errors import UserError

# exp(u) is 0.0 in float64 below this (half the smallest subnormal, 2**-1075): a log
# distribution's draw of e**-800 is the value 0, which a parameter > 0 refuses
UNDERFLOW = -1075 * math.log(2)
# The most multiples of q an integer parameter's non-whole q is summed over (outside: an
# integer parameter takes only q's multiples that are whole numbers)
LATTICE_LIMIT = 10_000
# The distributions a random or bayes search draws from a range: `outside` judges these;
# `values` and `value` are each checked as written (agent/sweep/config.py)
LINEAR = ("uniform", "q_uniform", "normal", "q_normal", "beta", "q_beta", "int_uniform")
LOG = ("log_uniform", "q_log_uniform", "inv_log_uniform", "log_uniform_values",
       "q_log_uniform_values", "inv_log_uniform_values", "log_normal", "q_log_normal")
JUDGED = LINEAR + LOG


@dataclass(frozen=True)
class Variable:
    """The engine's draw before q-rounding: `dist`, a frozen scipy distribution, of the value
    itself, or (`log`) of its natural log, the value being e to it (0.0 where that
    underflows, inf where it overflows)."""

    dist: Any
    log: bool = False

    def below(self, x: float, inclusive: bool = False) -> float:
        """P(value < x), or P(value <= x) when `inclusive`."""
        if not self.log:
            return float(self.dist.cdf(x))
        if x > 0:
            return float(self.dist.cdf(math.log(x)))
        return float(self.dist.cdf(UNDERFLOW)) if x == 0 and inclusive else 0.0

    def above(self, x: float, inclusive: bool = False) -> float:
        """P(value > x), or P(value >= x) when `inclusive`."""
        if not self.log:
            return float(self.dist.sf(x))
        if x > 0:
            return float(self.dist.sf(math.log(x)))
        return float(self.dist.sf(UNDERFLOW)) if x == 0 and not inclusive else 1.0

    def below_many(self, xs: np.ndarray) -> np.ndarray:
        """below(x) of each x of an array (not inclusive)."""
        if not self.log:
            return self.dist.cdf(xs)
        positive = xs > 0
        return np.where(positive, self.dist.cdf(np.log(np.where(positive, xs, 1.0))), 0.0)

    def quantile(self, p: float, upper: bool = False) -> float:
        """The value drawn at u = p (`upper`: at u = 1 - p, exact for a tiny p)."""
        value = float(self.dist.isf(p) if upper else self.dist.ppf(p))
        return float(np.exp(value)) if self.log else value

    def support(self) -> tuple[float, float]:
        """The smallest and largest value drawn (int_uniform's min and max, not scipy's
        ppf(0) of a discrete distribution, min - 1)."""
        low, high = (float(end) for end in self.dist.support())
        return (float(np.exp(low)), float(np.exp(high))) if self.log else (low, high)

    def reach(self) -> tuple[float, float]:
        """The support's ends, where it has ends; a normal's (or a log-normal's) 1e-12 and
        1 - 1e-12 quantiles, past which a run's draw lands about once in 10**12: the
        values checked as drawn (rules between parameters) stay where draws land."""
        low, high = self.support()
        bounded = [math.isfinite(float(end)) for end in self.dist.support()]
        return (low if bounded[0] else self.quantile(1e-12),
                high if bounded[1] else self.quantile(1e-12, upper=True))


def variable(spec: dict) -> Variable:
    """The engine's draw of the filled `spec` before q-rounding, as HyperParameter.ppf makes
    it: e.g. inv_log_uniform_values over [min, max] is e**-u, -u uniform over
    [log min, log max]; int_uniform is scipy's randint(min, max + 1)."""
    d, low, high = spec["distribution"], spec.get("min"), spec.get("max")
    if d in ("uniform", "q_uniform"):
        return Variable(stats.uniform(low, high - low))
    if d == "int_uniform":
        return Variable(stats.randint(low, high + 1))
    if d in ("normal", "q_normal"):
        return Variable(stats.norm(spec["mu"], spec["sigma"]))
    if d in ("beta", "q_beta"):
        return Variable(stats.beta(spec["a"], spec["b"]))
    if d in ("log_normal", "q_log_normal"):  # lognorm(s=sigma, scale=e**mu): log is normal
        return Variable(stats.norm(spec["mu"], spec["sigma"]), log=True)
    if d in ("log_uniform", "q_log_uniform"):  # min and max are the exponents
        return Variable(stats.uniform(low, high - low), log=True)
    if d == "inv_log_uniform":  # e**-u for u in [min, max]
        return Variable(stats.uniform(-high, high - low), log=True)
    if d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
        return Variable(stats.uniform(math.log(low), math.log(high) - math.log(low)), log=True)
    raise ValueError(f"not a distribution over a range: {d}")


def quantum(spec: dict) -> int | float | None:
    """The q a distribution's draws are rounded to (1 for int_uniform), None if continuous."""
    if spec["distribution"] == "int_uniform":
        return 1
    return spec.get("q", 1.0) if spec["distribution"].startswith("q_") else None


def lattice_value(k: int, q: int | float) -> int | float:
    """k * q as the engine computes it (np.round(x / q) * q, an int when q is an int)."""
    try:
        number = np.float64(k) * q
    except OverflowError:  # past what a float holds: the engine's inf
        number = np.float64(math.inf if k > 0 else -math.inf)
    return int(number) if isinstance(q, int) and math.isfinite(number) else float(number)


def accepts(param: Param, value: Any) -> bool:
    """Whether our trainer takes `value` (as the engine hands it) for `param`: its type and
    range (agent/params.py coerce); rules between parameters are checked apart."""
    try:
        coerce(param, as_type(value, param.type, param.item_type))
    except (UserError, OverflowError, ValueError):
        return False
    return True


def _takes(param: Param, k: int, q: int | float) -> bool:
    """Whether the trainer takes the engine's k-th multiple of q."""
    try:
        value = lattice_value(k, q)
    except (OverflowError, ValueError):  # past what a float holds
        return False
    return math.isfinite(value) and accepts(param, value)


@dataclass(frozen=True)
class Outside:
    """What a distribution draws that a parameter refuses: the `probability` of such a draw
    (from a part of q's multiples when `estimated`), the distribution in words (`how`), a
    value drawn outside (`example`; None where there is none, or where the parameter takes
    no number), and the draws the trainer takes (`inside`, as engine.draws gives them; None:
    none). Where the values it takes are one stretch of the draws, `taken` is that stretch's
    share of u, the draw's quantile level: (P(refused below), 1 - P(refused above)), the u the
    engine's ppf maps into the range (None where they are not one stretch: a sparse lattice,
    text, names)."""

    probability: float
    how: str
    example: Any = None
    inside: Draws | None = None
    estimated: bool = False
    taken: tuple[float, float] | None = None


def described(spec: dict) -> str:
    """`normal(mu=0.0005, sigma=0.0001)`: a filled spec in words."""
    keys = [k for k in ("min", "max", "mu", "sigma", "a", "b", "q") if k in spec]
    return f"{spec['distribution']}(" + ", ".join(f"{k}={spec[k]!r}" for k in keys) + ")"


def outside(name: str, spec: dict) -> Outside:
    """The draws of the filled `spec` (a distribution over a range, one of JUDGED) that
    parameter `name` refuses, and the probability of one, exact up to float rounding. A
    distribution the engine draws NaN from (sigma 0, a beta's a or b 0, a log_normal whose
    scale e**mu is 0.0) has probability 1 where the parameter refuses NaN."""
    param = BY_NAME[name]
    var, q = variable(spec), quantum(spec)
    how = described(spec)
    with np.errstate(all="ignore"):
        if draws_nan(spec, var):  # a text parameter takes it as "nan"
            return Outside(0.0, how, inside=Draws(how)) if accepts(param, float("nan")) \
                else Outside(1.0, how, example=float("nan"))
        if q is None:
            found = _continuous(param, var, how)
        elif _whole_param(param) and not float(q).is_integer():
            found = _sparse_lattice(param, var, q, how)
        else:
            found = _lattice(param, var, q, how)
    return found


def draws_nan(spec: dict, var: Variable) -> bool:
    """Whether the engine draws NaN from the filled `spec`: no distribution has its
    parameters, or (log_normal, q_log_normal) its scale e**mu, scipy's lognorm scale, is 0.0
    (mu below -745.13), where this model's log scale would draw 0.0."""
    if spec["distribution"] in ("log_normal", "q_log_normal") and math.exp(spec["mu"]) == 0:
        return True
    return math.isnan(var.quantile(0.5))


def _whole_param(param: Param) -> bool:
    return param.type is bool or int in (param.type, param.item_type)


def _continuous(param: Param, var: Variable, how: str) -> Outside:
    """An unrounded draw: never a whole number, so an integer parameter refuses it (and one
    that takes names); a text parameter takes any."""
    if param.allowed_choices() is not None or _whole_param(param):
        return Outside(1.0, how)
    if param.type is str:
        return Outside(0.0, how, inside=Draws(how))
    low = -math.inf if param.minimum is None else float(param.minimum)
    high = math.inf if param.maximum is None else float(param.maximum)
    below = var.below(low, inclusive=param.exclusive_minimum)
    above = var.above(high, inclusive=param.exclusive_maximum)
    example = var.quantile(below / 2) if below > 0 else \
        var.quantile(above / 2, upper=True) if above > 0 else None
    first = math.nextafter(low, math.inf) if param.exclusive_minimum else low
    last = math.nextafter(high, -math.inf) if param.exclusive_maximum else high
    start, end = max(first, var.reach()[0]), min(last, var.reach()[1])
    return Outside(below + above, how, example=example,
                   inside=Draws(how, low=start, high=end) if start <= end else None,
                   taken=(below, 1 - above) if start <= end else None)


def _lattice(param: Param, var: Variable, q: int | float, how: str) -> Outside:
    """Draws rounded to q's multiples, of which the parameter takes one run k = a..b (a
    float parameter, or an integer one with a whole q): the probability is that of the
    unrounded draw below (a - 1/2) q or above (b + 1/2) q."""
    start = _accepted_start(param, var, q)
    if start is None:
        return Outside(1.0, how)
    a, b = _edge(param, q, start, -1), _edge(param, q, start, 1)
    below = var.below((a - 0.5) * q) if a is not None else 0.0
    above = var.above((b + 0.5) * q) if b is not None else 0.0
    example = lattice_value(a - 1, q) if below > 0 else \
        lattice_value(b + 1, q) if above > 0 else None
    inside = _lattice_draws(how, var, q, a, b)
    return Outside(below + above, how, example=example, inside=inside,
                   taken=(below, 1 - above) if inside is not None else None)


def _accepted_start(param: Param, var: Variable, q: int | float) -> int | None:
    """A multiple k of q whose value the parameter takes: near the draw's median, its
    ends, 0 or 1; None if none is (then none is: a range between two multiples of q)."""
    seeds = [0, 1]
    for x in (var.quantile(0.5), *var.support(), var.quantile(1e-9),
              var.quantile(1e-9, upper=True)):
        if math.isfinite(x) and abs(x / q) < 2**62:
            k = int(np.round(x / q))
            seeds += [k - 1, k, k + 1]
    return next((k for k in seeds if _takes(param, k, q)), None)


def _edge(param: Param, q: int | float, start: int, step: int) -> int | None:
    """The last k from `start` in direction `step` (+1, -1) whose multiple the parameter
    takes (those taken form one run); None when none is refused before q's multiples pass
    what a float holds (a text parameter takes any number)."""
    reach = 1
    while _takes(param, start + step * reach, q):
        reach *= 2
        if reach > 2**1100:
            return None
    good, bad = start + step * (reach // 2), start + step * reach
    while abs(bad - good) > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if _takes(param, middle, q) else (good, middle)
    return good


def _lattice_draws(how: str, var: Variable, q, a: int | None, b: int | None) -> Draws | None:
    """The rounded draws the parameter takes: k from a to b, narrowed to where the
    distribution draws at all; every value when there are few."""
    ends = [int(np.round(x / q)) if math.isfinite(x) and abs(x / q) < 2**62 else None
            for x in var.reach()]
    lo = ends[0] if a is None else a if ends[0] is None else max(a, ends[0])
    hi = ends[1] if b is None else b if ends[1] is None else min(b, ends[1])
    if lo is not None and hi is not None:
        if lo > hi:
            return None
        if hi - lo < ENUMERATE_LIMIT:
            return Draws(how, values=tuple(lattice_value(k, q) for k in range(lo, hi + 1)))
    return Draws(how, low=-math.inf if lo is None else lattice_value(lo, q),
                 high=math.inf if hi is None else lattice_value(hi, q),
                 whole=float(q).is_integer(), step=q)


def _sparse_lattice(param: Param, var: Variable, q: float, how: str) -> Outside:
    """An integer parameter with a non-whole q (0.5): it takes only the multiples of q that
    are whole numbers in its range. Summed over the multiples where the draw has all but
    2e-12 of its mass; past LATTICE_LIMIT of them (a tiny q), `estimated` from the draws at
    LATTICE_LIMIT values of u (_sampled_lattice: within about 1 / LATTICE_LIMIT)."""
    ends = [var.quantile(1e-12), var.quantile(1e-12, upper=True)]
    first, last = (round(x / q) if math.isfinite(x / q) else None for x in ends)
    if first is None or last is None or last - first > LATTICE_LIMIT:
        return _sampled_lattice(param, var, q, how)
    ks = np.arange(first, last + 1)
    mass = np.clip(var.below_many((ks + 0.5) * q) - var.below_many((ks - 0.5) * q), 0, 1)
    taken = np.array([_takes(param, int(k), q) for k in ks])
    probability = float(mass[~taken].sum()) + \
        (0.0 if taken[0] else var.below((first - 0.5) * q)) + \
        (0.0 if taken[-1] else var.above((last + 0.5) * q))  # the two 1e-12 tails
    bad = ~taken & (mass > 0)
    example = lattice_value(int(ks[bad][np.argmax(mass[bad])]), q) if bad.any() else None
    values = [lattice_value(int(k), q) for k in ks[taken & (mass > 0)]]
    return Outside(min(1.0, probability), how, example=example,
                   inside=Draws(how, values=_spread(values)) if values else None)


def _sampled_lattice(param: Param, var: Variable, q: float, how: str) -> Outside:
    """_sparse_lattice's estimate: the share refused of the rounded draws at LATTICE_LIMIT
    values of u spread over [0, 1) by the golden ratio (evenly spaced ones alias with the
    multiples of q: u = (i + 1/2) / 10000 over [0, 100000] in steps of 0.5 hit only whole
    numbers)."""
    us = (0.5 + np.arange(LATTICE_LIMIT) * 0.6180339887498949) % 1.0
    xs = np.exp(var.dist.ppf(us)) if var.log else var.dist.ppf(us)
    ks = [round(x / q) if math.isfinite(x / q) else None for x in xs]
    taken = [k is not None and _takes(param, k, q) for k in ks]
    refused = [k for k, t in zip(ks, taken) if not t and k is not None]
    values = sorted({lattice_value(k, q) for k, t in zip(ks, taken) if t})
    return Outside(1 - sum(taken) / len(ks), how,
                   example=lattice_value(refused[len(refused) // 2], q) if refused else None,
                   inside=Draws(how, values=_spread(values)) if values else None,
                   estimated=True)


def _spread(values: list) -> tuple:
    """At most ENUMERATE_LIMIT of `values`: an even spread of them and the last."""
    if len(values) > ENUMERATE_LIMIT:
        values = values[::len(values) // ENUMERATE_LIMIT + 1] + values[-1:]
    return tuple(values)


def listed_outside(name: str, spec: dict) -> float:
    """The probability that a `values` spec (categorical, or categorical_w_probabilities by
    its probabilities) or a `value` draws a value parameter `name` refuses."""
    param = BY_NAME[name]
    if "value" in spec:
        return 0.0 if accepts(param, spec["value"]) else 1.0
    values = spec["values"]
    weights = spec.get("probabilities") or [1.0] * len(values)
    return sum(w for v, w in zip(values, weights) if not accepts(param, v)) / float(sum(weights))


def atom_masses(spec: dict, values: list) -> list[float]:
    """The probability of each of `values`, multiples of the q of the filled lattice `spec`
    (int_uniform or a q_ distribution) as the engine rounds its draws to them: the mass of
    the unrounded draw within half a q of each."""
    var, q = variable(spec), quantum(spec)
    ks = np.array([float(np.round(float(v) / q)) for v in values])
    with np.errstate(all="ignore"):
        mass = var.below_many((ks + 0.5) * q) - var.below_many((ks - 0.5) * q)
    return [float(m) for m in np.clip(np.nan_to_num(mass), 0.0, 1.0)]

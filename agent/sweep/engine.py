"""The one boundary to W&B's sweep engine (the `sweeps` package that `wandb[sweeps]` installs).

Everything asked of the engine goes through here: the next configuration (`sweeps.next_run`),
which running runs to stop (`sweeps.stop_runs`) and what a distribution can draw. What the
engine hands back becomes plain Python values of each parameter's type before anything stores,
validates or trains it; any exception of the engine becomes one EngineError line.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from util.errors import UserError

# The engine's pydantic settings trigger a warning on import and use; it is harmless.
warnings.filterwarnings("ignore", message="Valid config keys have changed", category=UserWarning)
import sweeps  # noqa: E402

ENGINE_STATES = {
    "pending": sweeps.RunState.pending, "running": sweeps.RunState.running,
    "finished": sweeps.RunState.finished, "stopped": sweeps.RunState.finished,
    "failed": sweeps.RunState.failed, "crashed": sweeps.RunState.crashed,
    "preempted": sweeps.RunState.preempted,
}
ENUMERATE_LIMIT = 1000  # a distribution with at most this many values is checked value by value
# The most points a grid may have. The engine lists every point of a grid at each proposal
# (sweeps/grid_search.py: itertools.product into a list, int_uniform as list(range(...))), so
# a grid's size must be known, and bounded, before anything asks the engine about it.
GRID_LIMIT = 100_000


class EngineError(UserError):
    """The sweep engine failed on this sweep (an exception of any type), as one line."""


def run_field(run: Any, name: str) -> Any:
    """One field of a stored run (id, state, config, history, summary), whether the store
    hands out dicts or typed runs."""
    return run[name] if isinstance(run, dict) else getattr(run, name)


# --- plain values ----------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """numpy scalars and arrays, and tuples, as plain Python values (recursively)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [plain(item) for item in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def as_type(value: Any, kind: type | None, item_type: type | None = None) -> Any:
    """A value from the engine as a plain value of the parameter's type, where that is exact:
    64.0 -> 64 (int), 1 or 1.0 -> True (bool), 3 -> 3.0 (float), 0.5 -> '0.5' (str), 32 -> [32]
    (list), and text as the trainer's parser reads it (_text_as): '64' -> 64 (int), '1e-3' ->
    0.001 (float), 'no' -> False (bool), '8,16' -> [8, 16] (list). Anything else is returned
    plain and unchanged, for validation to refuse."""
    value = plain(value)
    if value is None or kind is None:
        return value
    if isinstance(value, str) and kind in (bool, int, float, list):
        read = _text_as(value, kind)  # `"64"`, YAML 1.1's `1e-3`, `"8,16"`: as the trainer reads
        value = value if read is None else read
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is list:
        items = value if isinstance(value, list) else [value]
        return [as_type(item, item_type) for item in items]
    if kind is bool and number and value in (0, 1):
        return bool(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and number:
        return str(value)
    return value


def _text_as(text: str, kind: type) -> Any:
    """`text` as our trainer's parser reads it for a parameter of `kind` (agent/params.py
    coerce: a boolean's true/false words, an integer's exact or whole-number text, a number's
    float text, a list's `[a, b]` or `a,b`), or None where the parser would refuse it. A sweep
    value written as text (`"64"`, `1e-3`, which YAML 1.1 reads as text) means that value on W&B,
    where the trainer reads it from the command line and wandb.config: it is stored, shown and
    reported as that value, never as text."""
    from agent.params import FALSE_WORDS, TRUE_WORDS
    from agent.yaml_file import load_text
    from util.errors import finite_number

    stripped = text.strip()
    if kind is bool:
        word = stripped.lower()
        return word in TRUE_WORDS if word in TRUE_WORDS | FALSE_WORDS else None
    if kind is int:
        try:
            return int(stripped)
        except ValueError:
            number = finite_number(stripped)
            return int(number) if number is not None and number.is_integer() else None
    if kind is float:
        return finite_number(stripped)
    try:
        items = load_text(stripped if stripped.startswith("[") else f"[{stripped}]", "text")
    except UserError:
        return None
    return items if isinstance(items, list) else None


def value_types(sweep_config: dict) -> dict[str, tuple[type, type | None]]:
    """{name: (type, item type)} of the parameters, when the sweep runs our trainer; {} for
    another program, whose values keep the engine's own types. Made once per sweep config
    (reading the command through wandb's macros took ~15 ms a proposal)."""
    return _once("types", sweep_config, _value_types)


def _value_types(sweep_config: dict) -> dict[str, tuple[type, type | None]]:
    from agent.params import BY_NAME
    from agent.sweep.program import runs_our_trainer

    if not runs_our_trainer(sweep_config):
        return {}
    return {name: (BY_NAME[name].type, BY_NAME[name].item_type)
            for name in sweep_config.get("parameters", {}) if name in BY_NAME}


# --- what the engine sees of our runs, and what it proposes ----------------------------------

class _EngineView:
    """Stored runs as the engine sees them, and its proposals read back, for one sweep.

    Grid recognises a finished point by hashing its YAML: a value stored as 64 (int) must be
    shown as the engine's own 64.0, True as its 1. Bayes gives the Gaussian process index 0 for
    every falsy categorical value (sweeps/params.py normalize_runs_as_array skips `not _val`),
    so False, 0 and '' teach it nothing: categorical values are handed to bayes as the tokens
    1..n instead, all truthy, and proposals are mapped back.
    """

    def __init__(self, sweep_config: dict):
        self.config = copy.deepcopy(sweep_config)
        self.choices: dict[str, list] = {}  # the engine's own values of discrete parameters
        self.tokens: set[str] = set()
        self.drawn: set[str] = set()  # parameters drawn from a distribution
        method = sweep_config.get("method")
        self.types = value_types(sweep_config)
        for name, spec in self.config.get("parameters", {}).items():
            if "value" not in spec and "values" not in spec:
                self.drawn.add(name)
            distribution = spec.get("distribution", "categorical" if "values" in spec else None)
            if distribution == "categorical" and "values" in spec:
                self.choices[name] = list(spec["values"])
                if method == "bayes":
                    spec["values"] = list(range(1, len(spec["values"]) + 1))
                    self.tokens.add(name)
            elif method == "grid" and distribution == "int_uniform":
                self.choices[name] = list(range(spec["min"], spec["max"] + 1))
            elif method == "grid" and distribution == "q_uniform":  # as grid_search.py builds it
                self.choices[name] = np.arange(spec["min"], spec["max"], spec["q"]).tolist()
        # the choices as the trainer reads them and the store holds them (as_type): `"64"`
        # as 64
        self.read: dict[str, list] = {
            name: [as_type(v, *self.types.get(name, (None, None))) for v in values]
            for name, values in self.choices.items()}
        # a grid's choices as the engine's points (1 and 1.0 are one point: its yaml_hash),
        # for engine_runs
        self.points: dict[str, list[str]] = {
            name: [yaml_hash(v) for v in values] for name, values in self.choices.items()
        } if method == "grid" else {}

    def encode(self, name: str, value: Any) -> Any:
        # as_type made the engine's 32 the list parameter's [32]: the engine knows it as 32
        forms = [value, value[0]] if isinstance(value, list) and len(value) == 1 else [value]
        if name in self.drawn:
            forms = forms[-1:]
        if name not in self.choices:
            return forms[0]
        index = None
        for choices in (self.choices[name], self.read[name]):  # as written, then as stored
            for form in forms:
                index = _index_of(choices, form)
                if index is not None:
                    break
            if index is not None:
                break
        if name in self.tokens:
            return None if index is None else index + 1
        return forms[0] if index is None else self.choices[name][index]

    def decode(self, name: str, value: Any) -> Any:
        if name in self.tokens:
            return self.choices[name][int(value) - 1]
        return value

    def engine_runs(self, runs: list) -> list[sweeps.SweepRun]:
        """The stored runs as the engine sees them. In a grid, two values that the trainer
        reads as one (`true` and `1` of a boolean, `[16, 32]` and `[16.0, 32]` of a list of
        ints) are two grid points to the engine, as on W&B, but are stored alike: each run
        is shown as a point not yet taken by an earlier run that reads the same, so the grid
        moves on to its later points and ends (else it would propose the same point again)."""
        engine = [engine_run(run, self.encode) for run in runs]
        if not self.points:  # not a grid, or a grid of constants
            return engine
        taken: set[tuple] = set()
        for run, seen in zip(runs, engine):
            config = run_field(run, "config")
            present = [name for name in self.points if name in config]
            options = [_one_per_point(_indices_of(self.read[name], config[name]),
                                      self.points[name]) for name in present]
            if not all(options):
                continue  # a value no choice reads as (the engine ignores it alike)
            point = next((p for p in itertools.product(*options) if p not in taken),
                         tuple(option[0] for option in options))
            taken.add(point)
            for name, index in zip(present, point):
                seen.config[name] = {"value": self.choices[name][index]}
        return engine


def _index_of(choices: list, value: Any) -> int | None:
    """The first position of `value` among `choices` (_indices_of), or None."""
    return (_indices_of(choices, value) or [None])[0]


def _indices_of(choices: list, value: Any) -> list[int]:
    """Every position of `value` among `choices`, by type and == (True is not 1); by ==
    alone when no choice has its type."""
    same = [index for index, choice in enumerate(choices)
            if type(choice) is type(value) and choice == value]
    return same or [index for index, choice in enumerate(choices) if choice == value]


def yaml_hash(value: Any) -> str:
    """The engine's grid identity of a value (sweeps.grid_search.yaml_hash: 1 and 1.0 are
    one point), imported when first asked: sweeps.grid_search imports scipy (0.5 s)."""
    from sweeps.grid_search import yaml_hash as engine_yaml_hash

    return engine_yaml_hash(value)


def _one_per_point(indices: list[int], points: list[str]) -> list[int]:
    """The first of `indices` for each engine point (`points[index]`) among them."""
    seen: set[str] = set()
    return [index for index in indices
            if points[index] not in seen and not seen.add(points[index])]


def engine_run(run: Any, encode=None) -> sweeps.SweepRun:
    """A stored run as the engine sees it ({"lr": {"value": 0.1}} configs)."""
    history = run_field(run, "history") or []
    # as W&B's summary: the last value of every logged key, under what the run set at its end
    summary = {**(history[-1] if history else {}), **(run_field(run, "summary") or {})}
    config = run_field(run, "config")
    return sweeps.SweepRun(
        name=run_field(run, "id"), state=ENGINE_STATES[run_field(run, "state")],
        config={k: {"value": encode(k, v) if encode else v} for k, v in config.items()},
        history=history, summary_metrics=summary)


def engine_inputs(sweep_config: dict, runs: list) -> tuple[dict, list]:
    """The sweep config and runs exactly as proposed_params hands them to sweeps.next_run."""
    view = _EngineView(sweep_config)
    return view.config, view.engine_runs(runs)


_MADE: dict[tuple[str, str], Any] = {}


def _once(kind: str, sweep_config: dict, make):
    """make(sweep_config), made once per kind and sweep config in this process (a few at
    most are kept); a config that is not JSON (creation-time checks may see such) is made
    every time. What the engine's validate=True builds at each call is made here once: its
    JSON-schema check took ~0.13 s a proposal and ~0.14 s a hyperband decision."""
    try:
        key = (kind, json.dumps(sweep_config, sort_keys=True))
    except (TypeError, ValueError):
        return make(sweep_config)
    if key not in _MADE:
        if len(_MADE) >= 32:
            _MADE.clear()
        _MADE[key] = make(sweep_config)
    return _MADE[key]


def _filled(sweep_config: dict) -> dict:
    """engine_config(sweep_config), made once per sweep config."""
    return _once("filled", sweep_config, engine_config)


def engine_config(sweep_config: dict) -> dict:
    """sweeps.SweepConfig(sweep_config): the config as the engine validates and fills it,
    nested parameters kept (with_nested), the base-e log distributions included (base_e_forms:
    SweepConfig refuses them, W&B runs them after a warning). Raises the engine's own exception
    for a config it refuses."""
    base_e = base_e_forms(sweep_config)
    if not base_e:
        return with_nested(sweeps.SweepConfig(sweep_config), sweep_config)
    from sweeps.config.schema import fill_parameter

    # the rest of the config as SweepConfig checks and fills it, each base-e parameter
    # filled by the engine's own filler (q: 1.0) in its place
    parameters = sweep_config["parameters"]
    stand_in = {**sweep_config, "parameters": {
        name: {"value": 0} if name in base_e else spec for name, spec in parameters.items()}}
    filled = with_nested(sweeps.SweepConfig(stand_in), stand_in)
    filled["parameters"] = {name: fill_parameter(name, copy.deepcopy(spec))[1]
                            if name in base_e else filled["parameters"][name]
                            for name, spec in parameters.items()}
    return filled


def base_e_forms(sweep_config: dict) -> dict[str, str]:
    """{name: W&B's warning} of the parameters drawn from a base-e log distribution
    (log_uniform, q_log_uniform, inv_log_uniform: min and max are exponents). The engine's
    schema check calls them deprecated and sweeps.SweepConfig refuses them, but W&B creates
    such a sweep after printing that warning (`wandb sweep`: schema violations from its server
    are warnings) and its engine draws them (sweeps/params.py, the *_v1_ppf functions), as the
    engine's authors kept them working when the _values forms came (wandb/sweeps#60)."""
    from sweeps.params import PARAM_DEPRECATION_MAP, HyperParameter

    found = {}
    for name, spec in (sweep_config.get("parameters") or {}).items():
        if not isinstance(spec, dict) or spec.get("distribution") not in BASE_E:
            continue
        try:
            kind = HyperParameter(name, spec).type
        except Exception:  # malformed: the schema check says why, in its own words
            continue
        if kind in PARAM_DEPRECATION_MAP:
            found[name] = f"{name} {PARAM_DEPRECATION_MAP[kind]}"
    return found


BASE_E = ("log_uniform", "q_log_uniform", "inv_log_uniform")


def base_e_range(name: str, spec: dict) -> tuple[float, float]:
    """The smallest and largest value the engine draws for the base-e parameter `name`
    (base_e_forms): its own quantile function at 0 and 1 (sweeps/params.py), e.g. lr
    log_uniform over min 0.001, max 0.1 -> (1.001, 1.105): e**0.001 to e**0.1. An end
    past what a float holds is inf, or 0 (base_e_drawn says so)."""
    import numpy as np
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter

    filled = fill_parameter(name, copy.deepcopy(spec))[1]
    with np.errstate(over="ignore", under="ignore"):  # numpy's warning at e**1000
        low, high = HyperParameter(name, filled).ppf(np.array([0.0, 1.0]))
    return float(min(low, high)), float(max(low, high))


def base_e_drawn(name: str, spec: dict) -> str:
    """What the engine draws for the base-e parameter `name`, in words: "lr is drawn from
    1.001 to 1.105 here" (base_e_range); or, where e to a bound is no float (e**1000 overflows
    to inf, e**-1000 is 0), the exponents' range and that, most likely a mistake: min and
    max meant as the bounds themselves, which the _values form takes."""
    low, high = base_e_range(name, spec)
    sign = -1 if spec["distribution"] == "inv_log_uniform" else 1
    bounds = (float(spec["min"]), float(spec["max"]))
    lost = [sign * u for u in bounds if _exp_is_zero_or_inf(sign * u)]
    if not lost:
        return f"{name} is drawn from {low:.4g} to {high:.4g} here"
    power = "e**-u" if sign < 0 else "e**u"
    past = "; ".join(f"e**{u:g} " + ("is 0 as a float" if u < 0 else "overflows a float "
                                     "(inf)") for u in lost)
    return (f"{name} is {power} for u from {bounds[0]:g} to {bounds[1]:g}, and {past}: likely "
            f"a mistake, perhaps {spec['distribution']}_values was meant")


def _exp_is_zero_or_inf(u: float) -> bool:
    """Whether e**u is past what a float holds: inf above about 709.8, 0 below about -745."""
    try:
        return math.exp(u) == 0.0
    except OverflowError:
        return True


def with_nested(filled: dict, config: dict) -> dict:
    """`filled` (the engine's filling of `config`) with the nested parameters that filling
    drops put back in their place, as written: the engine's proposals unnest them themselves
    (sweeps/params.py, HyperParameterSet.from_config), and a run gets each as one dict value,
    as on W&B."""
    parameters = config.get("parameters") or {}
    if not any(isinstance(spec, dict) and "parameters" in spec for spec in parameters.values()):
        return filled
    kept = filled.get("parameters") or {}
    filled["parameters"] = {name: copy.deepcopy(spec) if "parameters" in spec else kept[name]
                            for name, spec in parameters.items()}
    return filled


def _prepared(sweep_config: dict) -> tuple[_EngineView, dict]:
    """The sweep's engine view and that view's filled config."""
    def make(config: dict) -> tuple[_EngineView, dict]:
        view = _EngineView(config)
        return view, _filled(view.config)

    return _once("prepared", sweep_config, make)


def proposed_params(sweep_config: dict, runs: list) -> dict | None:
    """The engine's next configuration as {name: plain value of the parameter's type}, or None
    when the sweep is exhausted or a run has reached metric.target. Raises EngineError."""
    proposals = proposed_batch(sweep_config, runs, 1)
    return proposals[0] if proposals else None


def proposed_batch(sweep_config: dict, runs: list, n: int) -> list[dict]:
    """Up to `n` next configurations of a grid or random sweep from one call of the engine
    (`sweeps.next_runs(n=n)`: what n calls would give, each seeing the ones before as
    running; fewer when the grid runs out), as proposed_params gives them. A bayes sweep gets
    one (its Gaussian process is fitted for each proposal). Raises EngineError."""
    if target_reached(sweep_config, runs):
        return []
    if sweep_config.get("method") not in ("grid", "random"):
        n = 1
    try:
        view, filled = _prepared(sweep_config)
        engine_runs = view.engine_runs(runs)
        # validate=False: `filled` is what validate=True would build (and check) again.
        # A base-e draw past a float (e**1000: inf) is the engine's, which the sweep file's
        # note names (base_e_drawn); numpy's warning said so again at random proposals. A
        # NaN drawn from sigma 0 (scipy's "invalid value encountered in multiply", two lines
        # each with its source line) is judged by the sweep file's check, in one line.
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            proposals = sweeps.next_runs(copy.deepcopy(filled), engine_runs, validate=False,
                                         n=max(1, n))
    except Exception as error:  # the engine's own failure, whatever its type
        raise EngineError(_failure("proposing the next run", error)) from None
    types = value_types(sweep_config)
    batch = []
    for proposal in proposals:
        if proposal is None:  # the grid is exhausted
            break
        batch.append({name: as_type(view.decode(name, spec["value"]),
                                    *types.get(name, (None, None)))
                      for name, spec in proposal.config.items()})
    return batch


def capped_grid(sweep_config: dict) -> list[dict] | None:
    """The runs a grid whose run_cap is below its size makes, as proposed_batch gives them:
    the engine's first run_cap points, in its order (sweeps/grid_search.py: itertools.product
    over the parameters sorted by name, each one's values as listed, a point once, not
    shuffled: W&B's grid walks its points in that order too, wandb/wandb#2848 and #9505 ask
    for a shuffled grid), made once per sweep config (a list not to change). A run refused at
    its start counts towards run_cap as any other, so no later point takes its place. None
    where the grid runs every point (no run_cap, or one at least its size), or for another
    method."""
    cap = sweep_config.get("run_cap")
    if sweep_config.get("method") != "grid" or not cap or \
            cap >= planned_runs({**sweep_config, "run_cap": None}):
        return None
    return _once("capped grid", sweep_config, lambda config: proposed_batch(config, [], cap))


def planned_runs(sweep_config: dict) -> int | None:
    """How many runs the sweep will make: a grid's size (capped by run_cap), else run_cap;
    None when open-ended (random or bayes without run_cap)."""
    cap = sweep_config.get("run_cap") or None
    if sweep_config.get("method") != "grid":
        return cap
    size = 1
    for spec in (sweep_config.get("parameters") or {}).values():
        size *= _grid_values(spec)
    return min(size, cap) if cap else size


def _grid_values(spec) -> int:
    """How many values a parameter takes in a grid, as W&B's grid_search.py makes them:
    `values` (those whose YAML is the same, 1 and 1.0, are one point), an int_uniform's
    min..max, a q_uniform's np.arange(min, max, q), the product of nested parameters' own; 1
    otherwise (a constant)."""
    if not isinstance(spec, dict):
        return 1
    if isinstance(spec.get("parameters"), dict):
        return math.prod(_grid_values(inner) for inner in spec["parameters"].values())
    if isinstance(spec.get("values"), list):
        return max(1, len({yaml_hash(value) for value in spec["values"]}))
    numbers = [spec.get(k) for k in ("min", "max", "q")]
    if spec.get("distribution") == "int_uniform" and all(
            isinstance(n, int) for n in numbers[:2]):
        return max(1, numbers[1] - numbers[0] + 1)
    if spec.get("distribution") == "q_uniform" and all(
            isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers) \
            and numbers[2] > 0:
        return max(1, math.ceil((numbers[1] - numbers[0]) / numbers[2]))
    return 1


def stop_decisions(sweep_config: dict, runs: list) -> set[str]:
    """Ids of the runs the sweep's early_terminate (hyperband) would stop now. Raises
    EngineError."""
    engine_runs = [engine_run(run) for run in runs]
    try:
        # validate=False: the filled config is what validate=True would build again
        stopped = sweeps.stop_runs(copy.deepcopy(_filled(sweep_config)), engine_runs,
                                   validate=False)
    except Exception as error:
        raise EngineError(_failure("deciding which runs to stop", error)) from None
    return {run.name for run in stopped}


def target_reached(sweep_config: dict, runs: list) -> bool:
    """True once any run's metric has reached metric.target (W&B then creates no new runs)."""
    metric = sweep_config.get("metric") or {}
    if metric.get("target") is None:
        return False
    name, target = metric["name"], metric["target"]
    maximize = metric.get("goal") == "maximize"
    for run in runs:
        rows = list(run_field(run, "history") or []) + [run_field(run, "summary") or {}]
        for row in rows:
            value = row.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value) and (value >= target if maximize
                                                  else value <= target):
                return True
    return False


# the engine's key of a nested parameter (sweeps/params.py NESTING_DELIMITER joins its parts)
_NESTED_KEY = re.compile(r"[\w.-]+?(?:\.wbnest\[[0-9a-f]+\]\.[\w-]+)+")


def _failure(doing: str, error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    # opt.wbnest[599c28ca25da].lr as the file names it: parameters.opt.lr
    text = _NESTED_KEY.sub(
        lambda key: "parameters." + re.sub(r"\.wbnest\[[0-9a-f]+\]\.", ".", key.group()), text)
    return f"the sweep engine rejects the sweep ({doing}): {type(error).__name__}: {text}"


# --- how many points a grid has ---------------------------------------------------------------

def grid_points(spec: dict) -> int | float | None:
    """How many values a filled parameter spec gives a grid, computed, never enumerated: exact
    for value, values and int_uniform; q_uniform as np.arange(min, max, q) counts them (inf
    when q is too small for a float); nested parameters, the product of theirs; None for a
    distribution a grid cannot enumerate."""
    if isinstance(spec.get("parameters"), dict):
        inner = [grid_points(s) if isinstance(s, dict) else None
                 for s in spec["parameters"].values()]
        return None if None in inner else math.prod(inner)
    if "value" in spec:
        return 1
    if "values" in spec:
        return len(spec["values"])
    distribution = spec.get("distribution")
    low, high = spec.get("min"), spec.get("max")
    if distribution == "int_uniform" and isinstance(low, int) and isinstance(high, int):
        return max(0, high - low + 1)
    if distribution == "q_uniform":
        try:
            count = (float(high) - float(low)) / float(spec.get("q", 1.0))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return None
        return math.ceil(count) if math.isfinite(count) and count > 0 else \
            (math.inf if count > 0 else 0)
    return None


# --- what a distribution can draw ------------------------------------------------------------

@dataclass(frozen=True)
class Draws:
    """What one parameter's spec can hand a run: every value when there are few (`values`),
    else the closed range [low, high] (infinite ends allowed) and whether all are whole."""

    how: str  # the spec in words, for messages
    values: tuple | None = None
    low: float = -math.inf
    high: float = math.inf
    whole: bool = False
    step: float | None = None  # quantised: every value is a multiple of it


def draws(spec: dict, method: str) -> Draws:
    """The values `spec` (filled by sweeps.SweepConfig) can draw under `method`, computed as
    the engine computes them (sweeps/params.py HyperParameter.ppf, grid_search.py): q_
    distributions round to np.round(x / q) * q, integers when q is an int; grid takes
    q_uniform as np.arange(min, max, q) and int_uniform as min..max."""
    distribution = spec.get("distribution")
    if "value" in spec:
        return Draws("value", values=(spec["value"],))
    if "values" in spec:
        return Draws("values", values=tuple(spec["values"]))
    low, high, q = spec.get("min"), spec.get("max"), spec.get("q", 1.0)
    if distribution == "int_uniform":
        return _quantised(f"int_uniform [{low}, {high}]", low, high, 1)
    if distribution == "q_uniform" and method == "grid":
        return Draws(f"q_uniform in a grid (np.arange({low}, {high}, {q}))",
                     values=tuple(np.arange(low, high, q).tolist()))
    if distribution in BASE_E:  # min and max are exponents: e**min..e**max (inv: e**-max..)
        low, high = (-high, -low) if distribution == "inv_log_uniform" else (low, high)
        low, high = float(np.exp(low)), float(np.exp(high))
    continuous = {"uniform": (low, high), "log_uniform_values": (low, high),
                  "inv_log_uniform_values": (low, high), "normal": (-math.inf, math.inf),
                  "log_normal": (0.0, math.inf), "beta": (0.0, 1.0),
                  "log_uniform": (low, high), "inv_log_uniform": (low, high)}
    if distribution in continuous:
        start, end = continuous[distribution]
        return Draws(f"{distribution} (any number in [{start}, {end}])", low=start, high=end)
    quantised = {"q_uniform": (low, high), "q_log_uniform_values": (low, high),
                 "q_log_uniform": (low, high),
                 "q_normal": (-math.inf, math.inf), "q_log_normal": (0.0, math.inf),
                 "q_beta": (0.0, 1.0)}
    if distribution in quantised:
        start, end = quantised[distribution]
        return _quantised(f"{distribution} (multiples of q={q!r} in [{start}, {end}])",
                          start, end, q)
    return Draws(f"{distribution}")


def _quantised(how: str, low: float, high: float, q: float) -> Draws:
    first = -math.inf if low == -math.inf else float(np.round(low / q))
    last = math.inf if high == math.inf else float(np.round(high / q))
    whole = isinstance(q, int) or float(q).is_integer()

    def value(k: float):
        number = np.float64(k) * q  # the engine's arithmetic, so 3 * 0.1 is its 0.30000000000000004
        return int(number) if isinstance(q, int) else float(number)

    if math.isfinite(first) and math.isfinite(last) and last - first < ENUMERATE_LIMIT:
        return Draws(how, values=tuple(value(k) for k in np.arange(first, last + 1)))
    return Draws(how, low=first * q if math.isfinite(first) else -math.inf,
                 high=last * q if math.isfinite(last) else math.inf, whole=whole, step=q)


# --- what a q_ distribution's rounding does ----------------------------------------------------

# The distributions the engine rounds to multiples of q (sweeps/params.py HyperParameter.ppf:
# np.round(x / q) * q of the continuous draw x; q is 1.0 where the spec gives none).
Q_DISTRIBUTIONS = ("q_uniform", "q_log_uniform", "q_log_uniform_values", "q_normal",
                   "q_log_normal", "q_beta")
# Those whose continuous draw is above 0 by construction (a log scale): a 0 there is the
# rounding's alone. q_uniform's is too where its min is above 0 (or its max below).
POSITIVE = ("q_log_uniform", "q_log_uniform_values", "q_log_normal")


@dataclass(frozen=True)
class Rounding:
    """What rounding to multiples of `q` makes of one parameter's draws (exact, from the
    engine's own cdf of the continuous draw): the share of draws that are 0, the value the
    median draw rounds to (`common`) with its share, whether every draw is that value (a
    bounded range within one step of q), the continuous draw's ends (`low`, `high`), and
    whether a 0 is the rounding's alone (the continuous draw is never near it)."""

    q: float
    zero_share: float
    common: float
    common_share: float
    every: bool
    low: float
    high: float
    zero_is_rounding: bool


def rounding(name: str, spec: dict) -> Rounding | None:
    """Rounding of the q_ distribution `spec` (Q_DISTRIBUTIONS; None for any other), as the
    engine draws it at random or in a bayes search: filled by the engine's own filler (q
    1.0 where none is given), its share of each rounded value from the engine's cdf of the
    continuous draw, its ends from its quantile function. A spec the engine cannot read is
    None (the schema check says why)."""
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter

    if not isinstance(spec, dict) or spec.get("distribution") not in Q_DISTRIBUTIONS:
        return None
    try:
        filled = fill_parameter(name, copy.deepcopy(spec))[1]
        drawn = HyperParameter(name, filled)
        q = float(filled["q"])
    except Exception:
        return None
    if not 0 < q < math.inf:  # a nested spec, which no schema check reads: the engine fails
        return None

    def share(value: float) -> float:
        cdf = np.nan_to_num(drawn.cdf(np.array([value - q / 2, value + q / 2])), nan=0.0)
        return float(min(1.0, max(0.0, cdf[1] - cdf[0])))

    # log(x <= 0) in a log form's cdf (nothing is drawn there: nan, read as 0), e**1000
    try:
        with np.errstate(all="ignore"):
            ends = [float(v) for v in drawn.ppf(np.array([0.0, 1.0]))]
            common = float(drawn.ppf(0.5))
            zero_share, common_share = share(0.0), share(common)
            low, high = _continuous_ends(filled)
    except Exception:  # the engine's own failure, which its proposals meet and name
        return None
    kind = filled["distribution"]
    return Rounding(q=q, zero_share=zero_share, common=common, common_share=common_share,
                    every=ends[0] == ends[1], low=low, high=high,
                    zero_is_rounding=kind in POSITIVE or (kind == "q_uniform" and (
                        low > 0 or high < 0)))


def _continuous_ends(filled: dict) -> tuple[float, float]:
    """The ends of a q_ distribution's draw before its rounding (sweeps/params.py): min to
    max, e**min to e**max for the base-e form, 0 to 1 for beta, the whole line for normal
    and 0 up for log_normal."""
    kind = filled["distribution"]
    if kind == "q_log_uniform":
        return float(np.exp(filled["min"])), float(np.exp(filled["max"]))
    if kind in ("q_uniform", "q_log_uniform_values"):
        return float(filled["min"]), float(filled["max"])
    return {"q_normal": (-math.inf, math.inf), "q_log_normal": (0.0, math.inf),
            "q_beta": (0.0, 1.0)}[kind]

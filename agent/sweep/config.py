"""Read a W&B sweep YAML and check it before any agent starts: the sweep engine's own schema,
then every parameter against agent/params.py, the metric against what a trial reports, and one
dry proposal from the engine. Every problem is one UserError line; nothing is trained.
"""

from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path
from typing import Any

import jsonschema

from util.errors import UserError
from agent import metrics
from agent.params import BY_NAME, PARAMS, coerce, validate
from agent.yaml_file import read_yaml

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the engine's pydantic model warns on import
    import sweeps
    from sweeps.config.schema import (dereferenced_sweep_config_jsonschema,
                                      fill_validate_metric, format_checker, validator)

# What a trial reports, with the direction that makes a run better (agent/metrics.py).
EPOCH_METRICS = metrics.optimisable(when=(metrics.EPOCH,))
METRICS = metrics.optimisable()

# Distributions whose min/max are the values drawn (the engine rejects the old base-e forms).
BOUNDED = {"int_uniform", "uniform", "q_uniform", "log_uniform_values",
           "q_log_uniform_values", "inv_log_uniform_values"}
# Distributions without min/max: (lowest, highest, a typical value) of what they draw.
SUPPORT = {"normal": (-math.inf, math.inf, lambda spec: spec.get("mu", 0.0)),
           "log_normal": (0.0, math.inf, lambda spec: math.exp(spec.get("mu", 0.0))),
           "beta": (0.0, 1.0, lambda spec: 0.5)}
# Distributions that draw non-integers unless quantised.
CONTINUOUS = {"uniform", "log_uniform_values", "inv_log_uniform_values", "normal",
              "log_normal", "beta"}


def load_sweep_config(path: str | Path) -> dict:
    """The sweep config in `path`, validated, with the engine's defaults filled in.

    `sweeps.SweepConfig` fills each parameter's `distribution` (categorical, constant,
    int_uniform, uniform, ...) and hyperband's `eta` (3) and `strict` (true);
    `fill_validate_metric` fills the metric's `impute` and `impute_while_running`.
    Raises UserError (one line) for anything wrong.
    """
    where = str(path)
    config = _read_yaml(where)
    filled = _engine_validate(where, config)
    _check_parameters(where, filled.get("parameters", {}))
    _check_metric(where, filled)
    _dry_run(where, filled)
    return filled


def parameter_names(config: dict) -> set[str]:
    """Names of the parameters a sweep config sets (nested `parameters` are recursed into)."""
    names: set[str] = set()

    def collect(parameters: Any) -> None:
        if not isinstance(parameters, dict):
            return
        for name, spec in parameters.items():
            if isinstance(spec, dict) and "parameters" in spec:
                collect(spec["parameters"])
            else:
                names.add(name)

    collect(config.get("parameters"))
    return names


# --- reading -------------------------------------------------------------------------------

def _read_yaml(where: str) -> dict:
    loaded = read_yaml(where, f"sweep config {where!r}")
    if loaded is None:
        raise UserError(f"{where}: the file is empty: expected method, metric and parameters")
    if not isinstance(loaded, dict):
        raise UserError(f"{where}: expected a mapping of sweep keys (method, metric, "
                        f"parameters, ...), got {type(loaded).__name__}")
    return loaded


# --- the engine's schema -------------------------------------------------------------------

def _engine_validate(where: str, config: dict) -> dict:
    """The engine's schema checks, reduced to one line; returns the engine-filled config."""
    parameters = config.get("parameters")
    if isinstance(parameters, dict):
        for name, spec in parameters.items():
            if not isinstance(spec, dict):  # the engine raises rather than report this
                raise UserError(f"{where}: parameters.{name}: expected a mapping such as "
                                f"{{value: x}} or {{values: [...]}}, got {spec!r}")
    try:
        messages = sweeps.schema_violations_from_proposed_config(config)
    except (ValueError, TypeError) as error:
        raise UserError(_one_line(f"{where}: {error}")) from None
    if messages:
        schema_errors = list(validator.iter_errors(config))
        described = [_describe(error) for error in schema_errors]
        raw = {error.message for error in schema_errors}
        located = {".".join(map(str, error.absolute_path)) for error in schema_errors}
        for message in messages:  # the engine's own checks beyond the schema
            repeat = "invalid hyperparameter configuration: "  # a schema error said it better
            if message in raw or (message.startswith(repeat) and
                                  "parameters." + message[len(repeat):] in located):
                continue
            described.append(message)
        raise UserError(_one_line(f"{where}: not a valid sweep config: "
                                  + "; ".join(dict.fromkeys(described))))
    _reject_nested(where, config.get("parameters") or {})
    try:
        filled = fill_validate_metric(dict(sweeps.SweepConfig(config)))
    except (jsonschema.ValidationError, ValueError, TypeError) as error:
        message = error.message if isinstance(error, jsonschema.ValidationError) else error
        raise UserError(_one_line(f"{where}: not a valid sweep config: {message}")) from None
    return filled


def _describe(error) -> str:
    """One jsonschema error as `location: problem`, choosing the sub-error that matters."""
    location = ".".join(str(p) for p in error.absolute_path) or "top level"
    path = list(error.absolute_path)
    if len(path) == 2 and path[0] == "parameters" and error.validator == "anyOf":
        return f"{location}: {_parameter_problem(error.instance)}"
    if error.context:  # oneOf/anyOf elsewhere (early_terminate): the innermost reasons
        leaves, stack = [], list(error.context)
        while stack:
            sub = stack.pop(0)
            if sub.context:
                stack.extend(sub.context)
            else:
                leaves.append(sub.message)
        return f"{location}: " + " or ".join(dict.fromkeys(leaves))
    return f"{location}: {error.message}{_number_hint(error.instance)}"


def _parameter_problem(spec: Any) -> str:
    """Why a parameter spec matches none of the engine's parameter schemas."""
    definitions = dereferenced_sweep_config_jsonschema["definitions"]
    variants = []  # (schema, its distribution enum, whether distribution may be left out)
    for ref in dereferenced_sweep_config_jsonschema["definitions"]["parameter"]["anyOf"]:
        schema = ref if "$ref" not in ref else definitions[ref["$ref"].split("/")[-1]]
        for variant in schema.get("anyOf", [schema]):
            dist = variant.get("properties", {}).get("distribution", {})
            if dist:
                variants.append((variant, dist.get("enum", []),
                                 "distribution" not in variant.get("required", [])))
    known = sorted({name for _, enum, _ in variants for name in enum})
    shapes = "{value: x}, {values: [...]}, or {distribution: ..., min: ..., max: ...}"
    distribution = spec.get("distribution")
    if distribution is None:
        if not {"value", "values", "min", "max"} & set(spec):
            return f"expected {shapes}; got keys {', '.join(map(str, spec)) or 'none'}"
        candidates = [v for v, _, optional in variants if optional]
    elif distribution not in known:
        return f"unknown distribution {distribution!r}: expected one of {', '.join(known)}"
    else:
        candidates = [v for v, enum, _ in variants if distribution in enum]
    best = None
    for schema in candidates:
        errors = list(jsonschema.Draft7Validator(schema, format_checker=format_checker)
                      .iter_errors(spec))
        if errors and (best is None or len(errors) < len(best)):
            best = errors
    if not best:
        return f"not a valid parameter: expected {shapes}"
    return ", ".join(dict.fromkeys(e.message + _number_hint(e.instance) for e in best))


def _number_hint(value: Any) -> str:
    """PyYAML reads 1e-4 (no dot) as text; say so when a number was expected."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (YAML reads {value} as text: write it with a dot, e.g. 1.0e-4)"
    return ""


def _reject_nested(where: str, parameters: dict) -> None:
    for name, spec in parameters.items():
        if isinstance(spec, dict) and "parameters" in spec:
            raise UserError(
                f"{where}: parameters.{name}: nested parameters are not supported: the "
                f"engine's validation drops them and W&B would pass them as one dict-valued "
                f"--{name}={{...}}, while trials take flat --key=value; set each run "
                f"parameter at the top level of parameters")


# --- our parameters and metrics ------------------------------------------------------------

def _check_parameters(where: str, parameters: dict) -> None:
    for name, spec in parameters.items():
        param = BY_NAME.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(BY_NAME), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{where}: parameters.{name}: unknown parameter {name!r}{hint}: "
                            "allowed are " + ", ".join(p.name for p in PARAMS))
        _check_values(where, param, spec)
    # the fixed values together (e.g. nesterov with adam); combinations involving swept values
    # are only known run by run
    fixed = {name: spec["value"] for name, spec in parameters.items() if "value" in spec}
    try:
        validate(fixed)
    except UserError as error:
        raise UserError(f"{where}: parameters (fixed values): {error}") from None


def _check_values(where: str, param, spec: dict) -> None:
    """Every value the spec can hand a trial must pass `coerce` for `param`."""
    def check(key: str, value: Any) -> None:
        try:
            coerce(param, value)
        except UserError as error:
            raise UserError(f"{where}: parameters.{param.name}.{key}: {error}") from None

    distribution = spec.get("distribution")
    if "value" in spec:
        check("value", spec["value"])
    elif "values" in spec:
        for index, value in enumerate(spec["values"]):
            check(f"values[{index}]", value)
    elif distribution in BOUNDED:
        check("min", spec["min"])
        check("max", spec["max"])
    elif distribution.removeprefix("q_") in SUPPORT:  # no min/max: check range and centre
        low, high, centre = SUPPORT[distribution.removeprefix("q_")]
        if (param.minimum is not None and low < param.minimum) or (
                param.maximum is not None and high > param.maximum):
            raise UserError(f"{where}: parameters.{param.name}: distribution {distribution} "
                            f"can draw values outside what {param.name} allows "
                            f"({param.allowed()}); use a bounded one such as uniform or "
                            "log_uniform_values")
        check("distribution", centre(spec))
    integral = param.type is int or (param.type is list and param.item_type is int)
    if integral and distribution in CONTINUOUS:
        raise UserError(f"{where}: parameters.{param.name}: distribution {distribution} draws "
                        f"non-integers but {param.name} is an integer; use int_uniform, or a "
                        "q_ distribution with an integer q")
    if integral and "q" in spec and not float(spec["q"]).is_integer():
        raise UserError(f"{where}: parameters.{param.name}.q: q={spec['q']!r} draws "
                        f"non-integers but {param.name} is an integer; use an integer q")


def _check_metric(where: str, config: dict) -> None:
    metric = config.get("metric")
    needs_metric = config.get("method") == "bayes" or "early_terminate" in config
    if metric is None:
        if needs_metric:
            raise UserError(f"{where}: metric: required for method bayes and for "
                            "early_terminate, e.g. metric: {name: val/acc, goal: maximize}")
        return
    name = metric["name"]
    if name not in METRICS:
        raise UserError(f"{where}: metric.name: {name!r} is not a metric trials report: "
                        f"expected one of {', '.join(METRICS)}")
    if "early_terminate" in config and name not in EPOCH_METRICS:
        raise UserError(f"{where}: metric.name: early_terminate needs a metric logged every "
                        f"epoch, and {name} is only in the summary: use one of "
                        + ", ".join(EPOCH_METRICS))
    # the goal is given explicitly: the engine's default (minimize) would silently search for
    # the worst accuracy
    goal = metric.get("goal")
    if goal is None or goal != METRICS[name]:
        got = "no goal" if goal is None else f"goal {goal}"
        raise UserError(f"{where}: metric.goal: {name} with {got} would look for the worst "
                        f"runs: use goal: {METRICS[name]}")


def _dry_run(where: str, config: dict) -> None:
    """Ask the engine for a first run: catches what it only checks then (e.g. a uniform
    distribution in a grid, method custom)."""
    try:
        sweeps.next_run(config, [], validate=True)
    except (ValueError, TypeError, AssertionError) as error:
        raise UserError(_one_line(f"{where}: the sweep engine rejects it: {error}")) from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())

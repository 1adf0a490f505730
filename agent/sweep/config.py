"""Read a W&B sweep YAML and check it before any agent starts: the engine's schema, every sweep
key and command macro (honoured or refused), a dry claim through the engine boundary, and, when
the runs are our trainer, every configuration it can draw and the metric it must report. Every
problem is one UserError line; nothing is created.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from agent import metrics
from agent.params import BY_NAME, PARAMS, RULES, close_parameter, coerce, validate
from agent.sweep.draw_mass import JUDGED, Outside, outside
from agent.sweep.engine import (
    GRID_LIMIT,
    Draws,
    EngineError,
    as_type,
    base_e_drawn,
    base_e_forms,
    capped_grid,
    draws,
    engine_config,
    grid_points,
    planned_runs,
    proposed_params,
    stop_decisions,
    with_nested,
)
from agent.sweep.program import (
    build_run,
    check_program_command,
    command_of,
    runs_our_trainer,
    trial_values,
    unset_variable_notes,
)
from agent.sweep.rule_mass import SKIP, marginal, refused_points, refused_share, typed
from agent.sweep_space import choice, swept_parameters
from agent.yaml_file import read_yaml
from util.errors import UserError, brief

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the engine's pydantic model warns on import
    from sweeps.config.schema import (
        dereferenced_sweep_config_jsonschema,
        fill_validate_metric,
        format_checker,
        validator,
    )

    import sweeps

# What a trial reports, with the direction that makes a run better (agent/metrics.py).
EPOCH_METRICS = metrics.optimisable(when=(metrics.EPOCH,))
METRICS = metrics.optimisable()
# Every number a trial logs after each epoch or at its end under a fixed name, which a sweep
# may optimise in the direction its goal says (a batch-size study of perf/images_per_s), as
# W&B optimises any logged key; those with a goal above are the usual ones.
SCALARS = {m.name: m.when for m in metrics.METRICS if m.when in (metrics.EPOCH, metrics.END)
           and "<" not in m.name and m.name not in ("test/confusion_matrix",)}

# Metrics measured on the validation split (agent/metrics.py names them val/...): a run with
# val_split 0 never reports them.
VALIDATION_PREFIX = "val/"
# Parameters the agent sets for each run, which a sweep cannot set.
AGENT_PARAMETERS = {"run_id": "the agent gives each run its own id (W&B's run id); a sweep "
                    "cannot set it"}
# Every top-level key of the engine's schema (sweeps/config/schema.json): None when a local
# sweep honours it (docs/wandb_compatibility.md says how), else why it is refused. A key the
# schema gains later is refused until it is listed here: none is silently dropped.
LAUNCH = "it runs through W&B Launch (a launch queue on W&B's server)"
TOP_LEVEL_KEYS = {
    "method": None, "parameters": None, "metric": None, "early_terminate": None,
    "run_cap": None, "name": None, "description": None, "command": None, "program": None,
    "project": None, "entity": None, "controller": None, "apiVersion": None, "kind": None,
    "metrics": "multi-objective search runs only in W&B's custom schedulers (method: custom)",
    "scheduler": "custom schedulers (Optuna, Ax) run in W&B's launch service; only "
                 "{engine: wandb}, the engine used here, is accepted",
    "job": LAUNCH, "image_uri": LAUNCH,
}
# The keys of early_terminate (hyperband's) in the engine's schema; the engine deletes any other
HYPERBAND_KEYS = tuple(dereferenced_sweep_config_jsonschema["definitions"][
    "hyperband_stopping"]["properties"])


def load_sweep_config(path: str | Path, notes: list[str] | None = None) -> dict:
    """The sweep config in `path`, validated, with the engine's defaults filled in.

    `sweeps.SweepConfig` fills each parameter's `distribution` (categorical, constant,
    int_uniform, uniform, ...) and hyperband's `eta` (3) and `strict` (true);
    `fill_validate_metric` fills the metric's `impute` and `impute_while_running`.
    A top-level or early_terminate key outside W&B's sweep schema is left out, with a line
    in `notes`: W&B creates such a sweep after warning ("Malformed sweep config", additional
    properties) and its engine never reads the key (_without_unknown).
    Raises UserError (one line) for anything wrong.
    """
    where = str(path)
    config = _without_unknown(where, _read_yaml(where), TOP_LEVEL_KEYS, "", notes)
    if isinstance(config.get("early_terminate"), dict):  # the engine drops those keys too
        config["early_terminate"] = _without_unknown(
            where, config["early_terminate"], HYPERBAND_KEYS, "early_terminate", notes)
    filled = _engine_validate(where, config, notes)
    if isinstance(filled.get("run_cap"), float):  # 2.0: an integer to the schema (draft 7),
        filled["run_cap"] = int(filled["run_cap"])  # and the engine's range(run_cap) wants one
    _check_grid_size(where, filled)
    _check_integer_ranges(where, filled)
    _check_hyperband_brackets(where, filled)
    _check_keys(where, filled)
    _check_name(where, filled)
    _check_command(where, filled)
    _check_metric_present(where, filled)
    _check_program_file(where, filled)
    _check_storable(where, filled)
    _check_bayes_categories(where, filled)
    _dry_run(where, filled)
    _note_grid_leaves_out_max(where, filled, notes)
    if runs_our_trainer(filled):
        fixed = _fixed_arguments(where, filled)
        _judge_draws_outside(where, filled, notes)
        _check_trial_configs(where, filled, fixed, notes)
        _check_metric(where, filled, fixed, notes)
    return filled


def _without_unknown(where: str, mapping: dict, known, within: str,
                     notes: list[str] | None) -> dict:
    """`mapping` (the sweep config, or its early_terminate) without its keys outside W&B's
    schema (`known`), with a note naming them: W&B creates such a sweep after warning
    ("Malformed sweep config", additional properties) and its engine never reads the key
    (a `defaults:` key that only holds YAML anchors; hyperband_stopping.py deletes the
    early_terminate keys its schema lacks). A near miss of a known key is refused naming the
    key meant: left out, a misspelt key would go unnoticed (hyperband never runs, eta 3)."""
    unknown = [key for key in mapping if key not in known]
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)
        if close:
            raise UserError(f"{where}: {_path(str(key), within)}: not a key of W&B's sweep "
                            f"schema (W&B would leave it out after a warning): did you mean "
                            f"{close[0]}?")
    if unknown and notes is not None:
        notes.append(f"note: {where}: " + ", ".join(_path(str(k), within) for k in unknown)
                     + f": not {'a key' if len(unknown) == 1 else 'keys'} of W&B's sweep "
                     "schema: left out, as W&B's sweep engine leaves them (`wandb sweep` "
                     "warns of a malformed config and creates the sweep)")
    return {key: value for key, value in mapping.items() if key not in unknown}


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
    loaded = read_yaml(where, where)
    if loaded is None:
        raise UserError(f"{where}: the file is empty: expected method, metric and parameters")
    if not isinstance(loaded, dict):
        raise UserError(f"{where}: expected a mapping of sweep keys (method, metric, "
                        f"parameters, ...), got {type(loaded).__name__}")
    return loaded


# --- the engine's schema -------------------------------------------------------------------

def _engine_validate(where: str, config: dict, notes: list[str] | None = None) -> dict:
    """The engine's schema checks, reduced to one line; returns the engine-filled config. A
    base-e log distribution (log_uniform, q_log_uniform, inv_log_uniform) is W&B's warning
    in `notes`, not a refusal: W&B creates and runs such a sweep (engine.base_e_forms)."""
    parameters = config.get("parameters")
    if "parameters" in config and not isinstance(parameters, dict):
        raise UserError(f"{where}: parameters: expected a mapping of parameter name: spec, "
                        f"got {type(parameters).__name__}")
    if isinstance(parameters, dict):
        for name, spec in parameters.items():
            if not isinstance(spec, dict):  # the engine raises rather than report this
                raise UserError(f"{where}: {_path(name)}: expected a mapping such as "
                                f"{{value: x}} or {{values: [...]}}, got {spec!r}")
    try:
        messages = sweeps.schema_violations_from_proposed_config(config)
    except Exception as error:  # the engine raises rather than report some shapes
        raise UserError(_one_line(f"{where}: {error}")) from None
    base_e = base_e_forms(config)
    messages = [message for message in messages if message not in base_e.values()]
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
    _wandb_client_checks(where, config)
    if runs_our_trainer(config):
        _reject_nested(where, config.get("parameters") or {})
    for name, warning in base_e.items():
        if notes is not None:
            notes.append(f"note: {where}: parameters.{warning} (W&B warns alike, and runs it: "
                         f"min and max are the natural logs of the bounds: "
                         f"{base_e_drawn(name, parameters[name])})")
    try:
        filled = fill_validate_metric(engine_config(config))
    except Exception as error:  # the engine's own checks, whatever they raise
        message = error.message if isinstance(error, jsonschema.ValidationError) else error
        raise UserError(_one_line(f"{where}: not a valid sweep config: {message}")) from None
    return with_nested(filled, config)


def _wandb_client_checks(where: str, config: dict) -> None:
    """What `wandb sweep` (and wandb.sweep) refuses before sending a config to W&B: a
    parameter with min and max but no distribution whose bounds are not both integers or both
    floats (wandb/apis/public/sweeps.py _validate_config_and_fill_distribution, written out
    here: the GPU machine has no wandb; tests/test_wandb_compat_gaps.py checks it is wandb's)."""
    for name, spec in (config.get("parameters") or {}).items():
        if not (isinstance(spec, dict) and "min" in spec and "max" in spec
                and "distribution" not in spec):
            continue
        low, high = spec["min"], spec["max"]
        if not (isinstance(low, int) and isinstance(high, int)
                or isinstance(low, float) and isinstance(high, float)):
            raise UserError(f"{where}: {_path(name)}: min {low!r} and max {high!r} without a "
                            "distribution: wandb sweep refuses this as ambiguous; write both "
                            "as floats (uniform, e.g. 0.0) or both as integers (int_uniform)")


def _describe(error) -> str:
    """One jsonschema error as `location: problem`, choosing the sub-error that matters."""
    location = ".".join(str(p) for p in error.absolute_path) or "top level"
    path = list(error.absolute_path)
    if len(path) == 2 and path[0] == "parameters" and error.validator == "anyOf":
        return _spec_problem(location, error.instance)
    if path == ["parameters"] and error.validator == "pattern":  # propertyNames
        return _name_problem(location, error.instance)
    if error.context:  # oneOf/anyOf elsewhere (early_terminate): the innermost reasons
        leaves, stack = [], list(error.context)
        while stack:
            sub = stack.pop(0)
            if sub.context:
                stack.extend(sub.context)
            else:
                leaves.append(sub)
        if all(leaf.validator == "required" for leaf in leaves):  # hyperband's brackets
            return f"{location}: {_needs(leaves, error.instance)}"
        # each reason at its own key (early_terminate.min_iter), not at the oneOf's
        return " or ".join(dict.fromkeys(
            f"{'.'.join(map(str, leaf.absolute_path)) or location}: {_schema_message(leaf)}"
            for leaf in leaves))
    return f"{location}: {_schema_message(error)}{_number_hint(error.instance, _integer(error))}"


def _spec_problem(location: str, spec: Any) -> str:
    """Why the parameter at `location` matches none of the schema's forms. A nested parameter
    ({parameters: {...}}, one of the forms) is judged by its own parameters, each problem at
    its dotted place (parameters.opt.lr): the schema's anyOf reports only the outer name."""
    if not isinstance(spec, dict):
        return (f"{location}: expected a mapping such as {{value: x}} or {{values: [...]}}, "
                f"got {brief(spec, 40)}")
    if "parameters" not in spec:
        return f"{location}: {_parameter_problem(spec)}"
    if set(spec) != {"parameters"}:
        return (f"{location}: a nested parameter holds its parameters alone "
                f"({{parameters: {{...}}}}); got keys {', '.join(map(str, spec))}")
    inner = spec["parameters"]
    if not isinstance(inner, dict):
        return (f"{location}.parameters: expected a mapping of parameter name: spec, "
                f"got {type(inner).__name__}")
    schema = dereferenced_sweep_config_jsonschema["definitions"]["parameters"]
    reasons = []
    for error in jsonschema.Draft7Validator(schema, format_checker=format_checker)\
            .iter_errors(inner):
        path = list(error.absolute_path)
        where = ".".join([location, *map(str, path)])
        if len(path) == 1 and error.validator == "anyOf":
            reasons.append(_spec_problem(where, error.instance))
        elif not path and error.validator == "pattern":  # propertyNames
            reasons.append(_name_problem(location, error.instance))
        elif not path:  # the mapping itself (minProperties)
            reasons.append(f"{location}.parameters: {_schema_message(error)}")
        else:
            reasons.append(f"{where}: {_schema_message(error)}"
                           f"{_number_hint(error.instance, _integer(error))}")
    return "; ".join(dict.fromkeys(reasons)) or f"{location}: {_parameter_problem(spec)}"


def _name_problem(location: str, name: Any) -> str:
    """A parameter name outside the schema's propertyNames pattern, in words."""
    return (f"{location}: {brief(name, 40)} is not a parameter name W&B's schema takes (a "
            "letter or _, then letters, digits, _ . or -)")


def _needs(leaves: list, instance: Any) -> str:
    """What keys one of the schema's forms requires, as `needs both max_iter and s, or
    min_iter (given: type, max_iter, eta)`: jsonschema said "'s' is a required property or
    'min_iter' is a required property", leaving out that s goes with max_iter."""
    forms = dict.fromkeys(
        " and ".join(map(str, leaf.validator_value)) if len(leaf.validator_value) < 2 else
        "both " + ", ".join(map(str, leaf.validator_value[:-1]))
        + f" and {leaf.validator_value[-1]}" for leaf in leaves)
    given = ", ".join(map(str, instance)) if isinstance(instance, dict) else repr(instance)
    return f"needs {', or '.join(forms)} (given: {given or 'no keys'})"


# jsonschema's words for a bound ("0 is less than or equal to the minimum of 0.0"), as a
# user reads them: what the value must be
_BOUNDS = {"exclusiveMinimum": "greater than", "minimum": "at least",
           "exclusiveMaximum": "less than", "maximum": "at most"}


def _schema_message(error) -> str:
    """One jsonschema error's problem in words: a bound as what the value must be ('0 must
    be greater than 0'), anything else as jsonschema says it."""
    if error.validator in _BOUNDS and isinstance(error.validator_value, (int, float)):
        return (f"{error.instance!r} must be {_BOUNDS[error.validator]} "
                f"{error.validator_value:g}")
    if error.validator == "format" and error.validator_value == "integer" and \
            isinstance(error.instance, float):  # int_uniform's bounds: "10.0 is not a 'integer'"
        whole = error.instance.is_integer()
        return f"{error.instance!r} is not an integer" + (
            f" (write {int(error.instance)}, without the decimal point)" if whole else "")
    return error.message


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
        # judged by the forms that have the spec's keys ({min, max} is a range, not a values
        # list lacking `values`), a float range before an integer one where both fail alike
        covering = [v for v in candidates if set(spec) <= set(v.get("properties", {}))]
        candidates = sorted(covering or candidates, key=lambda v: _integer_form(v))
    elif distribution not in known:
        # a near miss (log_uniform_value) names the one meant, as a misspelt key does
        close = difflib.get_close_matches(str(distribution), known, n=1, cutoff=0.8)
        return (f"unknown distribution {distribution!r}"
                + (f" (did you mean {close[0]}?)" if close else "")
                + f": expected one of {', '.join(known)}")
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
    if any(e.validator == "type" for e in best):  # text for a number: its format is moot
        best = [e for e in best if e.validator != "format"]
    return ", ".join(dict.fromkeys(
        "".join(f"{key}: " for key in e.absolute_path) + _schema_message(e)
        + _number_hint(e.instance, _integer(e)) for e in best))


def _integer_form(variant: dict) -> bool:
    """Whether a parameter form's min is an integer (int_uniform's)."""
    low = variant.get("properties", {}).get("min", {})
    return low.get("type") == "integer" or low.get("format") == "integer"


def _yaml_float(text: str) -> str:
    """`text` (a number PyYAML 1.1 reads as text: 1e-4, 5E3, .5e-2) as one it reads as a
    float: a dot in the mantissa and a signed exponent (1.0e-4, 5.0e+3, 0.5e-2)."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    mantissa = mantissa.lstrip("+-")
    if "." not in mantissa:
        mantissa += ".0"
    if mantissa.startswith("."):
        mantissa = "0" + mantissa
    if mantissa.endswith("."):
        mantissa += "0"
    if exponent and exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")


def _integer(error) -> bool:
    """Whether a jsonschema error is about a value that must be an integer (run_cap,
    int_uniform's bounds): a float such as 1.0e+3 is refused there as text is."""
    wanted = error.validator_value
    return error.validator in ("type", "format") and (
        wanted == "integer" or isinstance(wanted, list) and "integer" in wanted)


def _number_hint(value: Any, integer: bool = False) -> str:
    """Why a number is text, when a number (an `integer`) was expected: PyYAML reads 1e-4
    (no dot) as text, advised as a float it reads (1.0e-4), or where an integer is expected
    as its digits (1e3 -> 1000); a number in quotes is text."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if not re.fullmatch(r"\s*[-+]?[\d.]+([eE][-+]?\d+)?\s*", value):
            return ""  # inf, nan, 1_000: not what a user writes for a number
        if not isinstance(yaml.safe_load(value), (int, float)):  # 1e-4: PyYAML's text
            if integer:
                number = Decimal(value.strip())
                if number != number.to_integral_value() or abs(number) >= 10 ** 24:
                    return f" (YAML reads {value.strip()} as text, and an integer is expected)"
                return (f" (YAML reads {value.strip()} as text: write the integer's digits, "
                        f"{int(number)})")
            return (f" (YAML reads {value.strip()} as text: write a dot and a signed "
                    f"exponent, {_yaml_float(value)})")
        return f" (a number in quotes is text: write {value.strip()} without quotes)"
    return ""


def _reject_nested(where: str, parameters: dict) -> None:
    for name, spec in parameters.items():
        if isinstance(spec, dict) and "parameters" in spec:
            raise UserError(
                f"{where}: {_path(name)}: nested parameters give a run one dict-valued "
                f"--{name}={{...}}, and our trainer takes flat --key=value: set each run "
                f"parameter at the top level of parameters")


def _check_grid_size(where: str, config: dict) -> None:
    """A grid's size, computed before anything enumerates it (the engine lists every point at
    each proposal): each parameter's values, then their product, at most GRID_LIMIT."""
    if config.get("method") != "grid":
        return
    size = 1
    for name, spec in config["parameters"].items():
        points = grid_points(spec)
        if points is None:
            continue  # not a grid distribution: the dry run reports the engine's refusal
        if points > GRID_LIMIT:
            raise UserError(f"{where}: {_path(name)}: a grid over {_count(points)} values "
                            f"of {name}, more than the {GRID_LIMIT:,} points a grid may have: "
                            "use fewer values, or method random (with run_cap)")
        size *= points
    if size > GRID_LIMIT:
        raise UserError(f"{where}: a grid of {_count(size)} points (the product of each "
                        f"parameter's values), more than the {GRID_LIMIT:,} a grid may have: "
                        "use fewer values, or method random (with run_cap)")


def _note_grid_leaves_out_max(where: str, config: dict, notes: list[str] | None) -> None:
    """A note for each q_uniform of a grid whose max is one of q's steps from min: the
    engine's grid takes np.arange(min, max, q) (sweeps/grid_search.py), which leaves max
    out (epochs {min: 1, max: 3, q: 1} takes 1 and 2), as W&B's grid does; the note names
    the values taken and the max that takes it in."""
    if config.get("method") != "grid" or notes is None:
        return
    for name, spec in config["parameters"].items():
        if not isinstance(spec, dict) or spec.get("distribution") != "q_uniform":
            continue
        low, high, q = spec["min"], spec["max"], spec.get("q", 1.0)
        steps = (high - low) / q
        count = grid_points(spec)
        if count is None or not 0 < count <= GRID_LIMIT or abs(steps - round(steps)) > 1e-9:
            continue  # max is no step of q from min, or the grid was refused
        values = np.arange(low, high, q).tolist()
        if values[-1] >= high:
            continue  # the float steps reached max (np.arange(1, 1.3, 0.1) ends at 1.3)
        shown = [f"{v:.6g}" for v in values]
        if len(shown) > 8:
            shown = shown[:3] + ["..."] + shown[-2:]
        wider = high + q if all(isinstance(x, int) for x in (low, high, q)) else high + q / 2
        notes.append(f"note: {where}: {_path(name)}: a grid takes q_uniform as "
                     f"np.arange(min, max, q), as W&B's engine does, which leaves max out: "
                     f"{name} takes {', '.join(shown)} ({len(values)} values; not {high:g}); "
                     f"max: {wider:g} takes it in")


EXACT_INTEGERS = 2**53  # float64 holds every integer up to here, and not all beyond


def _check_integer_ranges(where: str, config: dict) -> None:
    """random and bayes draw int_uniform through scipy in float64 (sweeps/params.py ppf, then
    astype(int)): beyond 2**53 the draws are not the integers asked for, and near 2**63 they
    wrap to negative numbers."""
    if config.get("method") == "grid":
        return  # grid counts int_uniform out with Python's range: exact
    for name, spec in config["parameters"].items():
        if spec.get("distribution") == "int_uniform" and max(
                abs(spec["min"]), abs(spec["max"])) > EXACT_INTEGERS:
            raise UserError(f"{where}: {_path(name)}: int_uniform [{spec['min']}, "
                            f"{spec['max']}]: the engine draws integers through 64-bit floats, "
                            f"exact only within +-2**53 ({EXACT_INTEGERS:,}): use a smaller "
                            "range")


MAX_BRACKETS = 100  # hyperband's min_iter form makes exactly 100


def _check_hyperband_brackets(where: str, config: dict) -> None:
    """The engine lists hyperband's brackets one by one (sweeps/hyperband_stopping.py: up to
    `s` of them, dividing max_iter by eta until it is below 1) at every stop decision: count
    them first, so that s = 10**18 with eta = 1.000001 is refused, not enumerated. max_iter
    without s passes the schema beside min_iter, but the engine takes the max_iter form
    whenever max_iter is given and reads s with it (a KeyError at the first stop decision,
    in `wandb controller` too), as an integer (range(s): the schema takes s: 2.0, the
    engine fails on it)."""
    terminate = config.get("early_terminate") or {}
    if terminate.get("type") != "hyperband" or "max_iter" not in terminate:
        return
    if "s" not in terminate:
        raise UserError(f"{where}: early_terminate.max_iter: {terminate['max_iter']} without "
                        "s: hyperband's engine takes its brackets from max_iter and s "
                        "whenever max_iter is given (min_iter is then not read) and fails "
                        "without s: add s (the number of brackets), or leave max_iter out "
                        "to stop runs from min_iter on")
    s = terminate["s"]
    if isinstance(s, float) and not isinstance(s, bool):  # the schema takes any number
        raise UserError(f"{where}: early_terminate.s: {s!r} is not an integer: hyperband's "
                        "engine makes up to s brackets with range(s), which fails on a float: "
                        + (f"write {int(s)}" if s.is_integer() else "write an integer"))
    max_iter, eta, s = terminate["max_iter"], terminate.get("eta", 3), terminate.get("s", 0)
    if max_iter < 1 or eta <= 1:
        return  # the engine refuses these in one line itself
    brackets = min(s, math.floor(math.log(max_iter) / math.log(eta)) + 1)
    if brackets > MAX_BRACKETS:
        raise UserError(f"{where}: early_terminate: hyperband with max_iter={max_iter}, "
                        f"eta={eta} and s={s} has {brackets:,} brackets, more than the "
                        f"{MAX_BRACKETS} it may have: use a larger eta or a smaller s")


def _count(number: int | float) -> str:
    if number == math.inf:
        return "infinitely many"
    if number < 10**15:
        return f"{int(number):,}"
    return f"about 10^{len(str(int(number))) - 1}"


# --- W&B's sweep keys -----------------------------------------------------------------------

def _check_keys(where: str, config: dict) -> None:
    for key in config:
        reason = TOP_LEVEL_KEYS[key]  # the keys outside W&B's schema were left out
        if reason and not (key == "scheduler" and config[key] == {"engine": "wandb"}):
            raise UserError(f"{where}: {key}: not supported offline: {reason}")
    if config.get("method") == "custom":
        raise UserError(f"{where}: method: custom needs a custom scheduler (Optuna or Ax) run "
                        "by W&B's launch service; use grid, random or bayes")


def _check_name(where: str, config: dict) -> None:
    """The sweep's name: any text, as W&B's schema has it (the run group made of it is cut to
    W&B's limit and cleaned of unprintable characters: agent/sweep/target.py sweep_name)."""
    name = config.get("name")
    if name is not None and not isinstance(name, str):  # the schema refuses it first
        raise UserError(f"{where}: name: {brief(name)} is not allowed: expected text")


def _check_command(where: str, config: dict) -> None:
    try:
        check_program_command(config)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


def _check_metric_present(where: str, config: dict) -> None:
    if config.get("metric") is None and (config.get("method") == "bayes"
                                         or "early_terminate" in config):
        raise UserError(f"{where}: metric: required for method bayes and for "
                        "early_terminate, e.g. metric: {name: val/acc, goal: maximize}")


def _check_storable(where: str, config: dict) -> None:
    """The config goes into the store and to W&B as JSON; YAML reads unquoted dates as dates."""
    def find(value: Any, path: str) -> tuple[str, Any] | None:
        if isinstance(value, dict):
            for key, item in value.items():
                found = find(item, f"{path}.{key}" if path else str(key))
                if found:
                    return found
        elif isinstance(value, list):
            for index, item in enumerate(value):
                found = find(item, f"{path}[{index}]")
                if found:
                    return found
        elif not isinstance(value, (type(None), bool, int, float, str)):
            return path, value
        return None

    found = find(config, "")
    if found:
        path, value = found
        raise UserError(f"{where}: {path}: YAML reads {value!s} as a {type(value).__name__}, "
                        "which a sweep cannot store or pass on: quote it")


def _check_program_file(where: str, config: dict) -> None:
    """W&B's agent runs `python <program>` from the directory it starts in. Only a `program`
    the command hands to an interpreter as a script must be a file there: after `-m` it is a
    module (`python -m ${program}`), and as the command's first word an executable on the PATH
    (`${program} train ...`), which W&B's agent runs as given."""
    program_path = config.get("program")
    command = [str(token) for token in command_of(config) or []]
    if not program_path or "${program}" not in command or runs_our_trainer(config):
        return
    as_script = any(index > 0 and command[index - 1] != "-m"
                    for index, token in enumerate(command) if token == "${program}")
    if command[0] == "${program}" and shutil.which(program_path) is None \
            and not os.path.isfile(program_path):
        raise UserError(f"{where}: program: {program_path!r}, the command's first word, is "
                        f"neither a file in {Path.cwd()} nor a command on the PATH")
    if as_script and not os.path.isfile(program_path):
        raise UserError(f"{where}: program: {program_path!r} is not a file in {Path.cwd()} "
                        "(W&B's agent runs it from the directory it starts in): start from "
                        "the directory that holds it")


def _check_bayes_categories(where: str, config: dict) -> None:
    if config.get("method") != "bayes":
        return
    for name, spec in config.get("parameters", {}).items():
        if spec.get("distribution") == "categorical_w_probabilities":
            raise UserError(f"{where}: {_path(name)}: bayes cannot search "
                            "categorical_w_probabilities (the engine's Gaussian process fails "
                            "on it with an IndexError): drop probabilities, or use method random")


def _dry_run(where: str, config: dict) -> None:
    """Ask the engine what the first claim asks it, through the same boundary: catches what it
    only checks then (a uniform distribution in a grid, hyperband without bands, bayes on
    categorical_w_probabilities) and anything the store could not hold."""
    try:
        proposal = proposed_params(config, [])
        json.dumps(proposal)
        if config.get("early_terminate"):
            stop_decisions(config, [])
    except EngineError as error:
        raise UserError(f"{where}: {error}") from None


# --- what our trainer receives ---------------------------------------------------------------

def _fixed_arguments(where: str, config: dict) -> dict:
    """The trainer's arguments that the command fixes (`--dataset=digits` before ${args})."""
    with tempfile.TemporaryDirectory() as scratch:
        run = build_run(config, {}, sweep_id="check", run_id="check", wandb_dir=scratch)
        try:
            return trial_values(run)
        except UserError as error:
            raise UserError(f"{where}: command: {error}") from None


def creation_notes(config: dict) -> list[str]:
    """What a new sweep's creator is told besides its id: swept parameters no run uses, a
    q_ distribution whose rounding draws 0 or one value (agent/sweep/rounding_notes.py), a
    metric of our trainer searched in the direction that finds its worst runs, and a
    `${envvar:NAME}` of the command whose variable is not set (each run gets the name).
    Notes, not refusals: W&B accepts such sweeps, and they mean the same there."""
    from agent.sweep.rounding_notes import rounding_notes

    return idle_parameters(config) + rounding_notes(config) + metric_notes(config) + \
        hyperband_notes(config) + unset_variable_notes(config)


def hyperband_notes(config: dict) -> list[str]:
    """A note when hyperband's first band (the epoch at which it first compares runs,
    sweeps/hyperband_stopping.py) is at or past the last epoch of every run of our trainer:
    it then stops no run early (min_iter: 5 with epochs: 3). W&B accepts such a sweep, and it
    means the same there."""
    terminate = config.get("early_terminate") or {}
    if terminate.get("type") != "hyperband" or not runs_our_trainer(config):
        return []
    epochs = possible_values(config, "epochs")
    first = _first_band(terminate)
    if not epochs or first is None:
        return []
    try:
        longest = max(int(as_type(value, int)) for value in epochs)
    except (TypeError, ValueError):
        return []  # refused by the trial's checks, with its own line
    if first < longest:
        return []
    more = f"epochs above {first}"  # min_iter is 1 at least: more epochs always do
    if "max_iter" in terminate:
        how = (f"max_iter={terminate['max_iter']}, s={terminate.get('s')}, "
               f"eta={terminate.get('eta', 3)}")
        change = f"a larger s, a smaller max_iter or {more}"
    else:
        how = f"min_iter={terminate['min_iter']}"
        change = (f"min_iter below {longest} or {more}" if longest > 1 else more)
    return [f"note: early_terminate: hyperband first compares runs at epoch {first} ({how}), "
            f"and no run trains more than {longest} epoch(s): it stops no run early; "
            f"{change} brings it within the runs' epochs"]


def _first_band(terminate: dict) -> int | None:
    """The engine's first hyperband band (None where it has none and refuses the config)."""
    eta = terminate.get("eta", 3)
    if "max_iter" in terminate:
        band, bands = terminate["max_iter"], []
        for _ in range(min(terminate.get("s") or 0, MAX_BRACKETS)):
            band /= eta
            if band < 1:
                break
            bands.append(int(band))
        return min(bands) if bands else None
    return int(terminate["min_iter"]) if "min_iter" in terminate else None


def metric_notes(config: dict) -> list[str]:
    """A note when the sweep of our trainer minimizes a metric that is better high (val/acc)
    or maximizes one better low (val/loss). The filled config holds the engine's default
    (minimize) where the YAML gives no goal, as W&B's server does."""
    metric = config.get("metric") or {}
    name, goal = metric.get("name"), metric.get("goal", "minimize")
    if not runs_our_trainer(config) or name not in METRICS or goal == METRICS[name]:
        return []
    return [f"note: metric {name} is {goal}d (goal: {goal}, W&B's default when none is "
            f"given): bayes, hyperband, the status and the report will look for its "
            f"{'lowest' if goal == 'minimize' else 'highest'} runs; goal: {METRICS[name]} "
            "looks for the best"]


def idle_parameters(config: dict) -> list[str]:
    """Notes on the swept parameters no run of the sweep can use (Param.used_when): `hidden`
    swept while every run's model is cnn changes nothing, and its runs repeat each other. A
    note, not a refusal: W&B accepts such a sweep, and the runs still run."""
    fixed = command_arguments(config)
    notes = []
    for swept in swept_parameters(config):
        param = BY_NAME.get(swept.name)
        if param is None or param.used_when is None:
            continue
        other, wanted = param.used_when
        values = possible_values(config, other, fixed)
        if values is not None and not values & set(wanted):
            here = ", ".join(sorted(str(v) for v in values))
            notes.append(f"note: {swept.name} is swept but changes nothing here: only "
                         f"{param.where_used()} uses it (every run: {other}={here})")
    return notes


def command_arguments(config: dict) -> dict:
    """The trainer's arguments the sweep's command fixes ({} where it fixes none, or where
    it is not our trainer's command)."""
    with contextlib.suppress(UserError, ValueError, TypeError, OSError):
        return _fixed_arguments("", config)
    return {}


def possible_values(config: dict, name: str, fixed: dict | None = None) -> set | None:
    """The values parameter `name` of our trainer can take in the sweep's runs (lists as
    Choice): its `value`, its `values` (in a grid whose run_cap is below its size, those of
    the points it runs: engine.capped_grid), else what the command fixes (`fixed`,
    command_arguments) or its default; None for a distribution (any value in a range)."""
    spec = (config.get("parameters") or {}).get(name)
    if isinstance(spec, dict) and "value" in spec:
        return {choice(spec["value"])}
    points = capped_grid(config) if isinstance(spec, dict) and "values" in spec else None
    if points is not None:
        return {choice(point[name]) for point in points}
    if isinstance(spec, dict) and isinstance(spec.get("values"), list):
        return {choice(v) for v in spec["values"]}
    if spec is not None:
        return None  # a distribution: any value
    fixed = command_arguments(config) if fixed is None else fixed
    return {choice(fixed.get(name, BY_NAME[name].default))}


def _path(name, within: str = "parameters") -> str:
    """`parameters.lr` in a message; a name that is not plain printable text on one line
    (a newline, a non-string key) as its brief repr: `parameters['\\n']`."""
    if isinstance(name, str) and name.isprintable() and name.strip() == name and name:
        return f"{within}.{name}" if within else name
    return f"{within}[{brief(name, 40)}]"


def _check_trial_configs(where: str, config: dict, fixed: dict,
                         notes: list[str] | None = None) -> dict[str, list]:
    """Every configuration the sweep can hand the trial must pass `validate`: the fixed
    values together, each value every parameter can draw alone (all of them when few, else
    a range's ends and middle: a listed value is refused as written; in a grid whose run_cap
    is below its size, those of the points it runs, _grid_runs), then each rule between
    parameters by the probability of a combination it refuses (_judge_rules). Returns the
    values checked by name."""
    parameters = config["parameters"]
    for name in parameters:
        if name not in BY_NAME:
            raise UserError(f"{where}: {_path(name)}: unknown parameter {name!r}"
                            f"{close_parameter(name)}: "
                            "allowed are " + ", ".join(p.name for p in PARAMS))
        if name in AGENT_PARAMETERS:
            raise UserError(f"{where}: {_path(name)}: {AGENT_PARAMETERS[name]}")
    kinds = {name: (BY_NAME[name].type, BY_NAME[name].item_type) for name in parameters}
    base = {**fixed, **{name: as_type(spec["value"], *kinds[name])
                        for name, spec in parameters.items() if "value" in spec}}
    try:
        validate(base)
    except UserError as error:
        raise UserError(f"{where}: parameters (fixed values): {error}") from None
    drawn: dict[str, list] = {}
    points = _grid_runs(config)
    for name, spec in parameters.items():
        if "value" in spec:
            continue
        spread = _draws_inside(name, spec, config["method"])
        values = _candidates(where, name, spread, kinds[name])
        run = None if points is None else {repr(point[name]) for point in points}
        for index, value in enumerate(values):
            if run is not None and repr(typed(BY_NAME[name], value)) not in run:
                continue  # past the grid's run_cap: never handed to a trial
            try:  # alone (a null is the default): the rules are judged by their share
                if value is not None:
                    coerce(BY_NAME[name], value)
            except UserError as error:
                at = f".values[{index}]" if "values" in spec else \
                    f": {spread.how} can draw a value the trial refuses"
                raise UserError(f"{where}: {_path(name)}{at}: {error}") from None
        drawn[name] = values
    _judge_rules(where, config, base, notes, points)
    return drawn


def _grid_runs(config: dict) -> list[dict] | None:
    """The points a grid whose run_cap is below its size runs (engine.capped_grid: its first
    run_cap points), each {name: value typed as the trial holds it (rule_mass.typed)}; None
    where the grid runs every point, or for another method."""
    points = capped_grid(config)
    return None if points is None else [
        {name: typed(BY_NAME[name], value) if name in BY_NAME else value
         for name, value in point.items()} for point in points]


# The share of a sweep's runs that may draw a value the trial refuses: such a run fails at its
# start, in a second, its reason recorded, and the sweep goes on (W&B accepts the sweep, and
# its run fails alike). Below 1% a 100-run sweep loses less than one run on average; a
# distribution that puts more outside the range (a normal centred within 2.3 sigma of a
# bound) reads as a range mistaken rather than a rare tail, and is refused.
OUTSIDE_LIMIT = 0.01
# A probability below this is read as 0, silently: no sweep draws a billion runs (at a second
# each, 30 years of one agent), so a run with such a draw is never met, and a note of "1 run
# in 10**19" (a normal's tail 9 sigma out) only reads as a warning of something that happens.
NEGLIGIBLE = 1e-9


def _judge_draws_outside(where: str, config: dict, notes: list[str] | None) -> None:
    """Each parameter of our trainer that a random or bayes search draws from a distribution
    over a range (normal, q_beta, int_uniform, ...), judged by the probability that a draw,
    q-rounded as the engine rounds it, is a value the trial refuses (draw_mass.outside; for
    bayes, that share of the space its Gaussian process searches): below NEGLIGIBLE (0, or
    a tail no sweep reaches) passes silently, below OUTSIDE_LIMIT is a note in `notes`, more
    is refused in one line. `values` are each checked as written (_check_trial_configs): a
    grid runs every one."""
    if config.get("method") not in ("random", "bayes"):
        return
    for name, spec in config["parameters"].items():
        if name not in BY_NAME or name in AGENT_PARAMETERS \
                or spec.get("distribution") not in JUDGED:
            continue  # an unknown parameter is refused by _check_trial_configs
        found = outside(name, spec)
        if found.probability < NEGLIGIBLE:
            continue
        words, advice = _outside_words(name, spec, found)
        line = f"{where}: {_path(name)}: {words}"
        if found.probability >= OUTSIDE_LIMIT:
            raise UserError(f"{line}: {advice}")
        if notes is not None:
            notes.append(f"note: {line}; such a run fails at its start, its reason in the "
                         "sweep's results, and the sweep goes on (as on W&B)")


def _outside_words(name: str, spec: dict, found: Outside) -> tuple[str, str]:
    """What `found` draws that parameter `name` refuses, in words (`normal(mu=0.5,
    sigma=0.5) draws values outside what weight_decay allows (a number in [0, 10]), e.g.
    weight_decay=-0.33, with probability 16%`), and what to change where it is refused."""
    param, how = BY_NAME[name], found.how
    chance = _chance(found.probability, found.estimated)
    refuses = f"which {name} refuses ({param.allowed()}), {chance}"
    integer = param.type is bool or int in (param.type, param.item_type)
    if isinstance(found.example, float) and math.isnan(found.example):
        if "mu" in spec and math.exp(spec["mu"]) == 0:  # log_normal's scale e**mu
            return (f"{how} draws NaN (its scale e**mu is 0.0 below mu = -745), {refuses}",
                    "use a mu above -745")
        return (f"{how} draws NaN (no distribution has these parameters), {refuses}",
                "give sigma, a and b above 0, or use value: for a constant")
    if param.allowed_choices() is not None:
        return f"{how} draws numbers, {refuses}", f"use values: [...] of {name}'s"
    if integer and "q" not in spec and spec["distribution"] != "int_uniform":
        return (f"{how} draws non-integers, {refuses}",
                "use int_uniform, or a q_ distribution with an integer q")
    if integer and not float(spec.get("q", 1)).is_integer():
        return f"{how} draws non-integers, {refuses}", "use an integer q"
    if found.example is None:  # none of q's multiples in the range
        return f"{how} draws no value {name} takes, {refuses}", "use a smaller q"
    example = as_type(found.example, param.type, param.item_type)
    example = example[0] if isinstance(example, list) and len(example) == 1 else example
    shown = f"{example:.4g}" if isinstance(example, float) and len(repr(example)) > 10 \
        else repr(example)
    change = "a smaller q" if "q" in spec and (found.inside is None or "a" in spec) else \
        "a smaller sigma or a mu further inside" if "sigma" in spec else \
        "min and max within it"
    return (f"{how} draws values outside what {name} allows ({param.allowed()}), e.g. "
            f"{name}={shown}, {chance}",
            f"more than the {OUTSIDE_LIMIT:.0%} of runs a sweep may lose to values the trial "
            f"refuses: keep the distribution within the range ({change})")


def _chance(probability: float, estimated: bool = False) -> str:
    """`with probability 2.9e-07 (1 run in 3,500,000)`, `with probability 16%`."""
    bound = "about " if estimated else ""
    if probability >= 1:
        return "with probability 1 (every run)"
    if probability >= OUTSIDE_LIMIT:
        return f"with probability {bound}{percent(probability, 2)}%"
    runs = 1 / probability
    shown = f"{float(f'{runs:.2g}'):,.0f}" if runs < 1e9 else f"{runs:.1e}"
    number = f"{100 * probability:.2g}%" if probability >= 1e-4 else f"{probability:.2g}"
    return f"with probability {bound}{number} (1 run in {shown})"


def percent(share: float, digits: int) -> str:
    """`share` in percent, in `digits` significant digits, or as many more as keep one below
    1 below 100: 0.9999999 is '99.99999', not '1e+02' (what .2g gives from 99.5%)."""
    text = f"{100 * share:.{digits}g}"
    for more in range(digits + 1, 18):
        if share >= 1 or float(text) < 100:
            break
        text = f"{100 * share:.{more}g}"
    return "100" if share >= 1 else text


def _draws_inside(name: str, spec: dict, method: str) -> Draws:
    """What `spec` draws that the trial takes, for the checks of drawn values (each alone,
    the metric's val_split): a distribution over a range in a random or bayes
    search within what the parameter allows (what it draws outside was judged by its
    probability, _judge_draws_outside); anything else as engine.draws gives it."""
    if method in ("random", "bayes") and name in BY_NAME and name not in AGENT_PARAMETERS \
            and spec.get("distribution") in JUDGED:
        inside = outside(name, spec).inside
        if inside is not None:
            return inside
    return draws(spec, method)


def _candidates(where: str, name: str, spread: Draws, kind: tuple) -> list:
    """The values to check for one parameter: all it can draw, or a range's ends and middle
    (an infinite end the parameter cannot take is refused here, with a value it would draw)."""
    if spread.values is not None:
        return [as_type(value, *kind) for value in spread.values]
    param = BY_NAME[name]
    integral = kind[0] in (int, bool) or kind[1] is int
    if integral and not spread.whole:
        raise UserError(f"{where}: {_path(name)}: {spread.how} draws non-integers, and "
                        f"{name} is {param.allowed()}: use int_uniform, or a q_ distribution "
                        "with an integer q")
    ends = []
    for end in (spread.low, spread.high):
        if math.isfinite(end):
            ends.append(end)
            continue
        bound = param.minimum if end < 0 else param.maximum
        if bound is None and param.allowed_choices() is None and param.type is not bool:
            continue
        step = spread.step or 1.0
        bound = bound if bound is not None else 0
        example = (math.ceil(bound / step) - 1) * step if end < 0 else \
            (math.floor(bound / step) + 1) * step
        raise UserError(f"{where}: {_path(name)}: {spread.how} can draw values outside "
                        f"what {name} allows, e.g. {name}={as_type(example, *kind)!r}, and "
                        f"{name} is {param.allowed()}")
    if math.isfinite(spread.low) and math.isfinite(spread.high):
        inside = (spread.low + spread.high) / 2
    else:  # one infinite end: a value one step inside the finite one (or 1 on the whole line)
        inside = spread.low + 1 if math.isfinite(spread.low) else \
            spread.high - 1 if math.isfinite(spread.high) else 1.0
    step = spread.step or 1
    ends.append(round(inside / step) * step if spread.whole else inside)
    return [as_type(value, *kind) for value in ends]


def _judge_rules(where: str, config: dict, base: dict, notes: list[str] | None,
                 points: list[dict] | None = None) -> None:
    """Each rule between parameters (agent/params.py RULES) that reads a swept parameter,
    judged by the probability that a run draws values it refuses (agent/sweep/rule_mass.py:
    a random or bayes search's draws, each parameter apart; a grid's share of its runs), as
    _judge_draws_outside judges a range: below NEGLIGIBLE silent, below OUTSIDE_LIMIT a note,
    more refused in one line naming the fewest parameters that fail together and their
    values. A continuous range's end is drawn with probability 0 (momentum=0.0 of uniform
    [0, 0.99] with nesterov: W&B runs that sweep, and no run fails). A grid whose run_cap
    is below its size is judged by the `points` it runs (_grid_runs), each read whole."""
    parameters, method = config["parameters"], config["method"]
    full = dict(validate(base))
    marginals: dict[str, Any] = {}
    for names, rule in RULES:
        group = [name for name in names if name in parameters
                 and "value" not in parameters[name]]
        for name in group:
            if name not in marginals:
                marginals[name] = marginal(name, parameters[name], method)
        group = [name for name in group if marginals[name] is not None]
        if not group:
            continue  # the fixed values alone were validated
        found = refused_share(rule, full, group, marginals) if points is None else \
            refused_points(rule, full, group, points)
        if found is None or found.probability < NEGLIGIBLE:
            continue
        chosen = _fewest(base, found.example)
        line = f"{where}: {_drawn_together(parameters, chosen)}"
        chance = _grid_chance(found.probability, config) if method == "grid" else \
            _chance(found.probability, found.estimated)
        share = _share_of(chosen, marginals) if points is None else \
            sum(all(repr(point[k]) == repr(v) for k, v in chosen.items())
                for point in points) / len(points)
        if share < found.probability * (1 - 1e-9):  # one of several
            what = "combinations" if len(chosen) > 1 else "values"
            chance = f"one of the {what} this rule refuses, together {chance}"
        if found.probability >= OUTSIDE_LIMIT:
            raise UserError(f"{line}, {chance}: {found.error} (more than the "
                            f"{OUTSIDE_LIMIT:.0%} of runs a sweep may lose to values the "
                            "trial refuses)")
        if notes is not None:
            notes.append(f"note: {line}, which the trial refuses ({found.error}), {chance}; "
                         "such a run fails at its start, its reason in the sweep's results, "
                         "and the sweep goes on (as on W&B)")


def _share_of(chosen: dict, marginals: dict) -> float:
    """The probability that a run draws the values `chosen` (each parameter apart): a
    listed or lattice value its mass, a value of a continuous draw 0, a fixed one 1."""
    share = 1.0
    for name, value in chosen.items():
        cells = marginals.get(name)
        if cells is None:
            continue
        if cells.spans is not None:
            return 0.0
        share *= sum(mass for v, mass in zip(cells.values, cells.masses)
                     if v is not SKIP and v == value)
    return share


def _fewest(base: dict, example: dict) -> dict:
    """The fewest of `example`'s values that the trial refuses together over `base`."""
    for size in range(1, len(example) + 1):
        for subset in itertools.combinations(example, size):
            chosen = {name: example[name] for name in subset}
            try:
                validate({**base, **chosen})
            except UserError:
                return chosen
    return example


def _drawn_together(parameters: dict, chosen: dict) -> str:
    """`parameters: nesterov=True, momentum=0.0 can be drawn together`; one listed value
    as `parameters.kernel_size.values[1]: kernel_size=4 can be drawn`."""
    together = ", ".join(f"{name}={value!r}" for name, value in chosen.items())
    if len(chosen) > 1:
        return f"parameters: {together} can be drawn together"
    (name, value), = chosen.items()
    listed = parameters[name].get("values")
    param = BY_NAME[name]
    at = next((i for i, v in enumerate(listed or [])
               if as_type(v, param.type, param.item_type) == value), None)
    return f"{_path(name)}{'' if at is None else f'.values[{at}]'}: {together} can be drawn"


def _grid_chance(share: float, config: dict) -> str:
    """`in 2 of the grid's 400 runs (0.5%)`: a grid runs every point, once (a value listed
    twice is one point, engine.planned_runs); one whose run_cap is below its size, its first
    run_cap points: `in 1 of the grid's 4 runs (25%; run_cap 4 of its 12 points)`."""
    size, runs = planned_runs({**config, "run_cap": None}), planned_runs(config)
    refused = max(1, round(share * runs))
    capped = f"; run_cap {runs:,} of its {size:,} points" if runs < size else ""
    return f"in {refused:,} of the grid's {runs:,} runs ({percent(share, 3)}%{capped})"


def _check_metric(where: str, config: dict, fixed: dict, notes: list[str] | None) -> None:
    metric = config.get("metric")
    if metric is None:
        return
    name = metric["name"]
    if name not in SCALARS:
        found = metrics.find(name)
        why = (f"{name} is logged at steps, not in the epoch history a sweep reads"
               if found is not None and found.when == metrics.STEP else
               f"{name!r} is not a number trials report after an epoch or at their end")
        raise UserError(f"{where}: metric.name: {why}: expected one of "
                        f"{', '.join(METRICS)} (or another of agent/metrics.py: "
                        f"{', '.join(n for n in SCALARS if n not in METRICS)})")
    if "early_terminate" in config and SCALARS[name] != metrics.EPOCH:
        raise UserError(f"{where}: metric.name: early_terminate needs a metric logged every "
                        f"epoch, and {name} is only in the summary: use one of "
                        + ", ".join(EPOCH_METRICS))
    if name.startswith(VALIDATION_PREFIX):
        _judge_validation_split(where, config, fixed, notes)


def _no_validation_split(config: dict) -> None:
    """The sweep's metric is measured on the validation split: val_split 0 leaves none."""
    if not config["val_split"] > 0:
        raise UserError(f"val_split={config['val_split']!r} leaves no validation split")


def _judge_validation_split(where: str, config: dict, fixed: dict,
                            notes: list[str] | None) -> None:
    """A metric measured on the validation split (val/...) with val_split 0: no run drawing
    it reports the metric. Judged by the probability that a run draws it, as the rules
    between parameters are (_judge_rules): 0.0 as a continuous range's end is never drawn
    (val_split uniform [0, 0.2] is fine), a listed 0.0 is 1/n of the draws, a grid's its
    share of the runs; below NEGLIGIBLE silent, below OUTSIDE_LIMIT a note, more refused."""
    parameters, method, name = config["parameters"], config["method"], config["metric"]["name"]
    base = validate({**fixed, **{k: s["value"] for k, s in parameters.items() if "value" in s}})
    spec = parameters.get("val_split")
    points = _grid_runs(config)
    if spec is None or "value" in spec:
        probability, value, estimated = (0.0 if base.val_split > 0 else 1.0), base.val_split, False
    else:
        cells = marginal("val_split", spec, method)
        found = refused_points(_no_validation_split, dict(base), ["val_split"], points) \
            if points is not None else None if cells is None else \
            refused_share(_no_validation_split, dict(base), ["val_split"], {"val_split": cells})
        if found is None:
            return
        probability, value, estimated = \
            found.probability, found.example["val_split"], found.estimated
    if probability < NEGLIGIBLE:
        return
    chance = _grid_chance(probability, config) if method == "grid" and spec is not None \
        and "value" not in spec else _chance(probability, estimated)
    gives = f"every run of this sweep gets val_split={value!r}" if probability >= 1 else \
        f"this sweep can give val_split={value!r}, {chance},"
    line = f"{where}: metric.name: {name} is measured on the validation split, and {gives} " \
        "which leaves none"
    if probability >= OUTSIDE_LIMIT:
        raise UserError(f"{line}, so such runs would not report it: use val_split > 0, or a "
                        "train/ or test/ metric")
    if notes is not None:
        notes.append(f"note: {line}: such a run reports no {name}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())

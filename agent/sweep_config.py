"""Sweep YAML files: loaded safely and checked by W&B's own engine schema and by our run
parameters, so a sweep that would fail on its first run fails here, in one line, instead."""

from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from agent.errors import UserError
from agent.params import BY_NAME, PARAMS, coerce

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the engine warns about its pydantic settings on import
    import sweeps

# Metrics a sweep may optimise: names the trial reports per epoch or in its summary
# (agent/trial.py); keep in step with it.
SWEEP_METRICS = ("val/acc", "val/loss", "val/best_acc", "test/acc", "test/loss",
                 "train/loss", "train/acc")


def load_sweep_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"sweep file {str(path)!r}: no such file") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise UserError(f"sweep file {str(path)!r}: YAML {problem}{where}") from None
    if not isinstance(config, dict):
        raise UserError(f"sweep file {str(path)!r}: expected a mapping with method, metric "
                        "and parameters")
    try:
        violations = sweeps.schema_violations_from_proposed_config(config)
    except ValueError as error:
        violations = [str(error)]
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise UserError(f"sweep file {str(path)!r}: {violations[0]}{more}")
    metric = (config.get("metric") or {}).get("name")
    if metric is not None and metric not in SWEEP_METRICS:
        raise UserError(f"sweep file {str(path)!r}: metric {metric!r} is not reported by "
                        f"the trial runner; allowed are {', '.join(SWEEP_METRICS)}")
    for name, spec in config.get("parameters", {}).items():
        check_parameter(path, name, spec)
    return config


def check_parameter(path: Path, name: str, spec: dict) -> None:
    """A sweep parameter must be a run parameter, and every value it can take allowed."""
    if name not in BY_NAME:
        raise UserError(f"sweep file {str(path)!r}: unknown parameter {name!r}; allowed are "
                        + ", ".join(p.name for p in PARAMS))
    param = BY_NAME[name]
    candidates = []
    if "value" in spec:
        candidates.append(spec["value"])
    candidates += list(spec.get("values", []))
    candidates += [spec[k] for k in ("min", "max") if k in spec]
    for value in candidates:
        try:
            coerce(param, value)
        except UserError as error:
            raise UserError(f"sweep file {str(path)!r}: {error}") from None


def parameter_names(config: dict) -> set[str]:
    return set(config.get("parameters", {}))

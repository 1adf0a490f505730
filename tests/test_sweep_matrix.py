"""Every distribution of the sweep engine's schema x every method x every parameter type: each
cell is created as a local sweep, claimed, stored in a real SQLite store and validated, or
refused in one line with nothing created. Distributions and methods are read from the engine's
own schema (sweeps/config/schema.json), parameter types from agent/params.py."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import yaml

from agent.params import BY_NAME, PARAMS, validate
from agent.sweep.controller import claim
from agent.sweep.engine import proposed_batch, proposed_params, run_field
from agent.sweep.status import planned_runs
from agent.sweep.store import Run
from agent.sweep.target import create_local_sweep
from engine_schema import SCHEMA, schema_distributions
from util.errors import UserError

DISTRIBUTIONS = schema_distributions()
METHODS = [m for m in SCHEMA["properties"]["method"]["enum"] if m != "custom"]
TYPES = sorted({p.type.__name__ for p in PARAMS})
# The base-e forms (min and max are natural logs), which W&B runs after a warning: each cell
# takes the bounds of its _values form, so it can draw what that form draws.
BASE_E = {"log_uniform": "log_uniform_values", "q_log_uniform": "q_log_uniform_values",
          "inv_log_uniform": "inv_log_uniform_values"}
GRID_DISTRIBUTIONS = {"categorical", "constant", "int_uniform", "q_uniform"}  # grid_search.py

# One parameter per type, and the numbers its specs use (chosen inside what it allows).
CASES = {
    "int": ("seed", {"values": [32, 64], "value": 64, "min": 32, "max": 64, "q": 16,
                     "mu": 4.0, "sigma": 0.5, "a": 2.0, "b": 2.0}),
    "float": ("weight_decay", {"values": [0.001, 0.01], "value": 0.01, "min": 0.5, "max": 4.0,
                               "q": 1, "mu": 0.5, "sigma": 0.5, "a": 2.0, "b": 2.0}),
    "bool": ("augment", {"values": [True, False], "value": True, "min": 0, "max": 1, "q": 1,
                         "mu": 0.0, "sigma": 0.5, "a": 2.0, "b": 2.0}),
    "str": ("optimizer", {"values": ["sgd", "adam"], "value": "adam", "min": 0, "max": 1,
                          "q": 1, "mu": 0.0, "sigma": 0.5, "a": 2.0, "b": 2.0}),
    "list": ("channels", {"values": [[16, 32], [32, 64]], "value": [16, 32], "min": 8,
                          "max": 64, "q": 8, "mu": 3.0, "sigma": 0.5, "a": 2.0, "b": 2.0}),
}
# The log distributions need min > 0: bool and str start their range at 0.5 for them.
POSITIVE_MIN = {"bool": 0.5, "str": 0.5}

# What a parameter of each type refuses (random and bayes): a distribution of which 1% or
# more of the draws (q-rounded as the engine rounds them) are values the parameter refuses
# (agent/sweep/draw_mass.py, from the distributions' definitions in W&B's sweep-configuration
# reference and the parameter's range in PARAMS): continuous draws are not whole numbers;
# q_normal rounds 2.3% of weight_decay's draws below 0 (mu 0.5, sigma 0.5), 16% of augment's
# to -1 and 98% of channels' to 0; q_log_normal rounds 21% of augment's above 1; q_beta
# rounds every channels draw to 0; numbers are not optimizer names. What a parameter takes
# almost always is a note, not a refusal: weight_decay's log_normal and q_log_normal draw
# above 10 with probability 1.6e-4 and 1.1e-4, channels' q_log_normal rounds 6e-4 of its
# draws to 0; seed's q_normal (mu 4, q 16) rounds below 0 with probability 1.4e-127, read as 0.
CONTINUOUS = {"uniform", "log_uniform_values", "inv_log_uniform_values", "normal", "log_normal",
              "beta"}
REFUSED_FOR_TYPE = {
    "int": CONTINUOUS,
    "float": {"normal", "q_normal"},
    "bool": CONTINUOUS | {"q_normal", "q_log_normal"},
    "str": CONTINUOUS | {"int_uniform", "q_uniform", "q_log_uniform_values", "q_normal",
                         "q_log_normal", "q_beta"},
    "list": CONTINUOUS | {"q_normal", "q_beta"},
}


def spec_for(distribution: str, kind: str, q_type: type) -> dict:
    """A spec of `distribution` for the type's parameter: the keys its schema definition has."""
    if distribution in BASE_E:  # inv_log_uniform draws e**-max..e**-min
        spec = spec_for(BASE_E[distribution], kind, q_type)
        low, high = math.log(spec["min"]), math.log(spec["max"])
        inverse = distribution.startswith("inv_")
        return {**spec, "distribution": distribution, "min": -high if inverse else low,
                "max": -low if inverse else high}
    numbers = dict(CASES[kind][1])
    if "log_uniform" in distribution:
        numbers["min"] = POSITIVE_MIN.get(kind, numbers["min"])
    if distribution == "constant":
        return {"value": numbers["value"]}
    if distribution == "categorical":
        return {"values": numbers["values"]}
    if distribution == "categorical_w_probabilities":
        return {"distribution": distribution, "values": numbers["values"],
                "probabilities": [0.5, 0.5]}
    definition = next(d for d in SCHEMA["definitions"].values()
                      if distribution in str(d.get("properties", {}).get("distribution", {}))
                      or any(distribution in str(v.get("properties", {}).get("distribution", {}))
                             for v in d.get("anyOf", [])))
    keys = set(definition.get("properties", {}))
    for variant in definition.get("anyOf", []):
        keys |= set(variant.get("properties", {}))
    spec = {"distribution": distribution}
    for key in sorted(keys - {"distribution"}):
        spec[key] = q_type(numbers[key]) if key == "q" else numbers[key]
    if distribution == "int_uniform":
        spec["min"], spec["max"] = int(spec["min"]), int(spec["max"])
    return spec


def expected_refusal(distribution: str, method: str, kind: str) -> str | None:
    """The word the one-line refusal must hold, or None when the cell must run."""
    if method == "grid" and distribution in BASE_E:
        return "grid"
    distribution = BASE_E.get(distribution, distribution)  # draws what its _values form draws
    if method == "grid" and distribution not in GRID_DISTRIBUTIONS:
        return "grid"
    if method == "bayes" and distribution == "categorical_w_probabilities":
        return "bayes cannot"
    if method != "grid" and distribution in REFUSED_FOR_TYPE[kind]:
        return f"parameters.{CASES[kind][0]}"
    if method == "grid" and kind == "str" and distribution in ("int_uniform", "q_uniform"):
        return f"parameters.{CASES[kind][0]}"
    return None


CELLS = [(d, m, k, q) for d in DISTRIBUTIONS for m in METHODS for k in TYPES
         for q in ((int, float) if d.startswith("q_") else (float,))]


def test_the_matrix_is_read_from_the_engine_and_the_parameter_table():
    assert len(DISTRIBUTIONS) >= 18 and {"q_beta", "q_log_normal", "int_uniform"} <= set(
        DISTRIBUTIONS)
    assert set(METHODS) == {"grid", "random", "bayes"}
    assert set(TYPES) == set(CASES) == {"int", "float", "bool", "str", "list"}
    for kind, (name, _) in CASES.items():
        assert BY_NAME[name].type.__name__ == kind
    assert len(CELLS) == 360


OWNER = "matrix-agent"


def exact_type(name: str, value) -> bool:
    param = BY_NAME[name]
    if param.type is list:
        return type(value) is list and all(type(v) is param.item_type for v in value)
    return type(value) is param.type


def claim_and_check(store, name: str) -> dict:
    """One claim: the stored config (read back from SQLite) is the claim's, of the parameter's
    exact Python type, and a valid trial config."""
    work = claim(store, OWNER)
    assert work.kind == "run", work
    (claimed,) = work.runs
    stored = next(r for r in store.runs() if run_field(r, "id") == claimed.run_id)
    config = run_field(stored, "config")
    assert config == claimed.config
    assert exact_type(name, config[name]), (config[name], type(config[name]))
    validate(config)
    return stored


@pytest.mark.parametrize("distribution, method, kind, q_type", CELLS,
                         ids=[f"{d}-{m}-{k}-q{q.__name__}" for d, m, k, q in CELLS])
def test_cell_is_claimed_stored_and_valid_or_refused_in_one_line(
        tmp_path, monkeypatch, distribution, method, kind, q_type):
    monkeypatch.chdir(tmp_path)
    random.seed(0)  # the engine's draws: a cell whose distribution draws a refused value
    np.random.seed(0)  # once in thousands (a note at creation) is not a flaky test
    name = CASES[kind][0]
    spec = spec_for(distribution, kind, q_type)
    sweep = {"command": ["${env}", "python", "-m", "agent.train", "${args}"], "method": method,
             "metric": {"name": "train/loss", "goal": "minimize"},
             # a second swept parameter: bayes needs one to search, and its 0.0 is falsy
             "parameters": {name: spec, "label_smoothing": {"values": [0.0, 0.1]},
                            "epochs": {"value": 1}}}
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(sweep))
    refusal = expected_refusal(distribution, method, kind)
    if refusal is not None:
        with pytest.raises(UserError) as caught:
            create_local_sweep(path)
        message = str(caught.value)
        assert "\n" not in message and refusal in message, message
        assert not (tmp_path / "data").exists()  # nothing created
        return
    store = create_local_sweep(path)
    first = claim_and_check(store, name)
    if method == "random":
        for _ in range(2):  # draws differ from claim to claim
            claim_and_check(store, name)
        return
    # bayes and grid read the runs so far: feed the first back as finished and claim again
    store.finish(run_field(first, "id"), OWNER, "finished", {"train/loss": 1.0})
    if method == "bayes":
        claim_and_check(store, name)
        return
    point = lambda config: repr((config[name], config["label_smoothing"]))  # noqa: E731
    seen = {point(run_field(first, "config"))}
    while (work := claim(store, OWNER)).kind == "run":
        (claimed,) = work.runs
        assert point(claimed.config) not in seen  # every point once: the engine knows ours
        seen.add(point(claimed.config))
        store.finish(claimed.run_id, OWNER, "finished", {"train/loss": 1.0})
    assert len(seen) <= 400, "the grid does not end"
    assert len(seen) == 2 * grid_size(spec) == planned_runs(sweep)  # as the status says


def grid_size(spec: dict) -> int:
    if "value" in spec:
        return 1
    if "values" in spec:
        return len(spec["values"])
    if spec["distribution"] == "int_uniform":
        return spec["max"] - spec["min"] + 1
    return math.ceil((spec["max"] - spec["min"]) / spec["q"])  # np.arange(min, max, q)


BATCH_CELLS = [cell for cell in CELLS if cell[1] in ("grid", "random")
               and expected_refusal(cell[0], cell[1], cell[2]) is None]


@pytest.mark.parametrize("distribution, method, kind, q_type", BATCH_CELLS,
                         ids=[f"{d}-{m}-{k}-q{q.__name__}" for d, m, k, q in BATCH_CELLS])
def test_a_packed_claims_proposals_from_one_engine_call_are_those_of_one_call_a_run(
        distribution, method, kind, q_type):
    # A claim of K runs asks the engine once for K (sweeps.next_runs(n=K)): for grid and
    # random that is exactly what K calls give, each seeing the ones before as running.
    name = CASES[kind][0]
    sweep = {"command": ["${env}", "python", "-m", "agent.train", "${args}"], "method": method,
             "metric": {"name": "train/loss", "goal": "minimize"},
             "parameters": {name: spec_for(distribution, kind, q_type),
                            "label_smoothing": {"values": [0.0, 0.1]}, "epochs": {"value": 1}}}
    done = [Run(id="f", seq=1, config=proposed_params(sweep, []), state="finished")]
    for n in (1, 3, 7):
        random.seed(n)
        np.random.seed(n)
        batch = proposed_batch(sweep, done, n)
        random.seed(n)
        np.random.seed(n)
        one_by_one, seen = [], list(done)
        while len(one_by_one) < n and (params := proposed_params(sweep, seen)) is not None:
            one_by_one.append(params)
            seen.append(Run(id=f"p{len(seen)}", seq=len(seen) + 1, config=params,
                            state="running"))
        assert batch == one_by_one
        assert len(batch) == (n if method == "random" else min(n, 2 * grid_size(
            sweep["parameters"][name]) - 1))

"""Rules between parameters (agent/params.py RULES: nesterov needs sgd with momentum > 0) judged
by the probability that a run draws values they refuse, as W&B's engine draws them
(agent/sweep/rule_mass.py): a continuous range's end is drawn with probability 0, a q_ lattice
point and a log form's underflow to 0.0 with their mass, a listed value with 1/n, a grid's
point in its share of the grid's runs. For each rule of two parameters or more, every
distribution of the engine's schema on the parameter whose refused value it reaches (momentum's
0.0), beside the rule's other parameters listed or fixed, through the sweep check the launcher
runs (load_sweep_config): the probability its note or refusal says against the share of 4,000
draws of the engine's own ppf that the trial's validation refuses though each value passes
alone; silent where that share is 0; a note below 1%, a refusal in one line from 1%. Then the
grid's share, the threshold below which a probability is read as 0, and `./run_sweep.sh
--dry-run` on the sweep that was refused for momentum=0.0 of uniform [0, 0.99]."""

from __future__ import annotations

import math
import re
import subprocess
import warnings

import numpy as np
import pytest
import yaml

from agent.params import BY_NAME, RULES, coerce, validate
from agent.sweep.config import OUTSIDE_LIMIT, load_sweep_config
from agent.sweep.engine import as_type, engine_config, proposed_params
from conftest import ROOT, subprocess_env, sweep_check
from engine_schema import schema_distributions
from util.errors import UserError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter


# For each rule of two parameters or more: the parameter whose refused value a distribution
# reaches, and a spec of every distribution of the schema on it, its draws reaching that value
# where the distribution can (what it draws outside the range alone stays below 1%, or the
# range check refuses it first: `RANGE`). momentum's refused value under nesterov is 0.0, the
# lower end of its range [0, 1).
REACHING = {
    "_nesterov_needs_sgd": ("momentum", {
        "uniform": {"min": 0.0, "max": 0.5},  # an end: probability 0
        "normal": {"mu": 0.5, "sigma": 0.1},  # crosses 0: probability 0 (the range's note)
        "beta": {"a": 1.0, "b": 5.0},  # its support's end: 0
        "log_normal": {"mu": -3.0, "sigma": 1.0},  # never 0 (above 1: 0.13%)
        "log_uniform_values": {"min": 1e-4, "max": 0.5},
        "inv_log_uniform_values": {"min": 1e-4, "max": 0.5},
        "q_uniform": {"min": 0.0, "max": 0.5, "q": 0.05},  # 0.0 below 0.025: 5%
        "q_normal": {"mu": 0.05, "sigma": 0.02, "q": 0.1},  # half of the draws round to 0
        "q_beta": {"a": 1.0, "b": 5.0, "q": 0.05},  # below 0.025: 11.9%
        "q_log_normal": {"mu": -6.0, "sigma": 1.0, "q": 0.0005},  # below 2.5e-4: 0.6%
        "q_log_uniform_values": {"min": 1e-3, "max": 0.5, "q": 0.01},  # below 0.005: 26%
        "q_log_uniform": {"min": math.log(1e-3), "max": math.log(0.5), "q": 0.01},
        # e**u is 0.0 below u = -745.13 (float64's underflow): 0.65% of the draws
        "log_uniform": {"min": -750.0, "max": -1.0},
        "inv_log_uniform": {"min": 1.0, "max": 750.0},  # e**-u: 0.0 above u = 745.13
        "int_uniform": {"min": 0, "max": 1},  # its 1 is out of range: RANGE
        "categorical": {"values": [0.0, 0.5, 0.9]},
        "categorical_w_probabilities": {"values": [0.0, 0.9], "probabilities": [0.004, 0.996]},
        "constant": {"value": 0.0},
    }),
}
RANGE = {("momentum", "int_uniform")}
# The rule's other parameters: listed (a run draws each value with 1/n) or fixed
OTHERS = {"listed": {"nesterov": {"values": [True, False]}, "optimizer": {"value": "sgd"}},
          "fixed": {"nesterov": {"value": True}, "optimizer": {"value": "sgd"}},
          "sam": {"nesterov": {"value": True}, "optimizer": {"values": ["sam", "sgd"]},
                  "sam_base": {"values": ["sgd", "sgd", "adam"]}}}
DRAWS = 4000
HEAD = {"command": ["${env}", "python", "-m", "agent.train", "${args}"],
        "metric": {"name": "val/acc", "goal": "maximize"}}


def test_every_rule_of_two_parameters_and_every_distribution_is_covered():
    rules = {rule.__name__ for names, rule in RULES if len(names) >= 2}
    assert set(REACHING) == rules
    for name, specs in REACHING.values():
        assert set(specs) == set(schema_distributions()) and name in BY_NAME


def spec_of(distribution: str, numbers: dict) -> dict:
    if distribution == "constant":
        return dict(numbers)
    if distribution == "categorical":
        return {"values": numbers["values"]}
    return {"distribution": distribution, **numbers}


def judged(tmp_path, parameters: dict, method: str = "random") -> tuple[list[str], str | None]:
    """The notes of the sweep check, and its refusal (None where it accepts the sweep)."""
    return sweep_check(tmp_path / "s.yaml", {**HEAD, "method": method, "parameters": {
        "dataset": {"value": "digits"}, **parameters}})


def said_probability(line: str) -> float:
    """The probability a note or refusal says: `with probability 0.25% (1 run in 400)`,
    `with probability 2.9e-07`, `in 1 of the grid's 200 runs (0.5%)`."""
    found = re.search(r"with probability (?:about )?([0-9.e+-]+)(%?)", line) or \
        re.search(r"runs \(([0-9.e+-]+)(%)\)", line)
    return float(found.group(1)) / (100 if found.group(2) else 1)


def engine_share(parameters: dict, seed: int) -> float:
    """The share of DRAWS runs of a random search, each parameter drawn by the engine's ppf at
    its own uniform u (sweeps/params.py; tests/test_draw_mass.py checks that an array of u is
    the search's own), that the trial's validation refuses though each value passes alone."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name, spec in parameters.items():
        engine, us = HyperParameter(name, fill_parameter(name, dict(spec))[1]), \
            rng.uniform(0.0, 1.0, DRAWS)
        with np.errstate(all="ignore"):  # categorical_w_probabilities: by one u at a time,
            drawn = [engine.ppf(u) for u in us] if engine.type == engine.CATEGORICAL_PROB \
                else engine.ppf(us)  # as its search draws (its ppf of an array differs)
        columns[name] = list(np.broadcast_to(np.asarray(drawn, dtype=object), (DRAWS,)))
    refused = 0
    for i in range(DRAWS):
        run = {name: as_type(column[i], BY_NAME[name].type, BY_NAME[name].item_type)
               for name, column in columns.items()}
        try:
            for name, value in run.items():
                coerce(BY_NAME[name], value)
        except UserError:
            continue  # refused alone: the range check's
        try:
            validate(run)
        except UserError:
            refused += 1
    return refused / DRAWS


CELLS = [(rule, distribution, others) for rule, (_, specs) in REACHING.items()
         for distribution in sorted(specs) for others in OTHERS]


@pytest.mark.parametrize("rule, distribution, others", CELLS,
                         ids=[f"{r}-{d}-{o}" for r, d, o in CELLS])
def test_a_rule_is_judged_by_the_probability_the_engine_draws_what_it_refuses(
        tmp_path, rule, distribution, others):
    name, specs = REACHING[rule]
    parameters = {**OTHERS[others], name: spec_of(distribution, specs[distribution])}
    notes, refusal = judged(tmp_path, parameters)
    if (name, distribution) in RANGE:
        assert refusal is not None and f"parameters.{name}: " in refusal, refusal
        return
    said = [line for line in notes + [refusal or ""] if "can be drawn" in line]
    if refusal is not None and "parameters (fixed values)" in refusal:
        said = [refusal.replace("parameters (fixed values)", "with probability 1")]
    share = engine_share(parameters, seed=len(CELLS) + CELLS.index((rule, distribution, others)))
    if not said:
        assert share == 0, (notes, refusal)
        return
    (line,) = said
    assert "\n" not in line, line
    probability = said_probability(line)
    if "with probability 1:" in line:  # the fixed values alone: every run
        assert share == 1
        return
    # five binomial standard deviations (a floor near 0), and the message's two digits
    tolerance = 5 * math.sqrt(max(probability * (1 - probability), 1 / DRAWS) / DRAWS)
    assert abs(share - probability) <= tolerance + 0.05 * probability, (line, share)
    if probability < OUTSIDE_LIMIT:
        assert line.startswith("note: ") and refusal is None and \
            "such a run fails at its start" in line, line
    else:
        assert line == refusal and "more than the 1% of runs" in line, line


@pytest.mark.parametrize("spec, probability", [
    ({"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.05}, 0.5 * 0.05),
    ({"distribution": "q_uniform", "min": 0.0, "max": 0.99, "q": 0.01}, 0.5 * 0.005 / 0.99),
    ({"distribution": "log_uniform", "min": -750.0, "max": -1.0},
     0.5 * (750 - 1075 * math.log(2)) / 749),  # e**u below 2**-1075 is 0.0
    ({"distribution": "uniform", "min": 0.0, "max": 0.99}, None),  # its end: probability 0
    # rounds to 0 with probability Phi(-6.875) - Phi(-8.125) = 3.1e-12: read as 0
    ({"distribution": "q_normal", "mu": 0.3, "sigma": 0.04, "q": 0.05}, None),
])
def test_known_probabilities_of_nesterov_with_momentum(tmp_path, spec, probability):
    notes, refusal = judged(tmp_path, {**OTHERS["listed"], "momentum": spec})
    said = [line for line in notes + [refusal or ""] if "can be drawn" in line]
    if probability is None:
        assert said == [] and refusal is None, said
        return
    (line,) = said
    assert "nesterov=True, momentum=0.0 can be drawn together" in line, line
    assert said_probability(line) == pytest.approx(probability, rel=0.05)


def test_momentum_below_0_with_nesterov_is_the_range_checks_share(tmp_path):
    # the share of uniform [-0.5, 0.9] below 0 (5 / 14) is refused alone, whatever nesterov
    # is, and named so; what the rule refuses besides (momentum=0.0) has probability 0
    notes, refusal = judged(tmp_path, {**OTHERS["listed"], "momentum": {
        "distribution": "uniform", "min": -0.5, "max": 0.9}})
    assert refusal is not None and "\n" not in refusal and \
        "parameters.momentum: uniform(min=-0.5, max=0.9) draws values outside" in refusal \
        and "probability 36%" in refusal, refusal


def test_a_bayes_search_is_judged_as_the_random_one(tmp_path):
    spec = {"distribution": "q_uniform", "min": 0.0, "max": 0.99, "q": 0.01}
    parameters = {**OTHERS["listed"], "momentum": spec}
    assert judged(tmp_path, parameters, "bayes")[0] == judged(tmp_path, parameters)[0] != []


def grid_runs(config: dict) -> list[dict]:
    """Every run of the engine's own grid."""
    runs = []
    while (params := proposed_params(config, runs)) is not None:
        runs.append({"id": str(len(runs)), "state": "finished", "config": params,
                     "history": [], "summary": {}})
    return [run["config"] for run in runs]


@pytest.mark.parametrize("q, refused", [(0.05, True), (0.005, False)])
def test_a_grid_is_judged_by_its_share_of_runs_the_trial_refuses(tmp_path, q, refused):
    parameters = {**OTHERS["listed"], "momentum": {
        "distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": q}}
    notes, refusal = judged(tmp_path, parameters, "grid")
    runs = grid_runs(engine_config(yaml.safe_load((tmp_path / "s.yaml").read_text())))
    failing = 0
    for run in runs:
        try:
            validate(run)
        except UserError:
            failing += 1
    line = refusal if refused else next(n for n in notes if "can be drawn" in n)
    assert f"in {failing} of the grid's {len(runs)} runs" in line and failing == 1, line
    assert (refusal is not None) == (failing / len(runs) >= OUTSIDE_LIMIT)


@pytest.mark.parametrize("parameters, refused", [
    ({"nesterov": {"value": True}, "optimizer": {"values": ["sgd"] * 199 + ["adam"]}},
     "optimizer='adam' can be drawn, in 1 of the grid's 2 runs (50%)"),
    ({"val_split": {"values": [0.1] * 199 + [0.0]}},
     "val_split=0.0, in 1 of the grid's 2 runs (50%)"),
    ({"nesterov": {"value": True}, "momentum": {"values": [0.9, 0.9, 0.0, 0]}},
     "momentum=0.0 can be drawn, in 1 of the grid's 2 runs (50%)"),  # 0 and 0.0: one point
])
def test_a_grid_runs_a_value_listed_twice_once(tmp_path, parameters, refused):
    """W&B's grid runs each point once (a value listed again, or 1 and 1.0, is the same
    point: sweeps/grid_search.py), so a grid of sgd listed 199 times and adam once runs 2
    runs and one fails; the check counted 200 runs, 1 failing, and passed it with a note
    (0.5%)."""
    notes, refusal = judged(tmp_path, parameters, "grid")
    runs = grid_runs(engine_config(yaml.safe_load((tmp_path / "s.yaml").read_text())))
    assert len(runs) == 2
    assert refusal is not None and refused in refusal and "\n" not in refusal, refusal


def test_a_listed_value_a_rule_refuses_with_the_fixed_values_is_named_where_it_is(tmp_path):
    notes, refusal = judged(tmp_path, {"nesterov": {"value": True},
                                       "optimizer": {"values": ["sgd", "adam"]}}, "grid")
    assert refusal is not None and "parameters.optimizer.values[1]: optimizer='adam' can " \
        "be drawn, in 1 of the grid's 2 runs (50%)" in refusal, refusal


def test_a_long_list_repeating_its_values_is_judged_whole(tmp_path):
    """optimizer listed 800 times, sgd where the check's thinning of a long list kept a value
    and adam between (nesterov listed 300 times: 240,000 combinations, past the 200,000 read
    whole): half of the runs fail, and the check passed it silently, each adam's share given
    to a kept sgd beside it. A list repeating its values is read by its distinct values."""
    n = 800
    kept = set(np.linspace(0, n - 1, n // 2).round().astype(int).tolist())  # the thinning's
    optimizers = ["sgd" if i in kept else "adam" for i in range(n)]
    parameters = {"nesterov": {"values": [True] * 300}, "optimizer": {"values": optimizers}}
    assert engine_share(parameters, seed=1) > 0.45
    notes, refusal = judged(tmp_path, parameters)
    assert refusal is not None and "nesterov=True, optimizer='adam' can be drawn together, " \
        "with probability 50%:" in refusal, (notes, refusal)


def test_a_probability_just_below_1_is_said_in_digits_that_read_as_a_percentage(tmp_path):
    """kernel_size q_log_normal(mu=1.6, sigma=0.3, q=2): every draw even but the 4.9e-08 that
    round to 0 (the range check's): the rule's probability, 1 - 4.9e-08, read '1e+02%'."""
    notes, refusal = judged(tmp_path, {"kernel_size": {
        "distribution": "q_log_normal", "mu": 1.6, "sigma": 0.3, "q": 2}})
    assert refusal is not None and "kernel_size=4 can be drawn, one of the values this rule " \
        "refuses, together with probability 99.999995%:" in refusal, refusal


@pytest.mark.parametrize("method, parameters, said", [
    ("grid", {"nesterov": {"values": [True, False]}, "optimizer": {"values": ["sgd", "adam"]}},
     "nesterov=True, optimizer='adam' can be drawn together, in 1 of the grid's 4 runs (25%):"),
    ("grid", {"nesterov": {"values": [True, False]},
              "optimizer": {"values": ["sgd", "adam", "rmsprop"]}},
     "nesterov=True, optimizer='adam' can be drawn together, one of the combinations this "
     "rule refuses, together in 2 of the grid's 6 runs (33.3%):"),
    ("random", {"nesterov": {"values": [True, False]}, "optimizer": {"values": ["sgd", "adam"]}},
     "nesterov=True, optimizer='adam' can be drawn together, with probability 25%:"),
    ("random", {"nesterov": {"value": True}, "optimizer": {"values": ["sgd", "sam"]},
                "sam_base": {"values": ["sgd", "adam", "rmsprop", "adamw"]}},
     "optimizer='sam', sam_base='adam' can be drawn together, one of the combinations this "
     "rule refuses, together with probability 38%:"),
])
def test_a_refusal_says_where_its_combination_is_one_of_several(tmp_path, method, parameters,
                                                                 said):
    """The probability a refusal gives is the rule's whole share; where the combination it
    names is only one of the refused ones (sam with adam, rmsprop or adamw as its base: 12.5%
    each of the 38%), it says so, not that this combination is drawn that often."""
    notes, refusal = judged(tmp_path, parameters, method=method)
    assert refusal is not None and said in refusal, refusal


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("nesterov", ["{values: [true, false]}", "{value: true}"])
def test_the_dry_run_accepts_nesterov_with_a_continuous_momentum_from_0(tmp_path, nesterov):
    """W&B runs this sweep and no run fails: momentum is never exactly 0.0. The check refused
    it ("nesterov=True, momentum=0.0 can be drawn together", exit 2)."""
    (tmp_path / "m.yaml").write_text(
        "method: random\nmetric: {name: val/acc, goal: maximize}\nparameters:\n"
        "  dataset: {value: digits}\n  epochs: {value: 1}\n  optimizer: {value: sgd}\n"
        f"  nesterov: {nesterov}\n  momentum: {{distribution: uniform, min: 0, max: 0.99}}\n")
    done = subprocess.run([str(ROOT / "run_sweep.sh"), "m.yaml", "--dry-run"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "can be drawn" not in done.stdout + done.stderr and "valid sweep" in done.stdout
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace(
        "uniform, min: 0, max: 0.99", "q_uniform, min: 0, max: 0.9, q: 0.1"))  # 0.0: 5.6%
    done = subprocess.run([str(ROOT / "run_sweep.sh"), "m.yaml", "--dry-run"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=100)
    (line,) = done.stderr.splitlines()
    assert done.returncode == 2 and "nesterov=True" in line and "momentum=0.0" in line, line


def test_a_null_value_is_the_default_in_a_rule_as_the_trial_reads_it(tmp_path):
    # momentum null is its default 0.9, epochs null its default: only nesterov=True beside
    # momentum=0.0 fails, 2 of the 8 runs
    notes, refusal = judged(tmp_path, {"nesterov": {"values": [True, None]},
                                       "momentum": {"values": [None, 0.0]},
                                       "epochs": {"values": [None, 1]}}, "grid")
    assert refusal is not None and "nesterov=True, momentum=0.0 can be drawn together, in 2 " \
        "of the grid's 8 runs (25%)" in refusal, refusal


@pytest.mark.parametrize("method, spec, expected", [
    ("random", {"distribution": "uniform", "min": 0.0, "max": 0.2}, None),  # an end: never
    ("bayes", {"distribution": "uniform", "min": 0.0, "max": 0.2}, None),
    ("random", {"distribution": "normal", "mu": 0.2, "sigma": 0.02}, None),  # below 0: range's
    ("random", {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.05},
     ("refused", "with probability 5%")),  # 0.0 below 0.025 of [0, 0.5]
    ("random", {"values": [0.0, 0.1]}, ("refused", "with probability 50%")),
    ("random", {"values": [0.0] + [round(0.001 * i, 3) for i in range(1, 150)]},
     ("note", "with probability 0.67% (1 run in 150)")),
    ("grid", {"values": [0.0, 0.1]}, ("refused", "in 2 of the grid's 4 runs (50%)")),
    ("grid", {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.05},
     ("refused", "in 2 of the grid's 20 runs (10%)")),
    ("grid", {"values": [0.0] + [round(0.001 * i, 3) for i in range(1, 150)]},
     ("note", "in 2 of the grid's 300 runs (0.667%)")),
    ("random", {"value": 0.0}, ("refused", "every run of this sweep gets val_split=0.0")),
])
def test_a_validation_metric_is_judged_by_the_share_of_runs_without_a_validation_split(
        tmp_path, method, spec, expected):
    """metric val/acc with val_split 0.0 drawn: such a run reports no val/acc. Judged as the
    rules are: a continuous range's end 0.0 is never drawn (W&B runs that sweep and every run
    reports it), a listed or lattice 0.0 by its share of the draws or of the grid's runs: a
    note below 1%, a refusal in one line from 1%."""
    config = {"program": "agent/train.py", "method": method,
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "val_split": spec,
                             "lr": {"values": [0.1, 0.01]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    notes: list[str] = []
    if expected is not None and expected[0] == "refused":
        with pytest.raises(UserError) as refused:
            load_sweep_config(path, notes)
        text = str(refused.value)
        assert "metric.name: val/acc is measured on the validation split" in text, text
        assert expected[1] in text and "\n" not in text and "val_split=0.0" in text, text
        return
    load_sweep_config(path, notes)
    said = [note for note in notes if "val_split" in note]
    if expected is None:
        assert said == [], said
    else:
        (note,) = said
        assert expected[1] in note and "such a run reports no val/acc" in note, note

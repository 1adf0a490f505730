"""W&B conformance gaps found with real-world sweep configs: what `wandb sweep`/`wandb agent`
accept or refuse, and what W&B reads as a run's metric, is the same offline."""

import math
import os

import pytest
import yaml

from agent.sweep.config import load_sweep_config
from agent.sweep.program import flat_keys
from agent.sweep.target import sweep_name
from util.errors import UserError


def _write(tmp_path, config: dict) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


BASE = {"method": "random", "metric": {"name": "loss"},
        "parameters": {"lr": {"min": 0.001, "max": 0.1}}}


def test_a_program_run_as_a_module_is_not_a_file(tmp_path, monkeypatch):
    # lczerolens: poetry run python -m ${program}, program: scripts.simple_sae
    monkeypatch.chdir(tmp_path)
    load_sweep_config(_write(tmp_path, {**BASE, "program": "scripts.simple_sae", "command": [
        "poetry", "run", "python", "-m", "${program}", "${args}"]}))


def test_a_program_that_is_the_commands_executable_is_found_on_the_path(tmp_path, monkeypatch):
    # wandb-allennlp: command: [${program}, --subcommand=train, ..., ${args}]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    load_sweep_config(_write(tmp_path, {**BASE, "program": "mytool",
                                        "command": ["${program}", "train", "${args}"]}))
    with pytest.raises(UserError, match="nor a command on the PATH"):
        load_sweep_config(_write(tmp_path, {**BASE, "program": "no-such-tool",
                                            "command": ["${program}", "${args}"]}))


def test_a_script_program_must_still_be_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="is not a file"):
        load_sweep_config(_write(tmp_path, {**BASE, "program": "train.py"}))


@pytest.mark.parametrize("low, high", [(0, 0.5), (0.0, 1), (0, 1), (0.0, 1.0), (True, 1)])
def test_bounds_without_a_distribution_are_refused_exactly_where_wandb_sweep_refuses(
        tmp_path, monkeypatch, low, high):
    from wandb.apis.public.sweeps import _validate_config_and_fill_distribution

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    config = {**BASE, "program": "train.py", "parameters": {"dropout": {"min": low, "max": high}}}
    try:
        _validate_config_and_fill_distribution(config)
        wandb_refuses = False
    except ValueError:
        wandb_refuses = True
    try:
        load_sweep_config(_write(tmp_path, config))
        refused = None
    except UserError as error:
        refused = str(error)
    assert (refused is not None and "ambiguous" in refused) == wandb_refuses, refused


@pytest.mark.parametrize("name", ["x" * 200, "my sweep\n", "tab\tname"])
def test_any_sweep_name_wandb_accepts_is_accepted(tmp_path, monkeypatch, name):
    from agent.params import MAX_NAME

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    config = load_sweep_config(_write(tmp_path, {**BASE, "name": name, "program": "train.py"}))
    group = sweep_name(config, "sweep.yaml")
    assert group.isprintable() and 0 < len(group) <= MAX_NAME


def test_a_nested_logged_metric_is_read_under_its_dotted_name():
    row = {"_step": 2, "val": {"loss": 0.5, "acc": {"top1": 0.9}}, "loss": 1.0}
    flat = flat_keys(row)
    assert flat["val.loss"] == 0.5 and flat["val.acc.top1"] == 0.9 and flat["loss"] == 1.0
    assert flat_keys({"a.b": 1, "a": {"b": 2}})["a.b"] == 1  # a flat key logged as such wins


# W&B's old docs and intro notebooks drew batch sizes from q_log_uniform with min: log(32):
# W&B warns that the base-e forms are deprecated and runs them (wandb/sweeps#60 kept them).
BASE_E = {"log_uniform": {"min": -7.0, "max": -2.0},
          "q_log_uniform": {"min": math.log(32), "max": math.log(256), "q": 1},
          "inv_log_uniform": {"min": 2.0, "max": 7.0}}


@pytest.mark.parametrize("method", ["random", "bayes"])
@pytest.mark.parametrize("distribution", sorted(BASE_E))
def test_a_base_e_log_distribution_runs_with_wandbs_warning(tmp_path, monkeypatch, method,
                                                            distribution):
    import sweeps
    from agent.sweep.engine import proposed_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    spec = {"distribution": distribution, **BASE_E[distribution]}
    config = {**BASE, "method": method, "program": "train.py", "parameters": {
        "x": spec, "lr": {"min": 0.001, "max": 0.1}}}
    # what W&B does: the server's schema check is a warning, its engine proposes
    assert any("base-e" in m for m in sweeps.schema_violations_from_proposed_config(config))
    assert sweeps.next_run(config, [], validate=False) is not None

    notes = []
    filled = load_sweep_config(_write(tmp_path, config), notes)
    (note,) = notes
    assert note.startswith("note: ") and f"x uses {distribution}" in note and "\n" not in note
    low, high = math.exp(spec["min"]), math.exp(spec["max"])
    if distribution == "inv_log_uniform":
        low, high = math.exp(-spec["max"]), math.exp(-spec["min"])
    if distribution == "q_log_uniform":  # rounded to q = 1
        low, high = round(low), round(high)
    # the note says what the values are, not only that min and max are exponents
    assert note.endswith(f"x is drawn from {low:.4g} to {high:.4g} here)"), note
    for _ in range(20):
        value = proposed_params(filled, [])["x"]
        if distribution == "q_log_uniform":
            assert type(value) is int and low <= value <= high
        else:
            assert low <= value <= high


@pytest.mark.parametrize("bounds", [(1, 1000), (-1000, 1)], ids=["max 1000", "min -1000"])
@pytest.mark.parametrize("distribution", sorted(BASE_E))
def test_a_base_e_bound_past_a_float_is_noted_as_such_not_as_a_range_to_inf(
        tmp_path, monkeypatch, distribution, bounds):
    """min 1, max 1000 in a base-e form (the bounds, not their logs, were likely meant): the
    engine draws e**u up to e**1000, which overflows a float (inf), or down to e**-1000,
    which is 0. The note said "x is drawn from 2.718 to inf", as if inf were a bound; it
    names the exponents, the end a float cannot hold, and the _values form, without
    numpy's overflow warning on the way (finding that end, or the dry run's draw of it)."""
    import warnings

    import numpy as np
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter

    from agent.sweep.engine import proposed_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    spec = {"distribution": distribution, "min": bounds[0], "max": bounds[1]}
    config = {**BASE, "program": "train.py", "parameters": {"x": spec}}
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        filled = load_sweep_config(_write(tmp_path, config), notes)
        for _ in range(20):  # proposals past the float: the engine's draws, said once above
            proposed_params(filled, [])
    (note,) = notes
    exponent = {(1, 1000): 1000, (-1000, 1): -1000}[bounds]
    if distribution == "inv_log_uniform":  # e**-u
        exponent = -exponent
    past = f"e**{exponent} is 0 as a float" if exponent < 0 else \
        f"e**{exponent} overflows a float (inf)"
    power = "e**-u" if distribution == "inv_log_uniform" else "e**u"
    assert note.endswith(f"x is {power} for u from {bounds[0]} to {bounds[1]}, and {past}: "
                         f"likely a mistake, perhaps {distribution}_values was meant)"), note
    assert " inf here" not in note and "\n" not in note
    # true of the engine's own draws: its quantile function at that end is inf or 0
    drawn = HyperParameter("x", fill_parameter("x", dict(spec))[1])
    with np.errstate(over="ignore", under="ignore"):
        ends = drawn.ppf(np.array([0.0, 1.0])).tolist()
    assert (math.inf if exponent > 0 else 0.0) in ends, ends


@pytest.mark.parametrize("distribution", sorted(BASE_E))
def test_a_grid_over_a_base_e_distribution_is_refused_as_any_continuous_one(
        tmp_path, monkeypatch, distribution):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    config = {**BASE, "method": "grid", "program": "train.py", "parameters": {
        "x": {"distribution": distribution, **BASE_E[distribution]}}}
    with pytest.raises(UserError, match="the sweep engine rejects the sweep"):
        load_sweep_config(_write(tmp_path, config))

"""A q_ distribution whose rounding draws 0 where its range has none, one value, or a
bounded range's two ends: the sweep is read as W&B reads it (the same draws), with one note
naming the parameter and the share of its draws, checked against the engine's own draws.
The cases are generated from the engine's list of q_ distributions (its schema)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

from agent.sweep.engine import Q_DISTRIBUTIONS
from agent.sweep.target import sweep_notes
from conftest import subprocess_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the engine's pydantic model warns on import
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter


def engine_q_distributions() -> set[str]:
    """Every distribution of the engine's schema that takes a q."""
    from pathlib import Path

    import sweeps.config as config

    schema = json.loads((Path(config.__file__).parent / "schema.json").read_text())
    found = set()
    for definition in schema["definitions"].values():
        properties = definition.get("properties") or {}
        if "q" in properties and "distribution" in properties:
            found.update(properties["distribution"].get("enum", []))
    return found


# For each q_ distribution: (what the note says, spec). "zero": x=0 in a share of draws; "one":
# one value every time (or nearly); "ends": a bounded range's two ends only; None: no note.
CASES = {
    "q_uniform": [("zero", {"min": 0.001, "max": 0.1, "q": 0.01}),
                  ("zero", {"min": -0.1, "max": -0.001, "q": 0.01}),
                  ("one", {"min": 0.001, "max": 0.004, "q": 0.01}),
                  ("ends", {"min": 0.0, "max": 1.0}),  # q 1: 0 or 1
                  (None, {"min": -1.0, "max": 1.0, "q": 0.5}),  # 0 is in the range
                  (None, {"min": 0.01, "max": 0.1, "q": 0.01})],
    "q_log_uniform": [("zero", {"min": -10, "max": -2, "q": 0.01}),  # the brief's lr
                      ("one", {"min": -10, "max": -8, "q": 0.01}),
                      (None, {"min": math.log(32), "max": math.log(256), "q": 1})],
    "q_log_uniform_values": [("zero", {"min": 0.0001, "max": 0.1, "q": 0.001}),
                             ("one", {"min": 0.0001, "max": 0.1}),  # q 1: all 0
                             (None, {"min": 0.001, "max": 0.1, "q": 0.001}),
                             (None, {"min": 16, "max": 256, "q": 8})],
    "q_normal": [("one", {"mu": 0.001, "sigma": 0.001, "q": 0.1}),
                 (None, {"mu": 0.0, "sigma": 1.0, "q": 0.1})],  # 0 is where it is centred
    "q_log_normal": [("zero", {"mu": 0.0, "sigma": 1.0}),  # q 1: 24% are 0
                     (None, {"mu": 0.0, "sigma": 1.0, "q": 0.001})],
    "q_beta": [("ends", {"a": 2, "b": 5}),  # q 1: 0 or 1
               ("one", {"a": 1, "b": 1000, "q": 0.1}),
               (None, {"a": 2, "b": 5, "q": 0.1})],  # 0 is an end of beta's [0, 1]
}
PARAMS = [(distribution, expected, spec) for distribution in sorted(CASES)
          for expected, spec in CASES[distribution]]


def test_the_cases_are_every_q_distribution_of_the_engine():
    assert set(Q_DISTRIBUTIONS) == engine_q_distributions() == set(CASES)


def engine_draws(spec: dict) -> np.ndarray:
    """The engine's draw at 100,000 evenly spread quantiles (its sample() is ppf(uniform))."""
    drawn = HyperParameter("x", fill_parameter("x", dict(spec))[1])
    with np.errstate(all="ignore"):
        return np.asarray(drawn.ppf((np.arange(100_000) + 0.5) / 100_000), dtype=float)


def percent(note: str, before: str) -> float:
    """The percentage the note gives after `before`."""
    found = re.search(re.escape(before) + r" (over )?([0-9.]+)% of its draws", note)
    assert found, note
    return float(found.group(2))


def close(shown: float, share: float) -> bool:
    """A percentage shown with 2 significant digits (or 2 decimals near 100) agrees."""
    exact = share * 100
    return abs(shown - exact) <= max(0.006, 0.51 * 10 ** (math.floor(math.log10(exact)) - 1))


@pytest.mark.parametrize("distribution, expected, spec", PARAMS,
                         ids=[f"{d}-{e}-{i}" for i, (d, e, _) in enumerate(PARAMS)])
def test_a_q_distribution_is_noted_as_the_engine_draws_it(tmp_path, monkeypatch, distribution,
                                                          expected, spec):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    spec = {"distribution": distribution, **spec}
    config = {"program": "train.py", "method": "random",
              "metric": {"name": "loss", "goal": "minimize"},
              "parameters": {"x": spec, "other": {"values": [1, 2]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    notes = [n for n in sweep_notes("sweep.yaml") if n.startswith("note: parameters.x: ")]
    draws = engine_draws(spec)
    if expected is None:
        assert notes == []
        return
    (note,) = notes
    assert "\n" not in note and note.startswith(f"note: parameters.x: {distribution} with q=")
    assert "W&B's engine draws round(x / q) * q" in note
    if expected == "zero":
        share = float(np.mean(draws == 0))
        assert 0 < share < 0.99 and close(percent(note, "x=0 in"), share), (note, share)
        assert "keeps 0 out" in note or "fewer 0s" in note
    elif expected == "one":
        value = float(np.median(draws))
        shown = re.search(r"draws x=(\S+) (every time|in)", note)
        assert shown and float(shown.group(1)) == pytest.approx(value, abs=1e-12), note
        if shown.group(2) == "every time":
            assert np.all(draws == value), note
        else:
            assert np.mean(draws == value) >= 0.99 and close(
                percent(note, f"x={shown.group(1)} in"), float(np.mean(draws == value)))
    else:  # ends
        shown = re.search(r"draws x as (\S+) or (\S+) only", note)
        assert shown, note
        assert sorted(set(draws.tolist())) == [float(shown.group(1)), float(shown.group(2))]


@pytest.mark.parametrize("q, share", [(0.01, 0.59), (0.001, 0.30), (0.0001, 0.01)])
def test_the_share_of_the_range_rounded_to_0_follows_q(tmp_path, monkeypatch, q, share):
    """lr from e**-10 to e**-2 in log space: q/2 cuts the exponents at ln(q/2), so the
    share of the range that is 0 is (ln(q/2) + 10) / 8; a q below 2 e**-10 leaves none."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    config = {"program": "train.py", "method": "random",
              "parameters": {"lr": {"distribution": "q_log_uniform", "min": -10, "max": -2,
                                    "q": q}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    (note,) = [n for n in sweep_notes("sweep.yaml") if n.startswith("note: parameters.lr:")]
    exact = (math.log(q / 2) + 10) / 8
    assert round(exact, 2) == share
    assert close(percent(note, "lr=0 in"), exact), note
    assert "of the range in log space); a q below 9e-05 keeps 0 out" in note
    config["parameters"]["lr"]["q"] = 9e-05
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    assert [n for n in sweep_notes("sweep.yaml") if n.startswith("note: parameters.lr:")] == []
    assert np.all(engine_draws(config["parameters"]["lr"]) > 0)


def test_a_grid_whose_q_uniform_tries_one_value_is_noted(tmp_path, monkeypatch):
    """A grid takes q_uniform as np.arange(min, max, q): a q past max - min tries min only."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    config = {"program": "train.py", "method": "grid", "parameters": {
        "x": {"distribution": "q_uniform", "min": 0.001, "max": 0.004, "q": 0.01},
        "y": {"distribution": "q_uniform", "min": 0.001, "max": 0.1, "q": 0.01}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    notes = [n for n in sweep_notes("sweep.yaml") if n.startswith("note: parameters.")]
    assert notes == ["note: parameters.x: q_uniform with q=0.01 in a grid tries x=0.001 only: "
                     "W&B's grid takes np.arange(min, max, q), max left out; a q below 0.0029 "
                     "adds values"]


@pytest.mark.e2e
def test_our_trainers_sweep_says_its_weight_decay_is_0_in_most_runs(workdir):
    """./run_sweep.sh reading a sweep of our trainer whose weight_decay (0 allowed) is
    q_log_uniform from e**-12 to e**-4 with q 0.001: 0 in 55% of runs, which ran without a
    word; its lr so drawn (0 refused in 59% of draws) is refused in one line."""
    config = {"program": "agent/train.py", "method": "random",
              "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "weight_decay": {"distribution": "q_log_uniform", "min": -12,
                                              "max": -4, "q": 0.001}}}
    (workdir / "wd.yaml").write_text(yaml.safe_dump(config))
    dry = subprocess.run([sys.executable, "-m", "agent.launch", "wd.yaml", "--slurm", "1",
                          "--dry-run"], cwd=workdir, env=subprocess_env(),
                         capture_output=True, text=True, timeout=100)
    assert dry.returncode == 0, dry.stderr
    said = " ".join(line.lstrip("# ") for line in dry.stdout.splitlines())
    assert "parameters.weight_decay: q_log_uniform with q=0.001 draws weight_decay=0 in 55% " \
           "of its draws" in said, dry.stdout
    config["parameters"]["lr"] = {"distribution": "q_log_uniform", "min": -10, "max": -2,
                                  "q": 0.01}
    (workdir / "wd.yaml").write_text(yaml.safe_dump(config))
    refused = subprocess.run([sys.executable, "-m", "agent.launch", "wd.yaml", "--slurm", "1",
                              "--dry-run"], cwd=workdir, env=subprocess_env(),
                             capture_output=True, text=True, timeout=100)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "parameters.lr: q_log_uniform" in refused.stderr and \
        "e.g. lr=0.0, with probability 59%" in refused.stderr

"""The probability that a sweep distribution draws a value our trainer refuses
(agent/sweep/draw_mass.py), against W&B's own engine: every distribution of the engine's schema
x every kind of parameter (integer, number with closed and open ends, boolean, names, text,
list), its spec centred on each end of the parameter's range so that its draws straddle it.
The engine draws many values (sweeps.params.HyperParameter.ppf, the function its random search
calls with u uniform on [0, 1)), the trial's own validation refuses some, and the share refused
must match the closed form within a binomial tolerance (exactly, where it is 0 or 1). Then how
a sweep file is judged by that probability (silent, a note, a refusal) and the grid and
${envvar:NAME} notes."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import yaml

from agent.params import BY_NAME, validate
from agent.sweep.config import NEGLIGIBLE, OUTSIDE_LIMIT, load_sweep_config
from agent.sweep.draw_mass import JUDGED, listed_outside, outside, variable
from agent.sweep.engine import as_type, proposed_params
from agent.sweep.program import build_run, unset_variable_notes
from engine_schema import schema_distributions
from util.errors import UserError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sweeps.config.schema import fill_parameter
    from sweeps.params import HyperParameter

    import sweeps


DISTRIBUTIONS = schema_distributions()
# One parameter of each kind; the ends of its range (0 and 1 for those without numbers)
KINDS = {"integer": "epochs", "number": "weight_decay", "open below": "lr",
         "open above": "dropout", "boolean": "augment", "names": "optimizer",
         "text": "run_name", "list": "channels"}
DRAWS = 4000


def ends_of(name: str) -> list[float]:
    param = BY_NAME[name]
    if param.minimum is None or param.maximum is None:
        return [0.0, 1.0]
    return [float(param.minimum), float(param.maximum)]


def spec_around(distribution: str, centre: float, q_type: type) -> dict:
    """A spec of `distribution` whose draws straddle `centre` (an end of a range)."""
    s = max(0.5, abs(centre) / 2)
    q = q_type(1) if q_type is int else s / 4
    low, high = max(centre - s, 0.01), centre + s  # the log forms need min > 0
    by_name = {
        "uniform": {"min": centre - s, "max": centre + s},
        "int_uniform": {"min": math.floor(centre - s), "max": math.ceil(centre + s)},
        "normal": {"mu": centre, "sigma": s / 2},
        "log_normal": {"mu": math.log(max(centre, 0.5)), "sigma": 0.5},
        "log_uniform_values": {"min": low, "max": high},
        "inv_log_uniform_values": {"min": low, "max": high},
        "log_uniform": {"min": math.log(low), "max": math.log(high)},
        "inv_log_uniform": {"min": -math.log(high), "max": -math.log(low)},
        "beta": {"a": 2.0, "b": 2.0},
        "categorical": {"values": [centre - s, centre, centre + s]},
        "categorical_w_probabilities": {"values": [centre - s, centre, centre + s],
                                        "probabilities": [0.2, 0.3, 0.5]},
        "constant": {"value": centre - s},
    }
    base = by_name[distribution[2:] if distribution.startswith("q_") else distribution]
    spec = {"distribution": distribution, **base}
    if distribution.startswith("q_"):
        spec["q"] = q
    return fill_parameter("x", spec)[1]


CELLS = [(d, kind, centre, q_type) for d in DISTRIBUTIONS for kind in KINDS
         for centre in ends_of(KINDS[kind])
         for q_type in ((int, float) if d.startswith("q_") else (float,))]


def test_the_cells_cover_every_distribution_of_the_engine_and_every_kind():
    assert len(DISTRIBUTIONS) == 18 and {"q_beta", "inv_log_uniform", "constant",
                                         "categorical_w_probabilities"} <= set(DISTRIBUTIONS)
    assert set(DISTRIBUTIONS) - set(JUDGED) == {"categorical", "categorical_w_probabilities",
                                                "constant"}
    assert len(CELLS) == 18 * 8 * 2 + 6 * 8 * 2  # the six q_ forms with an int q too


def engine_draws(name: str, spec: dict, n: int) -> list:
    """`n` draws of the engine at u uniform on [0, 1), as its random search makes them (one
    u a draw: HyperParameter.sample); numeric distributions and categorical at once (ppf of
    an array computes each element alike: test_an_array_of_draws_is_the_random_searchs_own),
    not categorical_w_probabilities, whose ppf of an array takes argmin(cdf >= u), the
    first value whose cdf is below u, where sample takes the first above it."""
    parameter = HyperParameter(name, dict(spec))
    if parameter.type in (HyperParameter.CATEGORICAL_PROB, HyperParameter.CONSTANT):
        return [parameter.sample() for _ in range(n)]  # its ppf of an array differs
    with np.errstate(all="ignore"):
        return list(parameter.ppf(np.random.uniform(0.0, 1.0, n)))


def refused_share(name: str, values: list) -> float:
    """The share of `values` the trial's validation refuses for parameter `name`."""
    param, verdicts = BY_NAME[name], {}
    refused = 0
    for value in values:
        key = repr(value)
        if key not in verdicts:
            try:
                validate({name: as_type(value, param.type, param.item_type)})
                verdicts[key] = False
            except UserError:
                verdicts[key] = True
        refused += verdicts[key]
    return refused / len(values)


@pytest.mark.parametrize("distribution, kind, centre, q_type", CELLS, ids=[
    f"{d}-{k}-at{c:g}-q{q.__name__}" for d, k, c, q in CELLS])
def test_the_probability_of_a_refused_draw_is_what_the_engine_draws(distribution, kind,
                                                                    centre, q_type):
    name = KINDS[kind]
    spec = spec_around(distribution, centre, q_type)
    np.random.seed(hash((distribution, kind, centre, q_type.__name__)) % 2**32)
    random.seed(0)
    if distribution in JUDGED:
        found = outside(name, spec)
        expected, estimated = found.probability, found.estimated
    else:
        expected, estimated = listed_outside(name, spec), False
    share = refused_share(name, engine_draws(name, spec, DRAWS))
    if expected in (0.0, 1.0) and not estimated:
        assert share == expected, (spec, share, expected)
        return
    # five standard deviations of a binomial share, and a floor for a probability near 0
    tolerance = 5 * math.sqrt(max(expected * (1 - expected), 1 / DRAWS) / DRAWS)
    assert abs(share - expected) <= tolerance, (spec, share, expected, tolerance)


@pytest.mark.parametrize("distribution", [d for d in DISTRIBUTIONS if d in JUDGED]
                         + ["categorical"])
def test_an_array_of_draws_is_the_random_searchs_own(distribution):
    # the engine's random search (sweeps.next_runs) draws u = random.uniform(0, 1) per run
    # and parameter: the same u through ppf of an array gives the same values
    spec = spec_around(distribution, 1.0, float)
    config = {"method": "random", "parameters": {"x": dict(spec)}}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        sweeps.next_runs(config, [], validate=False)  # its first call imports (and draws)
        random.seed(7)
        runs = sweeps.next_runs(config, [], validate=False, n=50)
        random.seed(7)
        us = np.array([random.uniform(0.0, 1.0) for _ in range(50)])
        array = HyperParameter("x", dict(spec)).ppf(us)
    assert [run.config["x"]["value"] for run in runs] == pytest.approx(list(array))
    assert len(set(map(float, array))) > 1  # draws that differ


@pytest.mark.parametrize("distribution", [d for d in DISTRIBUTIONS if d in JUDGED])
def test_the_closed_form_is_the_engines_own_cdf(distribution):
    # draw_mass keeps its own model of each distribution (the log forms' log-scale, where
    # e**u underflows to 0.0 below u = -745.13 and the engine's cdf of a value cannot tell
    # 0.0 from 5e-324; sf for upper tails): it is the engine's cdf wherever that is defined
    for centre in (0.0, 1.0, 10.0):
        spec = spec_around(distribution, centre, float)
        engine, ours = HyperParameter("x", dict(spec)), variable(spec)
        with np.errstate(all="ignore"):
            xs = np.array([ours.quantile(p) for p in (1e-6, 0.01, 0.3, 0.5, 0.7, 0.99)]
                          + [centre - 0.25, centre + 0.25])
            theirs = np.asarray(engine.cdf(xs), dtype=float)
        mine = np.array([ours.below(x, inclusive=True) for x in xs])
        defined = np.isfinite(theirs) & np.isfinite(xs) & ((xs > 0) | ~ours.log)
        assert defined.sum() >= 4 and mine[defined] == pytest.approx(
            theirs[defined], rel=1e-9, abs=1e-15), (spec, xs, mine, theirs)


# --- known values ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, spec, probability", [
    # P(N(5e-4, 1e-4) < 0) = Phi(-5)
    ("weight_decay", {"distribution": "normal", "mu": 5e-4, "sigma": 1e-4}, 2.866515719e-7),
    ("dropout", {"distribution": "beta", "a": 2, "b": 5}, 0.0),  # 1.0 has probability 0
    # rounded to 1.0 above 0.95: 1 - I_0.95(2, 5) = 6 * 0.05**5 - 5 * 0.05**6
    ("dropout", {"distribution": "q_beta", "a": 2, "b": 5, "q": 0.1},
     6 * 0.05**5 - 5 * 0.05**6),
    ("epochs", {"distribution": "int_uniform", "min": 0, "max": 9}, 0.1),  # epochs=0
    # e**u for u below -745.13 is 0.0, which lr (> 0) refuses: (1000 - 745.13) / 1000
    ("lr", {"distribution": "log_uniform", "min": -1000, "max": 0},
     (1000 - 1075 * math.log(2)) / 1000),
    # rounded to 0 below q / 2 = 5e-4: log(5e-4 / 1e-4) / log(0.1 / 1e-4)
    ("lr", {"distribution": "q_log_uniform_values", "min": 1e-4, "max": 0.1, "q": 0.001},
     math.log(5) / math.log(1000)),
    ("epochs", {"distribution": "q_uniform", "min": 1, "max": 3, "q": 0.5}, 0.5),  # x.5
    ("augment", {"distribution": "q_uniform", "min": 0, "max": 1, "q": 1}, 0.0),
    ("optimizer", {"distribution": "int_uniform", "min": 0, "max": 3}, 1.0),  # no names
    ("run_name", {"distribution": "normal", "mu": 0, "sigma": 1}, 0.0),  # any text
    # lognorm's scale e**-800 is 0.0: the engine draws NaN, not e**N(-800, 1) = 0.0
    ("momentum", {"distribution": "log_normal", "mu": -800, "sigma": 1}, 1.0),
    ("momentum", {"distribution": "q_log_normal", "mu": -800, "sigma": 1, "q": 0.1}, 1.0),
    ("run_name", {"distribution": "log_normal", "mu": -800, "sigma": 1}, 0.0),  # "nan"
    ("run_name", {"distribution": "q_normal", "mu": 0, "sigma": 0, "q": 1.0}, 0.0),
    ("lr", {"distribution": "q_beta", "a": 0, "b": 1, "q": 0.1}, 1.0),  # NaN: no beta
])
def test_known_probabilities(name, spec, probability):
    filled = fill_parameter(name, dict(spec))[1]
    found = outside(name, filled)
    assert found.probability == pytest.approx(probability, rel=1e-6, abs=1e-15)
    if probability in (0.0, 1.0):  # what the engine draws, every time
        assert refused_share(name, engine_draws(name, filled, 200)) == probability


# --- how a sweep file is judged -------------------------------------------------------------

OURS = ("command: ['${env}', python, -m, agent.train, '${args}']\nmethod: random\n"
        "metric: {name: val/acc, goal: maximize}\nparameters:\n  dataset: {value: digits}\n")


def judged(tmp_path, lines: str) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(OURS + lines)
    notes: list[str] = []
    load_sweep_config(path, notes)
    return notes


def test_a_distribution_inside_the_range_passes_silently(tmp_path):
    assert judged(tmp_path, "  dropout: {distribution: beta, a: 2, b: 5}\n"
                            "  lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1}\n") == []


@pytest.mark.parametrize("lines, words", [
    ("  weight_decay: {distribution: normal, mu: 5.0e-4, sigma: 1.0e-4}\n",
     ["parameters.weight_decay", "normal(mu=0.0005, sigma=0.0001)", "[0, 10]",
      "probability 2.9e-07 (1 run in 3,500,000)"]),
    ("  dropout: {distribution: q_beta, a: 2, b: 5, q: 0.1}\n",
     ["parameters.dropout", "q_beta(a=2, b=5, q=0.1)", "dropout=1.0", "[0, 1)",
      "probability 1.8e-06"]),
    ("  epochs: {distribution: int_uniform, min: 0, max: 200}\n",
     ["parameters.epochs", "epochs=0", "probability 0.5% (1 run in 200)"]),
])
def test_a_small_probability_is_a_note_naming_what_happens(tmp_path, lines, words):
    (note,) = judged(tmp_path, lines)
    assert "\n" not in note and note.startswith("note: ")
    for word in words + ["such a run fails at its start", "the sweep goes on"]:
        assert word in note, note


@pytest.mark.parametrize("lines, words", [
    ("  weight_decay: {distribution: normal, mu: 0.5, sigma: 0.5}\n",
     ["parameters.weight_decay", "normal(mu=0.5, sigma=0.5)", "(a number in [0, 10])",
      "probability 16%", "smaller sigma"]),
    ("  epochs: {distribution: int_uniform, min: 0, max: 50}\n",
     ["parameters.epochs", "epochs=0", "probability 2%", "[1, 10000]"]),
    ("  optimizer: {distribution: q_uniform, min: 0, max: 3, q: 1}\n",
     ["parameters.optimizer", "draws numbers", "probability 1 (every run)", "one of sgd"]),
    ("  batch_size: {distribution: normal, mu: 64, sigma: 4}\n",
     ["parameters.batch_size", "non-integers", "probability 1", "q_ distribution"]),
    ("  momentum: {distribution: log_normal, mu: -800, sigma: 1}\n",
     ["parameters.momentum", "draws NaN", "below mu = -745", "probability 1",
      "mu above -745"]),
])
def test_a_larger_probability_is_refused_in_one_line(tmp_path, lines, words):
    with pytest.raises(UserError) as refused:
        judged(tmp_path, lines)
    message = str(refused.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("sigmas, probability, noted", [
    (9.0, 1.1e-19, False), (6.1, 5.3e-10, False),  # below NEGLIGIBLE: read as 0
    (5.9, 1.8e-9, True)])  # above: a note, 1 run in 550,000,000
def test_a_probability_below_one_in_a_billion_is_read_as_0(tmp_path, sigmas, probability,
                                                           noted):
    # weight_decay normal(mu, mu / sigmas) draws below 0 with probability Phi(-sigmas)
    spec = {"distribution": "normal", "mu": 5e-4, "sigma": 5e-4 / sigmas}
    assert outside("weight_decay", spec).probability == pytest.approx(probability, rel=0.05)
    notes = judged(tmp_path, f"  weight_decay: {{distribution: normal, mu: 5.0e-4, sigma: "
                             f"{5e-4 / sigmas!r}}}\n")
    assert (notes != []) == noted and NEGLIGIBLE == 1e-9, notes
    assert all(f"probability {probability:.2g}" in note for note in notes)


def test_the_limit_lies_between_a_note_and_a_refusal(tmp_path):
    # int_uniform over 0..n draws epochs=0 with probability 1 / (n + 1)
    below = math.ceil(1 / OUTSIDE_LIMIT)  # 1 / 101: a note
    assert len(judged(tmp_path, f"  epochs: {{min: 0, max: {below}}}\n")) == 1
    with pytest.raises(UserError, match="probability 1%"):
        judged(tmp_path, f"  epochs: {{min: 0, max: {below - 1}}}\n")  # 1 / 100


def test_a_grid_over_q_uniform_notes_that_max_is_left_out_as_the_engine_leaves_it(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(OURS.replace("random", "grid")
                    + "  epochs: {distribution: q_uniform, min: 1, max: 3, q: 1}\n")
    notes: list[str] = []
    config = load_sweep_config(path, notes)
    (note,) = notes
    assert "\n" not in note and "parameters.epochs" in note and "takes 1, 2 " in note \
        and "not 3" in note and "max: 4" in note
    taken, runs = [], []
    while (params := proposed_params(config, runs)) is not None:  # the engine's own grid
        taken.append(params["epochs"])
        runs.append({"id": str(len(runs)), "state": "finished", "config": params,
                     "history": [], "summary": {}})
    assert taken == [1, 2]


def test_an_unset_variable_in_the_command_is_a_note_and_every_run_gets_its_name(
        tmp_path, monkeypatch):
    monkeypatch.delenv("SWEEP_TEST_UNSET", raising=False)
    sweep = yaml.safe_load(OURS.replace("'${args}'", "'${args}', '--run_name=${envvar:"
                                        "SWEEP_TEST_UNSET}'"))
    (note,) = unset_variable_notes(sweep)
    assert "\n" not in note and "command[5]" in note and "SWEEP_TEST_UNSET is not set" in note \
        and "'--run_name=SWEEP_TEST_UNSET'" in note and "every run gets the same" in note
    # what W&B's agent puts in the argv (wandb's create_sweep_command), run after run
    for run_id in ("a1", "b2"):
        run = build_run(sweep, {"dataset": "digits"}, sweep_id="s", run_id=run_id,
                        wandb_dir=str(tmp_path))
        assert run.argv[-1] == "--run_name=SWEEP_TEST_UNSET"
    monkeypatch.setenv("SWEEP_TEST_UNSET", "ada")
    assert unset_variable_notes(sweep) == []

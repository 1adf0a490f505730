"""The sweep files in sweeps/: valid for W&B's sweep engine as written, proposing only runs the
trial runner accepts, grids of the advertised size; and load_sweep_config's one-line errors."""

from __future__ import annotations

import copy
import warnings

import pytest
import yaml

from agent.params import validate
from agent.sweep.config import (
    METRICS,
    creation_notes,
    load_sweep_config,
    metric_notes,
    parameter_names,
)
from conftest import ROOT
from util.errors import UserError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the engine's pydantic model warns on import
    import sweeps

SWEEPS = ROOT / "sweeps"
SWEEP_FILES = sorted(SWEEPS.glob("*.yaml"))
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]


def plain(run: sweeps.SweepRun) -> dict:
    """A proposal's config without the engine's {"value": x} wrapping."""
    return {name: spec["value"] for name, spec in run.config.items()}


def enumerate_grid(config: dict) -> list[dict]:
    """Every configuration the engine proposes, each fed back as a finished run."""
    runs: list[sweeps.SweepRun] = []
    while (proposal := sweeps.next_run(config, runs, validate=True)) is not None:
        runs.append(sweeps.SweepRun(name=f"run{len(runs)}", state=sweeps.RunState.finished,
                                    config=proposal.config,
                                    summary_metrics={"val/acc": 0.5},
                                    history=[{"val/acc": 0.5}]))
        assert len(runs) <= 1000, "the grid does not end"
    return [plain(run) for run in runs]


def test_the_four_studies_are_there():
    assert {p.name for p in SWEEP_FILES} >= {"cifar_optim.yaml", "cifar_optim_grid.yaml",
                                             "mnist_dense_cnn_grid.yaml", "quickstart.yaml"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_file_as_written_is_valid_for_the_engine_and_runs_the_module(path):
    text = path.read_text()
    assert text.startswith("#") and "wandb sweep sweeps/" in text and "./run_sweep.sh" in text
    raw = yaml.safe_load(text)
    assert sweeps.schema_violations_from_proposed_config(raw) == []
    sweeps.SweepConfig(raw)  # raises on anything the engine refuses
    assert raw["command"] == COMMAND and raw["program"] == "agent/train.py"
    assert raw["metric"]["name"] == "val/acc" and raw["metric"]["goal"] == "maximize"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_file_loads_and_the_engines_first_proposal_is_a_valid_run(path):
    config = load_sweep_config(path)
    assert parameter_names(config) == set(yaml.safe_load(path.read_text())["parameters"])
    proposal = sweeps.next_run(config, [], validate=True)
    assert proposal is not None
    run = validate(plain(proposal))  # raises UserError on anything the trial would refuse
    assert set(plain(proposal)) == parameter_names(config)
    assert run.dataset in {"cifar10", "mnist", "fashion_mnist", "digits"}


@pytest.mark.parametrize("name", ["cifar_optim.yaml", "quickstart.yaml"])
def test_many_draws_from_the_search_spaces_are_valid_runs(name):
    config = copy.deepcopy(load_sweep_config(SWEEPS / name))
    config["method"] = "random"  # the same space, drawn quickly (bayes starts from it too)
    proposals = sweeps.next_runs(config, [], validate=True, n=200)
    for proposal in proposals:
        validate(plain(proposal))
    lrs = [plain(p)["lr"] for p in proposals]
    low, high = config["parameters"]["lr"]["min"], config["parameters"]["lr"]["max"]
    assert low <= min(lrs) and max(lrs) <= high and max(lrs) / min(lrs) > 10


@pytest.mark.parametrize("name, size, swept", [
    ("mnist_dense_cnn_grid.yaml", 80, {"model": 2, "lr": 5, "optimizer": 2, "dropout": 4}),
    ("cifar_optim_grid.yaml", 30, {"optimizer": 5, "batch_size": 3, "lr": 2}),
])
def test_grid_enumerates_every_point_exactly_once(name, size, swept):
    configs = enumerate_grid(load_sweep_config(SWEEPS / name))
    assert len(configs) == size
    points = {tuple(sorted((k, str(v)) for k, v in c.items())) for c in configs}
    assert len(points) == size
    for key, count in swept.items():
        assert len({c[key] for c in configs}) == count
    for config in configs:
        validate(config)


def test_mnist_grid_values_come_back_as_written():
    configs = enumerate_grid(load_sweep_config(SWEEPS / "mnist_dense_cnn_grid.yaml"))
    assert {c["lr"] for c in configs} == {0.1, 0.01, 0.001, 0.0001, 0.00001}
    assert {c["dropout"] for c in configs} == {0.0, 0.1, 0.3, 0.5}
    assert all(c["dataset"] == "mnist" and c["epochs"] == 2 for c in configs)


def test_loaded_config_has_the_engines_defaults_filled_in():
    config = load_sweep_config(SWEEPS / "quickstart.yaml")
    assert config["parameters"]["optimizer"]["distribution"] == "categorical"
    assert config["parameters"]["channels"] == {"value": [16, 32], "distribution": "constant"}
    assert config["early_terminate"]["strict"] is True
    assert config["metric"]["impute"] == "worst"


HEAD = "method: grid\nmetric: {name: val/acc, goal: maximize}\n"


@pytest.mark.parametrize("text, words", [
    ("method: grid\nparameters:\n  lr: {values: [0.1\n", ["not valid YAML", "line 4"]),
    ("method: grid\n  parameters: 1\n", ["not valid YAML", "line 2"]),
    ("method: nonsense\nparameters:\n  lr: {value: 0.1}\n", ["method", "'nonsense'"]),
    (HEAD + "early_terminat: {type: hyperband, min_iter: 1}\nparameters:\n  lr: {value: 0.1}\n",
     ["early_terminat", "did you mean early_terminate?"]),
    (HEAD + "early_terminate: {type: hyperband}\nparameters:\n  lr: {value: 0.1}\n",
     ["early_terminate", "min_iter"]),
    # the schema takes min_iter alone, but the engine reads max_iter first and then s
    # (KeyError: 's' at its first stop decision, in W&B's controller too)
    (HEAD + "early_terminate: {type: hyperband, min_iter: 1, eta: 2, max_iter: 27}\n"
     "parameters:\n  lr: {value: 0.1}\n",
     ["early_terminate.max_iter: 27 without s", "add s", "leave max_iter out"]),
    # the schema takes any number for s; the engine counts brackets with range(s)
    (HEAD + "early_terminate: {type: hyperband, max_iter: 9, s: 2.0}\n"
     "parameters:\n  lr: {value: 0.1}\n",
     ["early_terminate.s: 2.0 is not an integer", "range(s)", "write 2"]),
    (HEAD + "early_terminate: {type: hyperband, max_iter: 9, s: 2.5}\n"
     "parameters:\n  lr: {value: 0.1}\n",
     ["early_terminate.s: 2.5 is not an integer", "write an integer"]),
    # a key of hyperband's own that the schema refuses is named, not only early_terminate
    (HEAD + "early_terminate: {type: hyperband, min_iter: 1.5}\nparameters:\n"
     "  lr: {value: 0.1}\n", ["early_terminate.min_iter: 1.5 is not of type 'integer'"]),
    (HEAD + "early_terminate: {type: hyperband, min_iter: 1, strict: 1}\nparameters:\n"
     "  lr: {value: 0.1}\n", ["early_terminate.strict: 1 is not of type 'boolean'"]),
    (HEAD + "parameters:\n  lr: {distribution: log_uniform_values, min: -1, max: 0.1}\n",
     ["parameters.lr: min: -1 must be greater than 0"]),
    (HEAD + "parameters:\n  lr: {distribution: log_uniform_values, min: 0, max: 1e-1}\n",
     ["parameters.lr: min: 0 must be greater than 0", "max: '1e-1'", "exponent, 1.0e-1)"]),
    (HEAD + "run_cap: 0\nparameters:\n  lr: {value: 0.1}\n", ["run_cap: 0 must be greater "
                                                              "than 0"]),
    ("method: grid\nparameters:\n  lr:\n    values: [0.1]\n   epochs:\n    value: 1\n",
     ["line 5, column 4", "indented differently from the lines above"]),
    ("method: grid\nparameters:\n  lr:\n\tvalues: [0.1]\n", ["line 4", "a tab"]),
    ("method: grid\nparameters:\n  lr: values: [0.1]\n", ["line 3", "a second ':'"]),
    ("method: grid\nparameters:\n  lr: {values: [0.1, 0.2}\n", ["[...] list not closed"]),
    ("method: grid\nparameters:\n  lr: {values: [0.1]\n", ["{...} mapping not closed"]),
    ('method: "grid\n', ["a quote opened and not closed"]),
    (HEAD + "parameters:\n  lr: {distribution: log_uniform_values, min: 1e-4, max: 0.1}\n",
     ["parameters.lr", "'1e-4'", "1.0e-4"]),
    (HEAD + "parameters:\n  lr: {distribution: log_uniform_values, min: 1.5e3, max: 1.0e+4}\n",
     ["parameters.lr", "'1.5e3'", "signed exponent"]),
    # min and max without a distribution, as published sweeps write them (Bovey0809/
    # global_wheat sweep.yaml: learning_rate: {min: 1e-6, max: 1e-3}): YAML reads both as
    # text, and the line read "'values' is a required property, Additional properties are
    # not allowed ('max', 'min' were unexpected)", judging the file as a values list
    ("method: random\nparameters:\n  lr: {min: 1e-6, max: 1e-3}\n",
     ["parameters.lr: min: '1e-6' is not of type 'number'", "1.0e-6", "max: '1e-3'"]),
    ("method: random\nparameters:\n  epochs: {min: 2, max: '10'}\n",
     ["parameters.epochs: max: '10' is not of type", "a number in quotes is text"]),
    (HEAD + "program: prog.py\nparameters:\n  o:\n    parameters:\n"
     "      a: {distribution: int_uniform, min: 1, max: 1000}\n"
     "      b: {distribution: int_uniform, min: 1, max: 1000}\n",
     ["parameters.o", "1,000,000 values", "100,000 points"]),
    (HEAD + "run_cap: '5'\nparameters:\n  lr: {value: 0.1}\n",
     ["run_cap", "a number in quotes is text: write 5 without quotes"]),
    (HEAD + "parameters:\n  lr: {distribution: lognormal, mu: 0, sigma: 1}\n",
     ["unknown distribution 'lognormal'"]),
    # a near miss names the distribution meant, as a misspelt key or parameter does
    (HEAD + "parameters:\n  lr: {distribution: log_uniform_value, min: 0.001, max: 0.1}\n",
     ["parameters.lr", "unknown distribution 'log_uniform_value' (did you mean "
      "log_uniform_values?)", "expected one of"]),
    (HEAD + "parameters:\n  lr: {vals: [0.1]}\n", ["parameters.lr", "got keys vals"]),
    (HEAD + "parameters:\n  lr: 0.1\n", ["parameters.lr", "expected a mapping"]),
    ("method: random\nparameters:\n  lr: {min: 0.5, max: 0.1}\n", ["not less than max"]),
    (HEAD + "parameters:\n  learning_rate: {value: 0.1}\n",
     ["unknown parameter 'learning_rate' (did you mean lr?)", "allowed are"]),
    (HEAD + "parameters:\n  batchsize: {value: 32}\n", ["did you mean batch_size"]),
    ("method: random\nparameters:\n  lr: {min: -1.0, max: 0.1}\n",
     ["parameters.lr", "uniform(min=-1.0, max=0.1)", "lr=-0.5", "(0, 100]",
      "probability 91%"]),
    (HEAD + "parameters:\n  batch_size: {values: [0, 32]}\n",
     ["parameters.batch_size.values[0]", "batch_size=0"]),
    (HEAD + "parameters:\n  optimizer: {values: [sgd, adagrad]}\n", ["optimizer='adagrad'"]),
    (HEAD + "parameters:\n  channels: {value: [16, 0]}\n", ["channels=[16, 0]"]),
    ("method: random\nparameters:\n  batch_size: {distribution: uniform, min: 16, max: 64}\n",
     ["batch_size", "non-integers"]),
    ("method: random\nparameters:\n  lr: {distribution: normal, mu: 0.1, sigma: 0.05}\n",
     ["parameters.lr", "normal(mu=0.1, sigma=0.05)", "outside", "probability 2.3%"]),
    (HEAD + "parameters:\n  optimizer: {value: adam}\n  nesterov: {value: true}\n",
     ["nesterov=True"]),
    (HEAD + "parameters:\n  optim:\n    parameters:\n      lr: {value: 0.1}\n",
     ["parameters.optim", "nested parameters give a run one dict-valued"]),
    # inside a nested parameter each problem is named at its own key: all of these read
    # "parameters.init: expected {value: x}, ...; got keys parameters", which a nested
    # parameter is allowed to have. The first is a public shape (a bayes sweep of
    # scripts/launch_run.py with ${args_json_file}: init scales per layer, named
    # f"{layer_num}.{param_name}", 0.weight, which W&B's schema refuses as a name)
    (HEAD + "program: prog.py\nparameters:\n  init:\n    parameters:\n      scales:\n"
     "        parameters:\n          0.weight: {distribution: log_normal, mu: -2.0, "
     "sigma: 0.5}\n",
     ["parameters.init.scales: '0.weight' is not a parameter name W&B's schema takes",
      "a letter or _"]),
    (HEAD + "program: prog.py\nparameters:\n  opt:\n    parameters:\n"
     "      lr: {distribution: log_uniform_values, min: 1e-4, max: 0.1}\n",
     ["parameters.opt.lr: min: '1e-4' is not of type 'number'", "1.0e-4"]),
    (HEAD + "program: prog.py\nparameters:\n  opt:\n    parameters:\n"
     "      lr: {vals: [1]}\n      b: {values: [1]}\n", ["parameters.opt.lr: expected",
                                                         "got keys vals"]),
    (HEAD + "program: prog.py\nparameters:\n  opt:\n    parameters:\n      lr: 0.1\n",
     ["parameters.opt.lr: expected a mapping such as {value: x}", "got 0.1"]),
    (HEAD + "program: prog.py\nparameters:\n  opt:\n    parameters: {}\n",
     ["parameters.opt.parameters: {} should be non-empty"]),
    (HEAD + "program: prog.py\nparameters:\n  opt:\n    parameters:\n"
     "      lr: {values: [1]}\n    values: [2]\n",
     ["parameters.opt: a nested parameter holds its parameters alone", "got keys parameters, "
      "values"]),
    (HEAD + "parameters:\n  0lr: {values: [0.1]}\n",
     ["parameters: '0lr' is not a parameter name W&B's schema takes"]),
    ("method: grid\nmetric: {name: accuracy, goal: maximize}\nparameters:\n  lr: {value: 0.1}\n",
     ["metric.name", "'accuracy'", "val/acc"]),
    ("method: grid\nmetric: {name: test/acc, goal: maximize}\n"
     "early_terminate: {type: hyperband, min_iter: 1}\nparameters:\n  lr: {value: 0.1}\n",
     ["early_terminate needs a metric logged every epoch"]),
    ("method: bayes\nparameters:\n  lr: {min: 0.01, max: 0.1}\n", ["metric: required"]),
    (HEAD + "parameters:\n  lr: {min: 0.01, max: 0.1}\n", ["engine rejects", "grid search"]),
    ("", ["empty"]),
    ("- method: grid\n", ["expected a mapping"]),
])
def test_bad_sweep_file_gives_one_line_naming_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_sweep_config(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("method, spec, words", [
    ("random", "{min: 0.5, max: 0.1}", "parameters.opt.lr: min 0.5 is not less than max 0.1"),
    ("grid", "{distribution: uniform, min: 0.1, max: 0.5}",
     "Parameter parameters.opt.lr is a disallowed type with grid search"),
])
def test_the_engines_refusal_inside_a_nested_parameter_names_the_key(tmp_path, monkeypatch,
                                                                      method, spec, words):
    """The engine names a nested parameter by its own unnested key, opt.wbnest[599c28ca25da].lr
    (sweeps/params.py NESTING_DELIMITER), and that key reached the refusal as it was:
    'ValueError: opt.wbnest[599c28ca25da].lr: min 0.5 is not less than max 0.1'. The shape
    is that of nested sweeps people publish (Axelisme/NN_TEMPLATE configs/sweep.yaml nests
    an optimizer's lr in parameters blocks), its range written the wrong way round."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text("import wandb\nwandb.init()\n")
    path = tmp_path / "nested.yaml"
    path.write_text(f"method: {method}\nmetric: {{name: loss, goal: minimize}}\nprogram: prog.py\n"
                    f"parameters:\n  opt:\n    parameters:\n      lr: {spec}\n")
    with pytest.raises(UserError) as caught:
        load_sweep_config(path)
    message = str(caught.value)
    assert words in message and "wbnest" not in message, message


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(UserError, match="no such file") as caught:
        load_sweep_config(path)
    assert str(path) in str(caught.value)


def test_parameter_names_recurse_into_nested_parameters():
    config = {"parameters": {"lr": {"value": 0.1},
                             "group": {"parameters": {"optimizer": {"value": "sgd"},
                                                      "inner": {"parameters": {
                                                          "rho": {"value": 0.05}}}}}}}
    assert parameter_names(config) == {"lr", "optimizer", "rho"}


@pytest.mark.parametrize("goal", [None, "minimize", "maximize"])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_any_goal_wandb_accepts_is_accepted_and_a_goal_against_the_metric_is_noted(
        tmp_path, name, goal):
    """W&B accepts a metric with any goal (minimize when none is given) and its runs mean the
    same there: the sweep is created, with a note when the goal finds the metric's worst runs
    (val/acc minimized)."""
    metric = {"name": name} if goal is None else {"name": name, "goal": goal}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"method": "random", "metric": metric,
                                    "parameters": {"lr": {"values": [0.1, 0.01]}}}))
    config = load_sweep_config(path)
    assert config["metric"]["goal"] == (goal or "minimize")  # the engine's default, as W&B's
    notes = metric_notes(config)
    assert bool(notes) == ((goal or "minimize") != METRICS[name])
    for note in notes:
        assert note.startswith(f"note: metric {name} is {goal or 'minimize'}d") \
            and "\n" not in note and f"goal: {METRICS[name]}" in note
    assert metric_notes({**config, "program": "prog.py"}) == []  # another program's metric


@pytest.mark.parametrize("terminate, epochs, first", [
    ({"min_iter": 5, "eta": 2}, {"value": 3}, 5),  # bands 5, 10, ...: past epoch 3
    ({"min_iter": 3}, {"values": [2, 3]}, 3),  # at the last epoch: nothing left to save
    ({"max_iter": 27, "s": 2, "eta": 3}, {"value": 3}, 3),  # bands 9 and 3
    ({"min_iter": 2}, {"value": 3}, None),  # stops runs after epoch 2
    ({"max_iter": 27, "s": 3, "eta": 3}, {"value": 3}, None),  # bands 1, 3, 9
    ({"min_iter": 5}, {"values": [3, 10]}, None),  # the 10-epoch runs reach it
    ({"min_iter": 5}, {"distribution": "int_uniform", "min": 1, "max": 3}, None),  # not read
    ({"min_iter": 1}, {"value": 1}, 1),  # min_iter can be no smaller: more epochs only
    ({"max_iter": 4, "s": 2, "eta": 2}, {"value": 1}, 1),  # bands 2 and 1
])
def test_hyperband_that_stops_no_run_gets_a_note(tmp_path, terminate, epochs, first):
    """W&B accepts hyperband whose first band is at or past every run's last epoch, and it
    stops nothing there either: the sweep is created, with a note saying so, and each change
    it advises is one the sweep's checks accept and after which hyperband can stop runs (it
    advised a smaller min_iter than 1, which the schema refuses)."""
    def config(terminate, epochs):
        return {"method": "random", "metric": {"name": "val/acc", "goal": "maximize"},
                "early_terminate": {"type": "hyperband", **terminate},
                "parameters": {"dataset": {"value": "digits"}, "epochs": epochs,
                               "lr": {"values": [0.1, 0.01]}}}

    def notes_of(sweep: dict) -> list[str]:
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep))
        return [n for n in creation_notes(load_sweep_config(path)) if "hyperband" in n]

    notes = notes_of(config(terminate, epochs))
    if first is None:
        assert notes == []
        return
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert notes[0].startswith(f"note: early_terminate: hyperband first compares runs at "
                               f"epoch {first} (")
    assert "it stops no run early" in notes[0]
    advice = notes[0].rpartition("; ")[2]
    assert advice.endswith(f"epochs above {first} brings it within the runs' epochs"), advice
    assert notes_of(config(terminate, {"value": first + 1})) == []
    longest = max(epochs.get("values", [epochs.get("value")]))
    if "min_iter below" in advice:
        assert f"min_iter below {longest}" in advice and longest > 1
        assert notes_of(config({**terminate, "min_iter": longest - 1}, epochs)) == []
    elif "min_iter" in terminate:
        assert terminate["min_iter"] == 1  # nothing smaller to advise


@pytest.mark.parametrize("command, hinted", [
    ("[${env}, ${interpreter}, ${program}, ${args}]", True),  # W&B's macros unquoted
    ("[python, train.py, {args]", False),  # another YAML error: no hint
])
def test_an_unquoted_macro_in_a_flow_list_is_named(tmp_path, command, hinted):
    path = tmp_path / "s.yaml"
    path.write_text("program: agent/train.py\nmethod: grid\nparameters:\n"
                    f"  lr: {{values: [0.1]}}\ncommand: {command}\n")
    with pytest.raises(UserError, match="not valid YAML at line 5") as refused:
        load_sweep_config(path)
    assert ("must be quoted: '${args}'" in str(refused.value)) == hinted
    quoted = command.replace("${", "'${").replace("}", "}'")
    path.write_text(path.read_text().replace(command, quoted))
    if hinted:  # quoted as the hint says, it is read
        assert load_sweep_config(path)["command"][-1] == "${args}"


@pytest.mark.parametrize("sign", ["", "-", "+"])
@pytest.mark.parametrize("mantissa", ["1", "5", "12", ".5", "3.", "2.5"])
@pytest.mark.parametrize("exponent", ["-4", "3", "+2", "-0", "10"])
@pytest.mark.parametrize("e", ["e", "E"])
def test_the_hint_for_a_number_yaml_reads_as_text_is_that_number_as_yaml_reads_it(
        sign, mantissa, exponent, e):
    """PyYAML (YAML 1.1) reads 1e-4 as text; the refusal advises the same number written as
    a float it reads (1.0e-4), not a fixed example (it said 1.0e-4 of max: 1e-1)."""
    from agent.sweep.config import _number_hint

    written = f"{sign}{mantissa}{e}{exponent}"
    if isinstance(yaml.safe_load(written), float):
        return  # YAML reads it as a number already: no hint is due (3.e+2)
    hint = _number_hint(written)
    advised = hint.rpartition(", ")[2].rstrip(")")
    read = yaml.safe_load(advised)
    assert isinstance(read, float) and read == float(written), (written, hint)


@pytest.mark.parametrize("field", ["run_cap", "max"])
@pytest.mark.parametrize("written", ["3e2", "3E2", "+2e2", "2.5e2", "3e+2", ".3e3", "500e-1"])
def test_the_advice_for_an_integer_yaml_reads_as_text_is_accepted_where_it_is_given(
        tmp_path, field, written):
    """Where the file wants an integer (run_cap, int_uniform's bounds), a 1e3 that YAML reads
    as text is advised as the integer's digits, and the file so written is accepted: the
    float the advice gave there (1.0e+3) was refused in turn ('1000.0 is not a
    'integer''). Where the number is no integer, it is said."""
    def sweep_file(value: str):
        cap, top = (value, "500") if field == "run_cap" else ("5", value)
        path = tmp_path / "s.yaml"
        path.write_text(f"method: random\nrun_cap: {cap}\n"
                        "metric: {name: val/acc, goal: maximize}\nparameters:\n"
                        "  dataset: {value: digits}\n"
                        f"  hidden: {{distribution: int_uniform, min: 16, max: {top}}}\n")
        return path

    with pytest.raises(UserError) as refused:
        load_sweep_config(sweep_file(written))
    hint = f"(YAML reads {written} as text: write the integer's digits, "
    assert hint in str(refused.value), refused.value
    advised = str(refused.value).split(hint)[1].split(")")[0]
    assert int(advised) == float(written)
    load_sweep_config(sweep_file(advised))


def test_a_number_that_is_no_integer_is_said_to_be_one_where_an_integer_is_expected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("method: random\nrun_cap: 5e-1\nmetric: {name: val/acc, goal: maximize}\n"
                    "parameters:\n  dataset: {value: digits}\n")
    with pytest.raises(UserError, match=r"run_cap: '5e-1' is not of type 'integer' \(YAML "
                                        r"reads 5e-1 as text, and an integer is expected\)"):
        load_sweep_config(path)

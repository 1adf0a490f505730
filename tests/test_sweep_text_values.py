"""Sweep values written as text that our trainer reads as its parameter's type (`"64"` of an
integer, YAML 1.1's `1e-3` text of a float, `"false"` of a boolean, `"8,16"` of a list): W&B
hands them to the trainer as text, which its parser reads as that value. Offline they mean the
same: accepted as on W&B, and stored, shown and reported as the typed value, never as text."""

from __future__ import annotations

import tempfile
import warnings

import pytest

from agent.params import BY_NAME, parse_args, validate
from agent.sweep import program
from agent.sweep.config import load_sweep_config
from agent.sweep.engine import as_type, engine_inputs, proposed_batch, proposed_params
from agent.sweep.store import Run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps

HEAD = """command:
  - ${env}
  - python
  - -m
  - agent.train
  - ${args}
metric: {name: val/acc, goal: maximize}
"""
FIXED = """  dataset: {value: digits}
  epochs: {value: 1}
"""


@pytest.mark.parametrize("name, text, read", [
    ("batch_size", "64", 64), ("batch_size", " 64 ", 64), ("batch_size", "64.0", 64),
    ("seed", "1.0e3", 1000), ("lr", "1e-3", 0.001), ("weight_decay", "5e-4", 0.0005),
    ("augment", "no", False), ("augment", "True", True), ("histograms", "false", False),
    ("channels", "8,16", [8, 16]), ("channels", "[8, 16]", [8, 16]), ("channels", "8", [8]),
    ("sinks", "console,tensorboard", ["console", "tensorboard"]), ("sinks", "", []),
    ("run_name", "1e-3", "1e-3"),
])
def test_text_is_the_value_the_trainer_reads(name, text, read):
    param = BY_NAME[name]
    typed = as_type(text, param.type, param.item_type)
    assert typed == read and type(typed) is type(read)
    assert validate({name: text})[name] == read  # what `wandb agent` makes of the same text


@pytest.mark.parametrize("name, text", [("batch_size", "64.5"), ("lr", "fast"),
                                        ("augment", "maybe"), ("channels", "64 32")])
def test_text_the_trainer_refuses_is_left_for_validation(name, text):
    param = BY_NAME[name]
    assert as_type(text, param.type, param.item_type) == text or name == "channels"


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_a_sweep_of_text_values_means_what_it_means_on_wandb(tmp_path, method):
    path = tmp_path / "text.yaml"
    path.write_text(HEAD + f"method: {method}\nparameters:\n" + FIXED + """\
  batch_size: {values: ["32", "64"]}
  lr: {values: [1e-3, 0.01]}
  histograms: {value: "false"}
  channels: {values: ["8,16", "[8]"]}
  sinks: {value: "console,tensorboard"}
""")
    config = load_sweep_config(path)  # W&B runs it, and our trainer trains every run
    for _ in range(4):
        proposal = proposed_params(config, [])
        for name, value in proposal.items():
            param = BY_NAME[name]
            assert type(value) is param.type, (name, value)
            if param.type is list:
                assert all(type(item) is param.item_type for item in value)
        # what `wandb agent` gives our trainer for the engine's own values: the same config
        raw = {name: spec["value"] for name, spec in sweeps.next_run(
            {**config, "method": "random"}, [], validate=True).config.items()}
        run = program.build_run(config, raw, sweep_id="s", run_id="r",
                                wandb_dir=tempfile.mkdtemp(dir=tmp_path))
        on_wandb = validate({**parse_args(run.trainer_args), **raw})
        for name in raw:
            assert type(on_wandb[name]) is type(as_type(raw[name], BY_NAME[name].type,
                                                        BY_NAME[name].item_type))


def test_a_grid_of_text_values_visits_each_point_once_and_ends(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(HEAD + "method: grid\nparameters:\n" + FIXED
                    + '  lr: {values: [1e-3, 0.01, 1e-1]}\n  batch_size: {values: ["32", 64]}\n')
    config = load_sweep_config(path)
    runs: list[Run] = []
    while (batch := proposed_batch(config, runs, 1)):
        runs.append(Run(id=f"r{len(runs)}", seq=len(runs) + 1, config=batch[0],
                        state="finished"))
        assert len(runs) <= 6
    points = {(run.config["lr"], run.config["batch_size"]) for run in runs}
    assert points == {(lr, bs) for lr in (0.001, 0.01, 0.1) for bs in (32, 64)}


def test_bayes_sees_stored_text_values_as_their_categories(tmp_path):
    path = tmp_path / "bayes.yaml"
    path.write_text(HEAD + "method: bayes\nparameters:\n" + FIXED
                    + "  lr: {values: [1e-3, 1e-2, 1e-1]}\n")
    config = load_sweep_config(path)
    runs = [Run(id="a", seq=1, config={"lr": 0.001}, state="finished"),
            Run(id="b", seq=2, config={"lr": 0.1}, state="finished")]
    _, seen = engine_inputs(config, runs)
    assert [run.config["lr"]["value"] for run in seen] == [1, 3]  # tokens, none None

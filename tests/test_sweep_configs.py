"""Sweep files: valid for W&B's engine unchanged, naming only parameters the runner knows."""

import warnings
from pathlib import Path

import pytest

from agent.errors import UserError
from agent.local_controller import proposed_params
from agent.params import validate
from agent.sweep_config import load_sweep_config
from conftest import ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_the_four_sweeps_exist():
    assert {p.name for p in SWEEP_FILES} >= {"cifar_optim.yaml", "cifar_optim_grid.yaml",
                                             "mnist_dense_cnn_grid.yaml", "quickstart.yaml"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_is_valid_and_its_proposals_are_valid_runs(path):
    config = load_sweep_config(path)
    assert "${args}" in config["command"]
    assert sweeps.schema_violations_from_proposed_config(config) == []
    params = proposed_params(config, [])
    validate(params)  # raises on anything the trial runner would refuse


def grid_size(config: dict) -> int:
    runs = []
    while (params := proposed_params(config, runs)) is not None:
        runs.append({"id": f"r{len(runs)}", "state": "finished", "config": params,
                     "history": [], "summary": {"val/acc": 0.5}, "requeued_from": None})
        assert len(runs) < 500
    return len(runs)


@pytest.mark.parametrize("name, size", [("mnist_dense_cnn_grid.yaml", 80),
                                        ("cifar_optim_grid.yaml", 30)])
def test_grids_enumerate_every_point_once(name, size):
    assert grid_size(load_sweep_config(ROOT / "sweeps" / name)) == size


@pytest.mark.parametrize("text, words", [
    ("method: grid\nparameters:\n  lr: {values: [0.1\n", "line"),
    ("method: nonsense\nparameters:\n  lr: {value: 0.1}\n", "nonsense"),
    ("method: grid\nparameters:\n  learning_rate: {value: 0.1}\n", "learning_rate"),
    ("method: grid\nparameters:\n  batch_size: {values: [0, 32]}\n", "batch_size=0"),
    ("method: random\nparameters:\n  lr: {min: -1.0, max: 0.1}\n", "lr=-1.0"),
    ("method: grid\nmetric: {name: accuracy}\nparameters:\n  lr: {value: 0.1}\n",
     "accuracy"),
])
def test_bad_sweep_files_give_one_line_naming_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_sweep_config(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_missing_sweep_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_sweep_config(tmp_path / "absent.yaml")

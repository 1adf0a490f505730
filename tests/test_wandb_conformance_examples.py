"""The examples of issue 8, each a regression test: the sweeps that failed before, and the
engine bug we work around (bayes gave falsy categorical values the first category's input)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import warnings

import pytest
import yaml

from agent.params import validate
from agent.sweep.config import load_sweep_config
from agent.sweep.controller import claim
from agent.sweep.engine import engine_inputs, engine_run, proposed_params, run_field
from agent.sweep.store import create_store
from agent.sweep.target import create_local_sweep
from conftest import subprocess_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sweeps.params import HyperParameterSet

HEAD = {"command": ["${env}", "python", "-m", "agent.train", "${args}"],
        "metric": {"name": "val/acc", "goal": "maximize"}}


def write(tmp_path, **config):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**HEAD, **config}))
    return path


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_quantised_batch_size_is_claimed_as_an_int_and_the_sweep_rejoins(tmp_path, monkeypatch,
                                                                        method):
    monkeypatch.chdir(tmp_path)
    store = create_local_sweep(write(tmp_path, method=method, parameters={"batch_size": {
        "distribution": "q_log_uniform_values", "min": 32, "max": 128, "q": 32}}))
    for owner in ("first-agent", "rejoining-agent"):
        (claimed,) = claim(store, owner).runs
        stored = run_field(store.runs()[-1], "config")["batch_size"]
        assert type(stored) is int and stored in (32, 64, 96, 128)
        store.finish(claimed.run_id, owner, "finished", {"val/acc": 0.5})


@pytest.mark.e2e
@pytest.mark.parametrize("parameters, early_terminate, words", [
    ({"lr": {"distribution": "q_uniform", "min": 0.001, "max": 0.1}}, None,
     ["parameters.lr", "q=1.0", "lr=0.0", "a number in (0, 100]", "probability 1",
      "a smaller q"]),
    ({"dropout": {"distribution": "q_beta", "a": 2, "b": 2, "q": 0.25}}, None,
     ["parameters.dropout", "dropout=1.0", "[0, 1)"]),
    ({"kernel_size": {"values": [3, 4]}}, None,
     ["parameters.kernel_size.values[1]", "kernel_size=4", "odd"]),
    ({"lr": {"values": [0.1, 0.01]}}, {"type": "hyperband", "max_iter": 2, "s": 3, "eta": 3},
     ["Bands must be"]),
    ({"lr": {"values": [0.1]}, "val_split": {"value": 0.0}}, None,
     ["metric.name", "val/acc", "val_split=0.0"]),
    ({"lr": {"values": [0.1]}, "val_split": {"values": [0.1, 0.0]}}, None,
     ["metric.name", "val_split=0.0"]),
    ({"optimizer": {"distribution": "categorical_w_probabilities", "values": ["sgd", "adam"],
                    "probabilities": [0.5, 0.5]}}, None,
     ["parameters.optimizer", "bayes", "categorical_w_probabilities"]),
])
def test_a_sweep_whose_runs_would_fail_is_refused_at_creation(tmp_path, monkeypatch,
                                                              parameters, early_terminate,
                                                              words):
    monkeypatch.chdir(tmp_path)
    config = {"method": "bayes", "parameters": parameters}
    if early_terminate:
        config["early_terminate"] = early_terminate
    result = subprocess.run([sys.executable, "-m", "agent.launch", str(write(tmp_path, **config))],
                            cwd=tmp_path, env=subprocess_env(CUDA_VISIBLE_DEVICES=""),
                            capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and all(word in line for word in words), line
    assert not (tmp_path / "data").exists()  # nothing created


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_an_engine_failure_at_a_claim_is_one_line_and_leaves_the_store_intact(workdir):
    # a store written without our checks (an older version's): bayes on probabilities
    store = create_store(workdir / "old", "old", "old", {**HEAD, "method": "bayes", "parameters": {
        "optimizer": {"distribution": "categorical_w_probabilities", "values": ["sgd", "adam"],
                      "probabilities": [0.5, 0.5]}}})
    result = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory)],
                            cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                            timeout=100)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: the sweep engine rejects the sweep") and "IndexError" in line
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_bayes_gives_falsy_categorical_values_their_own_input(tmp_path):
    config = load_sweep_config(write(tmp_path, method="bayes", parameters={
        "augment": {"values": [True, False]}, "label_smoothing": {"values": [0.1, 0.0]}}))
    runs = [{"id": f"r{i}", "state": "finished", "config": {"augment": a, "label_smoothing": s},
             "history": [{"val/acc": acc}], "summary": {"val/acc": acc}}
            for i, (a, s, acc) in enumerate([(True, 0.1, 0.9), (False, 0.0, 0.1)])]

    def gp_inputs(sweep_config, engine_runs):
        return HyperParameterSet.from_config(sweep_config["parameters"]).normalize_runs_as_array(
            engine_runs).tolist()

    raw = gp_inputs(config, [engine_run(run) for run in runs])
    assert raw[0] == raw[1]  # the engine's bug: False and 0.0 look like the first category
    ours = gp_inputs(*engine_inputs(config, runs))
    assert ours[0] != ours[1] and ours[0] == raw[0]  # each value its own input now
    proposal = proposed_params(config, runs)
    assert type(proposal["augment"]) is bool and proposal["label_smoothing"] in (0.1, 0.0)
    validate(proposal)


@pytest.mark.parametrize("values", [[16, 32], [[16], [32]]])
def test_a_grid_of_one_block_channel_lists_ends(tmp_path, monkeypatch, values):
    """--channels=16 is a one-block cnn under wandb agent: stored as [16], the grid still knows
    the point is done."""
    monkeypatch.chdir(tmp_path)
    store = create_local_sweep(write(tmp_path, method="grid", parameters={
        "channels": {"values": values}}))
    claimed = []
    while (work := claim(store, "agent")).kind == "run":
        (run,) = work.runs
        claimed.append(run.config["channels"])
        store.finish(run.run_id, "agent", "finished", {"val/acc": 0.5})
        assert len(claimed) <= 2
    assert claimed == [[16], [32]]


def engine_grid(config: dict) -> list[dict]:
    """Every point W&B's engine proposes for a grid, asked as W&B's controller asks it: each
    proposal stored as the engine wrote it, until it proposes none."""
    import sweeps

    runs, points = [], []
    while (proposal := sweeps.next_run(config, runs, validate=True)) is not None:
        points.append({k: spec["value"] for k, spec in proposal.config.items()})
        runs.append(sweeps.SweepRun(name=f"r{len(runs)}", state=sweeps.RunState.finished,
                                    config=proposal.config))
        assert len(points) <= 100
    return points


# Values that are two points to the engine (and to W&B) and one value to our trainer, beside
# values the engine itself counts once (1 and 1.0 hash alike in its grid).
ALIASED = [("augment", [True, 1, False]), ("augment", [False, 0, True]),
           ("batch_norm", [1, True, 0, False]),
           ("channels", [[16, 32], [16.0, 32], [8, 8]]), ("channels", [16, 16.0, [16]]),
           ("epochs", [1, 1.0, 2]), ("lr", [0.1, 1, 1.0])]


@pytest.mark.parametrize("name, values", ALIASED, ids=lambda v: str(v))
def test_a_grid_whose_values_the_trainer_reads_alike_makes_wandbs_points_and_ends(
        tmp_path, monkeypatch, name, values):
    """W&B proposes each point of the grid once and then none; the values reach our trainer
    typed (1 -> True for a boolean), so two points can be stored alike: the grid must still
    move on to its later points and end with as many runs as the engine proposes."""
    monkeypatch.chdir(tmp_path)
    parameters = {name: {"values": values}, "label_smoothing": {"values": [0.0, 0.1]}}
    store = create_local_sweep(write(tmp_path, method="grid", parameters=parameters))
    wandb_points = engine_grid({"method": "grid", "parameters": parameters})
    claimed = []
    while (work := claim(store, "agent")).kind == "run":
        (run,) = work.runs
        claimed.append(run.config)
        store.finish(run.run_id, "agent", "finished", {"val/acc": 0.5})
        assert len(claimed) <= len(wandb_points)
    assert len(claimed) == len(wandb_points)
    typed = [validate({k: point[k] for k in parameters}) for point in wandb_points]
    assert sorted(repr({k: c[k] for k in parameters}) for c in claimed) == sorted(
        repr({k: t[k] for k in parameters}) for t in typed)

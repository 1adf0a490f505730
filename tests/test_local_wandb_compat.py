"""A local sweep means what the same YAML means under `wandb agent`: the command's fixed
arguments are trained, W&B agent variables left in the shell are ignored, the sweep's project
is where its offline runs go, null is the default, and a run that trained all its epochs is
finished even when hyperband's last band falls on its final epoch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from agent.sweep.engine import run_field
from agent.sweep.target import create_local_sweep
from agent.trial.loop import TrialHooks, train
from conftest import closed_offline_runs, subprocess_env

COMMAND = ["${env}", "python", "-m", "agent.train", "--dataset=digits", "--epochs=1",
           "--model=dense", "--hidden=16", "${args}"]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_local_sweep_trains_the_command_and_ignores_stale_wandb_variables(workdir):
    path = workdir / "fixed.yaml"
    path.write_text(yaml.safe_dump({
        "command": COMMAND, "method": "grid", "project": "compat-project",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1, 0.05]}, "run_name": {"value": None},
                       "sinks": {"value": ["wandb"]},
                       "data_dir": {"value": str(workdir / "data")}}}))
    store = create_local_sweep(path)
    stale = {"WANDB_SWEEP_ID": "stale01", "WANDB_RUN_ID": "stale02",
             "WANDB_SWEEP_PARAM_PATH": str(workdir / "absent.yaml")}
    result = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop",
                             str(store.directory)], cwd=workdir,
                            env={**subprocess_env(), **stale}, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = store.runs()
    assert [run_field(r, "state") for r in runs] == ["finished", "finished"]
    offline = {r.run_id: r for r in closed_offline_runs(workdir / "wandb", 2)}
    assert set(offline) == {run_field(r, "id") for r in runs}  # the store's ids, not stale02
    for run in runs:
        summary = run_field(run, "summary")
        # the command's --dataset=digits --epochs=1, not the defaults (cifar10, 10 epochs)
        assert summary["dataset"] == "digits" and summary["epochs_done"] == 1
        assert summary["run_name"] == run_field(run, "id")  # run_name: null is the default
        seen = offline[run_field(run, "id")]
        assert seen.project == "compat-project"
        assert seen.config["dataset"] == "digits" and seen.config["model"] == "dense"


def tiny(workdir, **values) -> dict:
    return {"dataset": "digits", "model": "dense", "hidden": 16, "sinks": [],
            "data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs"), **values}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("epochs, state, done", [(1, "finished", 1), (2, "stopped", 1)])
def test_a_stop_on_the_final_epoch_leaves_the_run_finished(workdir, epochs, state, done):
    always_stop = TrialHooks(should_stop=lambda epoch, history: "early_terminate")
    summary = train(tiny(workdir, epochs=epochs), always_stop)
    assert summary["state"] == state and summary["epochs_done"] == done


@pytest.mark.timeout(120)
def test_a_null_run_name_is_the_default_not_the_text_none(workdir):
    summary = train(tiny(workdir, epochs=1, run_name=None, sinks=["tensorboard"],
                         log_dir=str(workdir / "tb"), group="g"))
    assert summary["run_name"] == summary["run_id"]
    assert [p.name for p in (workdir / "tb" / "g").iterdir()] == [summary["run_id"]]

"""A sweep that asks for a device (device: cuda, mps) the agents started here lack is refused
by the launcher in one line, exit 2, before a sweep is made or an agent starts; where the
device exists, it runs. Each expectation is built from what torch sees on the machine the
tests run on (CPU only here; one or more GPUs elsewhere)."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml

from agent.launch import check_sweep_devices, main
from agent.sweep.target import create_local_sweep, open_store
from conftest import ROOT, subprocess_env
from util.errors import UserError

GPUS = torch.cuda.device_count()
HAS = {"cuda": GPUS > 0, "mps": torch.backends.mps.is_available(), "cpu": True}


def sweep_yaml(path, device_spec: dict | None, command: list | None = None):
    """A two-run grid on digits that trains in about a second a run."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": 1},
                             "sinks": {"value": []}, "lr": {"values": [0.1, 0.01]}}}
    if device_spec is not None:
        config["parameters"]["device"] = device_spec
    if command is not None:
        config["command"] = command
    path.write_text(yaml.safe_dump(config))
    return path


def what_this_machine_has() -> str:
    return f"{GPUS} CUDA GPU" if GPUS else "CPU only"


@pytest.mark.parametrize("spec, command, asked", [
    ({"value": "cuda"}, None, "cuda"),
    ({"values": ["cpu", "cuda"]}, None, "cuda"),  # one value of several is enough to refuse
    ({"value": "mps"}, None, "mps"),
    (None, ["${env}", "${interpreter}", "${program}", "--device=cuda", "${args}"], "cuda"),
])
def test_a_device_this_machine_lacks_is_refused_before_a_sweep_is_made(workdir, spec,
                                                                      command, asked):
    sweep_file = sweep_yaml(workdir / "s.yaml", spec, command)
    if HAS[asked]:  # a GPU machine (or a Mac): the sweep runs on it
        assert main([str(sweep_file)]) == 0
        store = open_store(next((workdir / "data" / "sweeps").iterdir()).name)
        assert sorted(run.state for run in store.runs()) == ["finished", "finished"]
        return
    with pytest.raises(UserError) as refused:
        main([str(sweep_file)])
    message = str(refused.value)
    place = "command" if spec is None else "parameters.device"
    assert message.startswith(f"{sweep_file}: {place}: ")
    assert f"device={asked}" in message and "use auto" in message and "or cpu" in message
    assert ("CPU only" in message) == (GPUS == 0)
    if asked == "mps":
        assert what_this_machine_has() in message
    assert not (workdir / "data").exists()  # no sweep store, not even half of one


@pytest.mark.parametrize("spec", [None, {"value": "auto"}, {"values": ["auto", "cpu"]}])
def test_a_sweep_on_devices_every_machine_has_is_not_refused(spec):
    config = yaml.safe_load(sweep_yaml_text(spec))
    check_sweep_devices("s.yaml", config)  # no UserError


def sweep_yaml_text(spec: dict | None) -> str:
    parameters = {"dataset": {"value": "digits"}}
    if spec is not None:
        parameters["device"] = spec
    return yaml.safe_dump({"program": "agent/train.py", "method": "grid",
                           "parameters": parameters})


def test_a_wandb_sweep_config_is_checked_as_the_server_holds_it():
    """A W&B sweep's config comes back from W&B's server as its YAML was given to `wandb
    sweep`, without the engine's defaults filled in; its device is read the same way. A
    sweep of another program is left alone: `device` means what that program makes of it."""
    ours = {"program": "agent/train.py", "method": "random",
            "parameters": {"device": {"values": ["cuda"]}, "lr": {"min": 0.001, "max": 0.1}}}
    other = {"program": "train.py", "method": "grid",
             "command": ["${env}", "python", "train.py", "${args}"],
             "parameters": {"device": {"value": "cuda"}}}
    check_sweep_devices("sweep e/p/abc", other)
    if HAS["cuda"]:
        check_sweep_devices("sweep e/p/abc", ours)
        return
    with pytest.raises(UserError, match=r"^sweep e/p/abc: parameters.device: device=cuda "
                       r"needs a GPU.*CPU only"):
        check_sweep_devices("sweep e/p/abc", ours)


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_run_sweep_sh_on_a_cuda_sweep_without_a_gpu_is_one_line_and_exit_2(workdir):
    """Through the script a user runs, from another directory: a YAML, then an existing
    local sweep's id (made where a GPU was, or by --pbs on a login node) to add agents to."""
    env = subprocess_env()
    sweep_file = sweep_yaml(workdir / "s.yaml", {"value": "cuda"})
    done = subprocess.run([str(ROOT / "run_sweep.sh"), str(sweep_file)], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=150)
    if HAS["cuda"]:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "device=cuda needs a GPU" in done.stderr and "CPU only" in done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["s.yaml"]

    store = create_local_sweep(sweep_file, announce=False)  # made without the launch's check
    done = subprocess.run([str(ROOT / "run_sweep.sh"), store.sweep().id], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"sweep {store.sweep().id}: parameters.device: device=cuda" in done.stderr
    assert store.runs() == []  # no agent started, no run claimed

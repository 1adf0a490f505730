"""The trial's pre-flight check: a model sized on the meta device, the memory a pack needs, and
configurations no device can train refused in one line before any data or file is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent.params import validate
from agent.trial import preflight
from agent.trial.loop import train
from agent.trial.preflight import IMAGE_SETS, check_fits, model_size, needed_bytes
from conftest import in_processes_at_once, subprocess_env
from nn.models import MODELS
from util.errors import UserError

QUICK = {"dataset": "digits", "sinks": [], "histograms": False, "num_threads": 1, "epochs": 1}


@pytest.mark.parametrize("model, extra", [("dense", {"hidden": 48}),
                                          ("skip_mlp", {"widths": [32, 16]}),
                                          ("cnn", {"channels": [8, 16], "kernel_size": 5}),
                                          ("resnet", {"width": 4})])
@pytest.mark.parametrize("dataset", sorted(IMAGE_SETS))
def test_the_measured_size_is_the_real_models_and_both_ways_agree(model, extra, dataset,
                                                                   monkeypatch):
    config = validate({"model": model, "dataset": dataset, **extra})
    shape, classes, _ = IMAGE_SETS[dataset]
    params, activations = preflight._measured_size(config, shape, classes, batch=8)
    real = MODELS[model](config, shape, classes)
    assert params == sum(p.numel() for p in real.parameters())
    outputs = real(torch.zeros(8, *shape))
    assert outputs.shape == (8, classes) and activations > outputs.numel()
    # a model too large to build for real is measured on the meta device: the same figures
    monkeypatch.setattr(preflight, "REAL_FORWARD_PARAMS", 0)
    assert preflight._measured_size(config, shape, classes, batch=8) == (params, activations)
    assert model_size(config, shape, classes, batch=8) == (params, activations)


def test_the_estimate_grows_with_members_batch_and_epochs():
    base = validate({"model": "cnn", "dataset": "cifar10"})
    single = needed_bytes([base])
    assert needed_bytes([base, base]) > single
    assert needed_bytes([validate({**base, "batch_size": 512})]) > single
    assert needed_bytes([validate({**base, "epochs": 1000})]) > single  # the lr table


@pytest.mark.timeout(60)
def test_a_pack_no_device_can_hold_is_refused_before_anything_is_written(workdir):
    huge = {**QUICK, "dataset": "cifar10", "model": "cnn", "channels": [16384] * 3,
            "batch_size": 65536, "run_dir": str(workdir / "runs"),
            "log_dir": str(workdir / "logs"), "data_dir": str(workdir / "data")}
    with pytest.raises(UserError) as refused:
        check_fits([validate(huge)], torch.device("cpu"))
    assert "needs about" in str(refused.value) and "GiB" in str(refused.value)
    with pytest.raises(UserError):
        train(huge)
    assert list(workdir.iterdir()) == []  # no data loaded, no run directory


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra", [{"val_split": 0.9999}, {"train_subset": 1}])
def test_a_split_without_two_training_images_is_refused(workdir, extra):
    with pytest.raises(UserError, match="training image"):
        train({**QUICK, **extra, "data_dir": str(workdir / "data"),
               "run_dir": str(workdir / "runs")})
    assert not (workdir / "runs").exists()


def _unusable_folders(workdir) -> dict[str, str]:
    """Folders no run can write to, one of each kind: a file, a device, a path through a
    file, and a place the file system refuses to make a folder in (/proc)."""
    (workdir / "a_file").write_text("x")
    return {"a file": str(workdir / "a_file"), "a device": "/dev/null",
            "through a file": str(workdir / "a_file" / "runs"), "in /proc": "/proc/no_such"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["data_dir", "run_dir", "log_dir"])
@pytest.mark.parametrize("kind", ["a file", "a device", "through a file", "in /proc"])
def test_a_folder_that_cannot_be_made_is_one_line_before_training(workdir, name, kind):
    folders = {"data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs"),
               "log_dir": str(workdir / "logs")}
    folders[name] = _unusable_folders(workdir)[kind]
    with pytest.raises(UserError) as refused:
        train({**QUICK, **folders, "sinks": ["tensorboard"], "run_id": "r1"})
    message = str(refused.value)
    assert message.startswith(f"{name}=") and ("not a folder" in message
                                               or "cannot make" in message), message
    assert sorted(p.name for p in workdir.iterdir()) == ["a_file"]  # nothing else made


def _check_many_times(folder: str, times: int, problems) -> None:
    found = [preflight.folder_problem(Path(folder), written=True) for _ in range(times)]
    problems.extend([p for p in found if p])


@pytest.mark.timeout(120)
def test_agents_checking_one_missing_folder_at_once_do_not_refuse_each_other(workdir):
    """`--agents 2` starts two agents on one sweep: both check the same missing run_dir at
    once, each making and removing its parts. One agent's folder (made, or removed again)
    is not a problem of the other's (the check used to say "cannot make data: File exists",
    or "No such file or directory" for a parent removed under it, and fail a run)."""
    folder = str(workdir / "data" / "runs" / "sweep")
    assert in_processes_at_once(_check_many_times, (folder, 400), wait_s=100) == []
    # each removed what it made: at most empty parts of the path stay, made by one agent
    # while another had a folder in them (which the runs make next anyway)
    left = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*"))
    assert left in ([], ["data"], ["data", "data/runs"], ["data", "data/runs",
                                                              "data/runs/sweep"]), left
    assert not [p for p in workdir.rglob("*") if p.is_file()]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sweep_whose_run_dir_is_a_file_fails_its_runs_in_one_line_each(workdir):
    """The launcher refuses such a sweep file in one line. A file put in the way once the
    sweep is made: the agent records each run failed with its reason and stops after three
    in a row; no traceback, no file written through the file."""
    import subprocess
    import sys

    import yaml

    from agent.sweep.target import create_local_sweep
    from conftest import subprocess_env

    (workdir / "a_file").write_text("x")
    sweep = {"name": "baddir", "method": "grid", "metric": {"name": "val/acc",
                                                            "goal": "maximize"},
             "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                            "hidden": {"value": 16}, "epochs": {"value": 1},
                            "sinks": {"value": []}, "run_dir": {"value": "a_file"},
                            "lr": {"values": [0.1, 0.01, 0.001, 0.0001]}}}
    (workdir / "baddir.yaml").write_text(yaml.safe_dump(sweep))
    refused = subprocess.run([sys.executable, "-m", "agent.launch", "baddir.yaml"],
                             cwd=workdir, env=subprocess_env(), capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr == "error: baddir.yaml: run_dir='a_file': a_file is not a folder\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["a_file", "baddir.yaml"]

    store = create_local_sweep(workdir / "baddir.yaml", announce=False)  # made, then the file
    done = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop",
                           str(store.directory)], cwd=workdir, env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    failed = [line for line in done.stderr.splitlines() if " failed (" in line]
    assert len(failed) == 3
    assert all("run_dir='a_file': a_file is not a folder" in line for line in failed)
    assert (workdir / "a_file").read_text() == "x"


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_only_fp16_on_a_cpu_gets_a_note_that_it_is_slow(precision):
    from agent.trial.preflight import precision_note

    note = precision_note(validate({"precision": precision}), torch.device("cpu"))
    assert (note is not None) == (precision == "fp16")
    if note:
        assert note.startswith("note: precision=fp16 on a CPU") and "\n" not in note


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model, extra", [("resnet", {"width": 2}),
                                          ("cnn", {"channels": [4, 4, 4, 4]})])
def test_a_batch_of_one_that_a_batch_norm_cannot_train_is_refused_in_one_line(workdir, model,
                                                                               extra):
    # ResNet's last stage, and a cnn's fourth block, see digits' 8x8 images as 1x1 maps: a
    # batch of one gives their batch norm one value a channel, which torch refuses in
    # training; before, a ValueError traceback from the first step (a pack's too)
    config = {**QUICK, "model": model, **extra, "batch_size": 1, "train_subset": 8,
              "data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs")}
    with pytest.raises(UserError, match=rf"^batch_size=1 is not allowed with model={model} "
                                        r"on digits: .* expected batch_size >= 2"):
        train(config)
    assert not (workdir / "runs").exists()
    done = subprocess.run([sys.executable, "-m", "agent.train",
                           *(f"--{k}={v}" for k, v in config.items())],
                          capture_output=True, text=True, env=subprocess_env(), timeout=100)
    assert done.returncode == 2 and done.stderr.startswith("error: batch_size=1 is not")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # where each batch norm sees more than one value a channel, a batch of one trains
    alone = train({**config, "model": "cnn", "channels": [4, 4]})
    assert alone["state"] == "finished" and alone["global_step"] == 8

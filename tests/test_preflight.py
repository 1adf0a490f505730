"""The trial's pre-flight check: a model sized on the meta device, the memory a pack needs, and
configurations no device can train refused in one line before any data or file is touched."""

from __future__ import annotations

import pytest
import torch

from agent.params import validate
from agent.trial.loop import train
from agent.trial.preflight import IMAGE_SETS, check_fits, model_size, needed_bytes
from nn.models import MODELS
from util.errors import UserError

QUICK = {"dataset": "digits", "sinks": [], "histograms": False, "num_threads": 1, "epochs": 1}


@pytest.mark.parametrize("model, extra", [("dense", {"hidden": 48}),
                                          ("skip_mlp", {"widths": [32, 16]}),
                                          ("cnn", {"channels": [8, 16], "kernel_size": 5}),
                                          ("resnet", {"width": 4})])
@pytest.mark.parametrize("dataset", sorted(IMAGE_SETS))
def test_the_meta_model_has_the_real_models_parameters(model, extra, dataset):
    config = validate({"model": model, "dataset": dataset, **extra})
    shape, classes, _ = IMAGE_SETS[dataset]
    params, activations = model_size(config, shape, classes, batch=8)
    real = MODELS[model](config, shape, classes)
    assert params == sum(p.numel() for p in real.parameters())
    outputs = real(torch.zeros(8, *shape))
    assert outputs.shape == (8, classes) and activations > outputs.numel()


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

"""Real data: Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`) found with no
parameter, checked against the content recorded from it, learnt by a cnn, and taken through
a real sweep and its report."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sweep.store import create_store
from agent.trial.loop import train
from conftest import subprocess_env
from util.datasets import cache_path, load_decoded
from util.errors import UserError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


@pytest.fixture(scope="module")
def debian_copy() -> Path:
    assert all((DEBIAN / f"{n}.gz").is_file() for n in NAMES), (
        "these tests learn on the real Fashion-MNIST: apt-get install -y dataset-fashion-mnist")
    return DEBIAN


@pytest.fixture(scope="module")
def fashion_data_dir(tmp_path_factory, debian_copy) -> Path:
    """A data_dir whose cache was decoded from the system copy, with no parameter at all."""
    data_dir = tmp_path_factory.mktemp("fashion") / "data"
    decoded = load_decoded("fashion_mnist", data_dir)
    assert decoded.source == str(debian_copy)
    return data_dir


def test_system_copy_is_found_without_parameters_and_is_the_published_set(fashion_data_dir):
    decoded = load_decoded("fashion_mnist", fashion_data_dir)  # now from the cache
    assert decoded.train_x.shape == (60000, 1, 28, 28)
    assert decoded.test_x.shape == (10000, 1, 28, 28)
    assert decoded.train_y.bincount().tolist() == [6000] * 10
    assert decoded.test_y.bincount().tolist() == [1000] * 10
    assert decoded.classes[0] == "T-shirt/top" and decoded.classes[9] == "Ankle boot"
    # The first training image of Zalando's release is an ankle boot (label 9).
    assert decoded.train_y[:3].tolist() == [9, 0, 0]


def test_baselines_on_the_real_test_set_are_ten_percent(fashion_data_dir):
    from agent.report.stats import baselines

    decoded = load_decoded("fashion_mnist", fashion_data_dir)
    base = baselines(decoded.train_y.tolist(), decoded.test_y.tolist(), 10)
    assert base["majority"] == 0.1  # balanced: 1,000 test images of every class
    assert abs(base["random"] - 0.1) < 0.01  # uniform guesses, drawn: 0.1 +- 3 sd


def test_debian_files_copied_into_torchvisions_layout_just_work(tmp_path, debian_copy):
    """The issue's case: the recompressed .gz files in data/FashionMNIST/raw, where
    torchvision's archive checksums refused them."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(debian_copy / f"{name}.gz", raw)
    decoded = load_decoded("fashion_mnist", tmp_path / "data")
    assert decoded.source == str(raw) and len(decoded.train_y) == 60000
    assert cache_path("fashion_mnist", tmp_path / "data").exists()


def test_one_changed_pixel_of_the_real_files_is_named(tmp_path, debian_copy):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for name in NAMES[1:]:
        shutil.copy(debian_copy / f"{name}.gz", shelf)
    images = bytearray(gzip.decompress((debian_copy / f"{NAMES[0]}.gz").read_bytes()))
    images[16 + 28 * 14 + 14] ^= 0x01  # one pixel of the first image, unpacked this time
    (shelf / NAMES[0]).write_bytes(bytes(images))
    with pytest.raises(UserError) as caught:
        load_decoded("fashion_mnist", tmp_path / "data", str(shelf))
    assert f"{shelf / NAMES[0]}: decodes to other images than Fashion-MNIST's" in str(caught.value)
    assert not (tmp_path / "data" / "cache").exists()


def test_fashion_files_given_as_mnist_are_refused_by_mnists_class_counts(tmp_path,
                                                                         debian_copy):
    """The two sets share their file names; MNIST's classes are not balanced."""
    with pytest.raises(UserError) as caught:
        load_decoded("mnist", tmp_path / "data", str(debian_copy))
    message = str(caught.value)
    assert f"{debian_copy}/train-labels-idx1-ubyte.gz: class counts [6000, 6000," in message
    assert "but MNIST's train set has [5923, 6742," in message


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_truncated_real_file_is_one_line_and_exit_2_from_the_command_line(tmp_path, debian_copy):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for name in NAMES:
        shutil.copy(debian_copy / f"{name}.gz", shelf)
    whole = (shelf / f"{NAMES[2]}.gz").read_bytes()
    (shelf / f"{NAMES[2]}.gz").write_bytes(whole[:len(whole) // 3])
    result = subprocess.run(
        [sys.executable, "-m", "agent.train", "--dataset=fashion_mnist", f"--dataset_dir={shelf}",
         "--sinks=[]", "--epochs=1"], cwd=tmp_path, env=subprocess_env(),
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0] == (f"error: dataset='fashion_mnist': {shelf / NAMES[2]}.gz: truncated gzip "
                        f"data (the {len(whole) // 3}-byte file ends before its end-of-stream "
                        "marker)")
    assert not (tmp_path / "data" / "cache").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cnn_reaches_85_percent_from_10000_images_in_2_epochs(fashion_data_dir, tmp_path):
    summary = train({"dataset": "fashion_mnist", "data_dir": str(fashion_data_dir),
                     "train_subset": 10000, "epochs": 2, "model": "cnn",
                     "channels": [32, 64, 128], "optimizer": "adam", "lr": 0.002,
                     "batch_size": 64, "sinks": [], "checkpoint": False, "histograms": False,
                     "run_dir": str(tmp_path / "runs")})
    assert summary["test/acc"] >= 0.85, summary
    assert summary["global_step"] == 2 * (10000 // 64)


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, fashion_data_dir):
    """A short real sweep (Adam at two learning rates, 3,000 training images, 2 epochs) and
    its report."""
    work = tmp_path_factory.mktemp("sweep")
    (work / "data" / "cache").mkdir(parents=True)
    shutil.copy(cache_path("fashion_mnist", fashion_data_dir), work / "data" / "cache")
    config = {"program": "agent/train.py",
              "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "fashion_mnist"},
                             "train_subset": {"value": 3000}, "epochs": {"value": 2},
                             "model": {"value": "cnn"}, "channels": {"value": [16, 32, 64]},
                             "batch_size": {"value": 64}, "sinks": {"value": []},
                             "optimizer": {"value": "adam"},
                             "lr": {"values": [0.002, 0.005]}}}
    store = create_store(work / "data" / "sweeps" / "fm", "fm", "fashion-subset", config)
    for args in (["agent.sweep.agent_loop", str(store.directory)], ["agent.report", "fm"]):
        done = subprocess.run([sys.executable, "-m", *args], cwd=work, env=subprocess_env(),
                              capture_output=True, text=True, timeout=500)
        assert done.returncode == 0, done.stderr[-3000:]
    return work, store


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_real_sweep_report_has_baselines_on_the_real_test_set(real_sweep):
    work, store = real_sweep
    text = (work / "reports" / "fm" / "report.md").read_text()
    assert "`fashion_mnist`: 60000 training images" in text and "10000 test images" in text
    assert "| majority class | 0.1000 |" in text  # 1,000 of each class in the test set
    random_row = re.search(r"\| random \| ([\d.]+) \|", text)
    assert random_row and 0.09 < float(random_row.group(1)) < 0.11  # drawn, ~1/10
    runs = store.runs()
    assert len(runs) == 2 and all(r.state == "finished" for r in runs)
    accuracies = [r.summary["test/acc"] for r in runs]
    assert min(accuracies) > 0.6, accuracies  # learnt: far above the 10% baselines
    best = max(runs, key=lambda r: r.summary["val/acc"])
    assert best.id in text and "## The best run" in text


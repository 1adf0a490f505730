"""The data a sweep's runs read is found, checked and cached by the launcher once, before a
sweep is made or an agent starts: a set that is missing or damaged, or a download that fails,
is one line and exit 2 there (each run failed with it before, leaving a sweep of failed runs),
and agents started together read the cache instead of each downloading into one folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error

import pytest
import torchvision
import yaml

from agent.launch import check_runnable, prepare_sweep_data
from conftest import subprocess_env
from util.datasets import cache_path
from util.errors import UserError


def sweep(**parameters) -> dict:
    return {"program": "agent/train.py", "method": "grid",
            "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"model": {"value": "dense"}, "hidden": {"value": 16},
                           "epochs": {"value": 1}, "sinks": {"value": []},
                           "lr": {"values": [0.1, 0.01]},
                           **{k: v if isinstance(v, dict) else {"value": v}
                              for k, v in parameters.items()}}}


def test_each_dataset_of_the_sweep_is_cached_once_before_it_starts(cifar_root, tmp_path):
    config = sweep(dataset={"values": ["cifar10", "digits"]}, data_dir=str(cifar_root))
    assert not cache_path("cifar10", cifar_root).exists()
    assert prepare_sweep_data("s.yaml", config) == ["cifar10"]  # digits comes with sklearn
    assert cache_path("cifar10", cifar_root).is_file()
    assert prepare_sweep_data("s.yaml", config) == []  # cached: not read again


def test_a_cache_the_disk_has_no_room_for_is_a_note_and_the_data_passes(cifar_root, tmp_path,
                                                                       capsys):
    """data_dir on a disk that holds the set's files but not its cache (a real tmpfs): the
    set is found and checked as before, one note names the folder and the full disk, and
    nothing half-written is left; it raised torch.save's C++ RuntimeError (a traceback)."""
    from test_storage_faults import tmpfs

    with tmpfs(tmp_path / "small", "1800k") as disk:
        shutil.copytree(cifar_root, disk / "data")  # 1.3 MB of pickles; the cache is 0.8 MB
        config = sweep(dataset="cifar10", data_dir=str(disk / "data"))
        assert prepare_sweep_data("s.yaml", config) == ["cifar10"]
        cache = cache_path("cifar10", disk / "data")
        assert capsys.readouterr().err == (f"note: dataset='cifar10' not cached in "
                                           f"{cache.parent} (No space left on device); it is "
                                           "decoded again next time\n")
        assert list(cache.parent.iterdir()) == []


def test_every_data_dir_a_sweep_searches_is_prepared(cifar_root, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(cifar_root, other)
    config = sweep(dataset="cifar10", data_dir={"distribution": "categorical",
                                                "values": [str(cifar_root), str(other)]})
    assert prepare_sweep_data("s.yaml", config) == ["cifar10", "cifar10"]
    assert cache_path("cifar10", cifar_root).is_file() and cache_path("cifar10", other).is_file()


def test_another_programs_sweep_is_left_alone(workdir):
    config = sweep(dataset="cifar10") | {"command": ["${env}", "python", "other.py", "${args}"]}
    assert prepare_sweep_data("s.yaml", config) == []  # its parameters mean what it makes
    assert not (workdir / "data").exists()


def test_a_failed_download_is_one_line_and_leaves_no_folder(workdir, monkeypatch):
    class Offline:  # torchvision's downloader, on a machine with no network
        def __init__(self, root, train=True, download=False):
            (workdir / "data").mkdir(exist_ok=True)
            (workdir / "data" / "cifar-10-python.tar.gz.part").write_bytes(b"x")
            raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(UserError) as refused:
        prepare_sweep_data("s.yaml", sweep(dataset="cifar10"))
    message = str(refused.value)
    assert message.startswith("s.yaml: dataset='cifar10': no CIFAR-10 files in data")
    assert "download failed (URLError" in message and "\n" not in message
    assert list(workdir.iterdir()) == []


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_launcher_refuses_a_sweep_whose_data_is_not_there(tmp_path):
    """dataset_dir names a folder that is not there: one line, exit 2, nothing created."""
    config = sweep(dataset="fashion_mnist", dataset_dir=str(tmp_path / "nowhere"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml"], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: s.yaml: dataset='fashion_mnist': dataset_dir="
                                     f"'{tmp_path / 'nowhere'}' is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]




def test_a_folder_the_runs_cannot_make_is_refused_before_the_sweep(workdir):
    """data_dir, run_dir and log_dir (with the TensorBoard sink) the trial's pre-flight
    check would refuse: one line at the launcher, digits included (its data is not read
    there), rather than a sweep whose every run fails with it."""
    (workdir / "afile").write_text("x")
    for name in ("data_dir", "run_dir", "log_dir"):
        config = sweep(dataset="digits", sinks=["tensorboard"],
                       **{name: {"values": ["fine", "afile/sub"]}})
        with pytest.raises(UserError) as refused:
            check_runnable("s.yaml", config, None)
        assert str(refused.value) == f"s.yaml: {name}='afile/sub': afile is not a folder"
    check_runnable("s.yaml", sweep(dataset="digits", log_dir="afile"), None)  # sinks: []
    (workdir / "afile").unlink()
    assert list(workdir.iterdir()) == []  # checking made nothing


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_launcher_refuses_a_digits_sweep_whose_data_dir_cannot_be_made(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = sweep(dataset="digits", data_dir="afile")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml"], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == "error: s.yaml: data_dir='afile': afile is not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "s.yaml"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["run_dir", "log_dir"])
def test_an_existing_folder_the_runs_cannot_write_in_is_refused_at_launch_and_in_the_trial(
        workdir, name):
    """run_dir and log_dir exist but are on a read-only mount (a real tmpfs remounted
    read-only): one line at the launcher and in the trial's pre-flight, before anything is
    trained; a data_dir there is fine as it is (a read-only one may hold the cache)."""
    from agent.trial.loop import train
    from test_storage_faults import remount, tmpfs

    with tmpfs(workdir / "ro", "1m") as place:
        remount(place, "ro")
        config = sweep(dataset="digits", sinks=["tensorboard"], **{name: str(place)})
        with pytest.raises(UserError) as refused:
            check_runnable("s.yaml", config, None)
        assert str(refused.value) == (f"s.yaml: {name}={str(place)!r}: cannot write in "
                                      f"{place}: Read-only file system")
        folders = {"data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs"),
                   "log_dir": str(workdir / "logs"), name: str(place)}
        with pytest.raises(UserError) as refused:
            train({"dataset": "digits", "epochs": 1, "sinks": ["tensorboard"],
                   "histograms": False, "run_id": "r1", **folders})
        assert str(refused.value) == f"{name}={str(place)!r}: cannot write in {place}: " \
                                     "Read-only file system"
        check_runnable("s.yaml", sweep(dataset="digits", data_dir=str(place)), None)
        assert list(place.iterdir()) == []
    assert sorted(p.name for p in workdir.iterdir()) == ["ro"]  # nothing else made


def test_a_damaged_cache_is_made_again_by_the_launcher(cifar_root, capsys):
    """The launcher took any file at the cache's path for a cached set and left it, so every
    run of the sweep failed on it; now a cache that is not a whole torch file is decoded
    again there, once."""
    config = sweep(dataset="cifar10", data_dir=str(cifar_root))
    assert prepare_sweep_data("s.yaml", config) == ["cifar10"]
    cache = cache_path("cifar10", cifar_root)
    cache.write_bytes(cache.read_bytes()[:-100])
    capsys.readouterr()
    assert prepare_sweep_data("s.yaml", config) == ["cifar10"]
    assert capsys.readouterr().err.startswith(f"note: dataset='cifar10': the cache {cache} ")
    assert prepare_sweep_data("s.yaml", config) == []

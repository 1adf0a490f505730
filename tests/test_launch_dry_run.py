"""`./run_sweep.sh sweeps/x.yaml --dry-run` (no --pbs/--slurm): the sweep file checked as a
launch checks it, with every note and error a launch gives, then what the sweep would run
(method, how many runs, each parameter, the first run's command); nothing is created. It was
refused as a batch-job option without --pbs or --slurm, so a file could only be checked by
making a sweep of it. Real launcher processes and the digits set."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from agent.launch import main
from agent.sweep.store import SweepStore
from conftest import ROOT, subprocess_env
from util.errors import UserError


def sweep(**parameters) -> dict:
    """A digits grid of two lrs that trains in about a second a run."""
    return {"program": "agent/train.py", "method": "grid",
            "command": ["${env}", "python", "-m", "agent.train", "${args}"],
            "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                           "hidden": {"value": 16}, "epochs": {"value": 1},
                           "train_subset": {"value": 256}, "sinks": {"value": []},
                           "lr": {"values": [0.1, 0.01]},
                           **{k: v if isinstance(v, dict) else {"value": v}
                              for k, v in parameters.items()}}}


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("parameters, says", [
    ({"colour": "red"}, "parameters.colour: unknown parameter 'colour'"),
    ({"data_dir": "afile/sub"}, "data_dir='afile/sub': afile is not a folder"),
    ({"dataset": "fashion_mnist", "dataset_dir": "nowhere"}, "dataset_dir='nowhere' is not"),
    ({"device": "cuda"}, "device=cuda needs a GPU"),
])
def test_a_dry_run_refuses_what_a_launch_refuses_in_the_same_line(workdir, monkeypatch,
                                                                  parameters, says):
    """A bad file, a folder the runs cannot make, data that is not there, a device this
    machine lacks (CUDA_VISIBLE_DEVICES='' hides any GPU): the dry run's line is the
    launch's, and neither leaves anything behind."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (workdir / "afile").write_text("x")
    (workdir / "s.yaml").write_text(yaml.safe_dump(sweep(**parameters)))
    lines = []
    for dry in (["--dry-run"], []):
        with pytest.raises(UserError) as refused:
            main(["s.yaml", *dry])
        lines.append(str(refused.value))
    assert lines[0] == lines[1] and says in lines[0], lines
    assert files_under(workdir) == {"afile", "s.yaml"}


def test_a_dry_run_of_an_existing_sweep_or_with_batch_options_is_refused(workdir):
    """--dry-run alone checks a file; an existing sweep has nothing to create (one line
    naming what shows it), and with another batch-job option it still needs --pbs/--slurm."""
    from agent.sweep.target import create_local_sweep

    (workdir / "s.yaml").write_text(yaml.safe_dump(sweep()))
    store = create_local_sweep(workdir / "s.yaml", announce=False)
    sweep_id = store.sweep().id
    with pytest.raises(UserError, match=f"^--dry-run: without --pbs N or --slurm N it checks "
                       f"a sweep YAML .*'{sweep_id}' is an existing local sweep "
                       rf"\(.*agent.status {sweep_id} shows it\)$"):
        main([sweep_id, "--dry-run"])
    with pytest.raises(UserError, match="^--dry-run, --mem: batch-job options, which need"):
        main(["s.yaml", "--dry-run", "--mem", "2gb"])


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("dry", [["--dry-run"], []], ids=["dry run", "launch"])
@pytest.mark.parametrize("spec, name", [
    ({"distribution": "normal", "mu": 0.1, "sigma": 0}, "lr"),
    ({"distribution": "beta", "a": 0, "b": 1}, "dropout"),
])
def test_a_distribution_that_draws_nan_is_refused_in_one_line_and_no_warning(tmp_path, dry,
                                                                              spec, name):
    """W&B's schema takes sigma 0 and a beta's a 0, from which the engine draws NaN (every
    run refused): the refusal is one line on stderr. The engine's first proposal, which the
    file's check asks for, printed scipy's two 'RuntimeWarning: invalid value encountered
    in multiply' lines, and their source lines, before it."""
    config = sweep(**{name: spec})
    config["method"], config["run_cap"] = "random", 2
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    before = files_under(tmp_path)
    done = subprocess.run([str(ROOT / "run_sweep.sh"), "s.yaml", *dry], cwd=tmp_path,
                          env=subprocess_env(WANDB_DIR=str(tmp_path)), capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: s.yaml: parameters.{name}: ") and \
        "draws NaN" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert files_under(tmp_path) == before


def test_a_dry_run_says_what_the_launch_would_run_and_makes_nothing(tmp_path):
    """Through ./run_sweep.sh: exit 0; the notes the launch prints (rho swept where no run
    uses SAM, hyperband past the runs' last epoch), then the method and run count, each
    parameter, and the command the first run gets; no store, data, log or W&B file. The
    launch of the same file then prints the same notes and trains, first, the very
    configuration the dry run named."""
    config = sweep(optimizer="sgd", rho={"values": [0.05, 0.5]},
                   batch_size={"distribution": "q_uniform", "min": 16, "max": 48, "q": 16})
    config["early_terminate"] = {"type": "hyperband", "min_iter": 3}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = files_under(tmp_path)
    dry = subprocess.run([str(ROOT / "run_sweep.sh"), "s.yaml", "--dry-run"], cwd=tmp_path,
                         env=subprocess_env(WANDB_DIR=str(tmp_path)), capture_output=True,
                         text=True, timeout=150)
    assert dry.returncode == 0 and dry.stderr == "", dry.stderr
    assert files_under(tmp_path) == before  # no data/, no wandb/, nothing
    lines = dry.stdout.splitlines()
    start = lines.index("Dry run: s.yaml is a valid sweep; nothing was created.")
    notes = lines[:start]
    assert [n for n in notes if n.startswith("note: ")] == [
        next(n for n in notes if "np.arange" in n), next(n for n in notes if "rho" in n),
        next(n for n in notes if "hyperband" in n)]
    account = lines[start + 1:]
    assert account[:4] == ["  name:        s", "  method:      grid of 8 runs",
                           "  metric:      val/acc (maximize)",
                           "  early stop:  hyperband (min_iter 3, eta 3, strict true)"]
    assert "    lr               0.1, 0.01" in account
    assert "    rho              0.05, 0.5" in account
    assert "    batch_size       q_uniform: min 16, max 48, q 16" in account
    first = next(line for line in account if line.startswith("  first run:   "))
    assert first.startswith("  first run:   /usr/bin/env python -m agent.train "), first
    assert account[-2] == "  agents:      1 on the CPU" or "GPU" in account[-2]
    assert account[-1] == f"Launch it: {ROOT}/run_sweep.sh s.yaml", account[-1]

    launch = subprocess.run([sys.executable, "-m", "agent.launch", "s.yaml", "--count", "1"],
                            cwd=tmp_path, env=subprocess_env(WANDB_DIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=150)
    assert launch.returncode == 0, launch.stderr[-2000:]
    out = launch.stdout.splitlines()
    assert out[:len(notes)] == notes and out[len(notes)].startswith("Created local sweep")
    (path,) = (tmp_path / "data" / "sweeps").glob("*/sweep.db")
    (ran,) = [run for run in SweepStore(path).runs() if run.state == "finished"]
    argv = first.removeprefix("  first run:   /usr/bin/env python -m agent.train ").split()
    assert sorted(argv) == sorted(f"--{name}={value}" for name, value in ran.config.items())


def test_a_dry_run_checks_the_data_without_caching_or_downloading_it(cifar_root, workdir):
    """A set whose files are here is decoded and checked as the launch checks it, and not
    cached; a damaged file is the launch's line; a set with no files here is a note that
    the launch would download it, and nothing is fetched or made."""
    from agent.launch import check_runnable, prepare_sweep_data
    from util.datasets import cache_path

    config = sweep(dataset="cifar10", data_dir=str(cifar_root))
    assert check_runnable("s.yaml", config, None, dry_run=True) == []
    assert not cache_path("cifar10", cifar_root).exists()
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])  # cut short
    lines = []
    for check in (lambda: check_runnable("s.yaml", config, None, dry_run=True),
                  lambda: prepare_sweep_data("s.yaml", config)):
        with pytest.raises(UserError) as refused:
            check()
        lines.append(str(refused.value))
    assert lines[0] == lines[1] and "data_batch_1" in lines[0], lines
    assert check_runnable("s.yaml", sweep(dataset="mnist", data_dir="here"), None,
                          dry_run=True) == ["note: dataset='mnist': no files in data_dir="
                                            "'here': a launch downloads them into 'here' first"]
    assert not (workdir / "here").exists()


@pytest.mark.parametrize("method, metric, said", [
    ("grid", None, "  metric:      none: no run is ranked by a metric"),
    ("random", None, "  metric:      none: no run is ranked by a metric"),
    ("random", {"name": "val/loss"}, "  metric:      val/loss (minimize)"),
    ("random", {"name": "val/acc", "goal": "maximize", "target": 0.9},
     "  metric:      val/acc (maximize, until a run reaches 0.9)"),
])
def test_the_dry_run_says_the_metric_as_the_sweep_has_it(tmp_path, method, metric, said):
    """A grid or random sweep without a metric (common in public sweep files, and valid on
    W&B) read 'metric: None (minimize)', as if it minimised something; a metric without a
    goal is minimized, the engine's default."""
    from agent.sweep.config import load_sweep_config
    from agent.sweep.preview import sweep_lines

    config = {**sweep(), "method": method}
    config.pop("metric")
    if metric is not None:
        config["metric"] = metric
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    lines = sweep_lines(path, load_sweep_config(path), "s", "1 on the CPU")
    assert [line for line in lines if line.startswith("  metric:")] == [said], lines

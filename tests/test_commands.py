"""The hints our commands print (`./run_sweep.sh <id>`, `./util/with_venv.sh python -m
agent.report <id>`, `./run_tensorboard.sh ...`) reach the scripts from the folder the user
works in: run from elsewhere (`~/hp/run_sweep.sh x.yaml`), a hint names the scripts by a path
that works there, and pasting it there runs."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import yaml

from agent.commands import ROOT_VARIABLE, script
from conftest import ROOT, subprocess_env


@pytest.mark.parametrize("root, here, expected", [
    (None, "/any/where", "./run_sweep.sh"),  # `python -m agent.launch`: no root said
    ("/home/u/hp", "/home/u/hp", "./run_sweep.sh"),
    ("/home/u/hp", "/home/u/scratch", "../hp/run_sweep.sh"),
    ("/home/u/hp", "/home/u/hp/studies/a", "../../run_sweep.sh"),
    ("/hp", "/home/u/deep/down/here", "/hp/run_sweep.sh"),  # not ../../../../../hp
    ("/home/u/my hp", "/home/u/scratch", "'../my hp/run_sweep.sh'"),
])
def test_a_script_is_named_from_the_folder_the_hint_is_for(monkeypatch, tmp_path, root, here,
                                                          expected):
    # real folders: script() compares resolved paths
    base = tmp_path / "fs"
    for folder in {root, here} - {None}:
        (base / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(base / here.lstrip("/"))
    if root is None:
        monkeypatch.delenv(ROOT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(ROOT_VARIABLE, str(base / root.lstrip("/")))
    got = script("run_sweep.sh")
    if expected.startswith("/"):  # absolute: under the test's own root folder
        assert got == shlex.quote(str(base / expected.lstrip("/")))
    else:
        assert got == expected


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_hints_printed_in_another_folder_run_when_pasted_there(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "x.yaml").write_text(yaml.safe_dump({
        "program": "agent/train.py", "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "hidden": {"value": 16}, "epochs": {"value": 1},
                       "sinks": {"value": ["console"]}, "lr": {"values": [0.1]}}}))
    env = subprocess_env()
    launched = subprocess.run([str(ROOT / "run_sweep.sh"), "x.yaml"], cwd=study, env=env,
                              capture_output=True, text=True, timeout=250)
    assert launched.returncode == 0, launched.stderr[-2000:]
    printed = launched.stdout + launched.stderr
    relative = os.path.relpath(ROOT, study)
    shown = relative if relative.split(os.sep).count(os.pardir) <= 2 else str(ROOT)
    hint = next(line.strip() for line in printed.splitlines()
                if line.strip().startswith(shlex.quote(f"{shown}/util/with_venv.sh")
                                           + " python -m agent.report"))
    report = subprocess.run(hint, shell=True, cwd=study, env=env, capture_output=True,
                            text=True, timeout=200)
    assert report.returncode == 0, report.stderr[-2000:]
    assert list((study / "reports").iterdir())  # the report of the sweep made there
    command = shlex.quote(f"{shown}/run_sweep.sh") + " "  # "Add agents from another shell: "
    again = next(line[line.index(command):] for line in printed.splitlines() if command in line)
    resumed = subprocess.run(again, shell=True, cwd=study, env=env, capture_output=True,
                             text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def pasted(hint: str, cwd, **replace: str) -> subprocess.CompletedProcess:
    """`hint` run by a shell in `cwd` as a user pastes it: no PYTHONPATH of ours, no venv."""
    for placeholder, value in replace.items():
        hint = hint.replace(placeholder, value)
    env = subprocess_env()
    env.pop("PYTHONPATH")
    env.pop(ROOT_VARIABLE, None)
    return subprocess.run(hint, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_the_list_of_sweeps_names_a_status_command_that_runs_when_pasted(tmp_path):
    from agent.sweep.store import create_store

    create_store(tmp_path / "data" / "sweeps" / "abc", "abc", "listed", {
        "program": "agent/train.py", "method": "grid",
        "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.1]}}}).close()
    listed = pasted(f"{ROOT}/util/with_venv.sh python -m agent.status", tmp_path)
    assert listed.returncode == 0, listed.stderr
    hint = listed.stdout.rsplit("one sweep's runs:", 1)[1].strip()
    shown = pasted(hint, tmp_path, **{"<sweep>": "abc"})
    assert shown.returncode == 0, f"{hint}: {shown.stderr}"
    assert "sweep abc (listed" in shown.stdout


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_report_refused_for_another_program_names_a_status_command_that_runs(tmp_path):
    from agent.sweep.store import create_store

    create_store(tmp_path / "data" / "sweeps" / "own", "own", "own", {
        "program": "train.py", "method": "grid",
        "parameters": {"a": {"values": [1]}}}).close()
    refused = pasted(f"{ROOT}/util/with_venv.sh python -m agent.report own", tmp_path)
    assert refused.returncode == 2 and "another program" in refused.stderr, refused.stderr
    hint = refused.stderr.split("see its runs with ", 1)[1].split(",")[0]
    shown = pasted(hint, tmp_path)
    assert shown.returncode == 0, f"{hint}: {shown.stderr}"
    assert "sweep own (own" in shown.stdout

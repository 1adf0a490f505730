"""Local sweeps of a program that is not our trainer (any W&B-instrumented script): each run is
the argv `wandb agent` would run, in a subprocess with W&B's agent environment, offline; its
metric comes from the run's own W&B offline history as it is written, so hyperband stops runs.
Real agent processes, a real SQLite store, a real W&B-instrumented program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from agent.sweep.engine import run_field
from agent.sweep.store import SweepStore
from agent.sweep.target import create_local_sweep
from agent.sweep.wandb_agent import read_param_file
from conftest import ROOT, closed_offline_runs, subprocess_env
from test_local_sweeps import alive, press_ctrl_c_twice, said_after, wait_for
from util.errors import SWEEP_CTRL_C_NOTE

TOY = ROOT / "tests" / "programs" / "toy_train.py"
SLOW_TO_STOP = ROOT / "tests" / "programs" / "slow_to_stop.py"


def make_sweep(workdir, parameters: dict, program=TOY, **extra) -> SweepStore:
    config = {"program": str(program), "method": "grid",
              "metric": {"name": "val_loss", "goal": "minimize"},
              "parameters": parameters, **extra}
    path = workdir / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return create_local_sweep(path)


def run_agent(workdir, store: SweepStore, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory),
                           "--heartbeat", "0.3", *args], cwd=workdir, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=280)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hyperband_stops_a_foreign_program_from_its_offline_history(workdir):
    store = make_sweep(workdir, {"lr": {"values": [2.0, 1.0, 0.02, 0.01]},
                                 "epochs": {"value": 6}},
                       early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    result = run_agent(workdir, store)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = store.runs()
    states = {run_field(r, "config")["lr"]: run_field(r, "state") for r in runs}
    assert len(runs) == 4 and states[2.0] == "finished", states
    stopped = [r for r in runs if run_field(r, "state") == "stopped"]
    assert stopped, [(run_field(r, "config"), run_field(r, "state")) for r in runs]
    for run in stopped:  # stopped while running, with the rows it had logged
        history = run_field(run, "history")
        assert 1 <= len(history) < 6 and all("val_loss" in row for row in history)
    finished = next(r for r in runs if run_field(r, "config")["lr"] == 2.0)
    assert [row["epoch"] for row in run_field(finished, "history")] == [1, 2, 3, 4, 5, 6]
    assert run_field(finished, "summary")["val_loss"] == pytest.approx(1 / (1 + 2.0 * 6))

    offline = {r.run_id: r for r in closed_offline_runs(workdir / "wandb", 4)}
    sweep_id = store.sweep().id
    for run in runs:
        run_id = run_field(run, "id")
        seen = offline[run_id]
        assert seen.config["lr"] == run_field(run, "config")["lr"]  # the argv it was given
        if run_field(run, "state") == "finished":
            environment = seen.summary["agent_environment"]
            assert environment["WANDB_SWEEP_ID"] == sweep_id
            assert environment["WANDB_RUN_ID"] == run_id and environment["WANDB_MODE"] == "offline"
            assert read_param_file(environment["WANDB_SWEEP_PARAM_PATH"]) == \
                run_field(run, "config")


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_second_ctrl_c_ends_the_agent_and_its_run_of_another_program_at_once(workdir):
    """An agent on its own, its run a program that does not stop when asked (SIGTERM and
    SIGINT ignored), in a process group of its own as W&B's agent runs one (a terminal's
    Ctrl-C does not reach it): the first Ctrl-C asks it to stop (SIGTERM), which it does not;
    a second ends the agent at once, killed by SIGINT, nothing more said, and the program
    with it (SIGKILL). The agent waited the 30 s after which it kills a run that was asked
    to stop, whatever the Ctrl-Cs, and the program would outlive an agent killed sooner."""
    pid_file = workdir / "program.pid"
    store = make_sweep(workdir, {"pid_file": {"value": str(pid_file)}}, program=SLOW_TO_STOP)
    log = workdir / "stderr.txt"
    with open(log, "w") as stderr:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory)],
            cwd=workdir, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)
    try:
        wait_for(pid_file.exists, 60, "the program")
        program = int(pid_file.read_text())
        press_ctrl_c_twice(agent.pid, log, [agent.pid, program])
        agent.wait(timeout=10)
        wait_for(lambda: not alive(program), 5, "the program to end")
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        if pid_file.exists() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert agent.returncode == -signal.SIGINT, log.read_text()[-2000:]
    assert said_after(log, SWEEP_CTRL_C_NOTE) == [], log.read_text()[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_failed_runs_reason_quotes_a_command_item_that_holds_a_space(workdir):
    """B0neh3ad/FastMRI_2024_shasha's sweep.yaml writes its interpreter and script as one
    command item (`- python3.8 train.py`), which W&B's agent passes to /usr/bin/env as one
    word, and every run fails (env: 'python3.8 train.py': No such file, exit 127). The
    run's reason joined the argv with spaces, '/usr/bin/env python3.8 train.py -b ...
    exited with code 127', reading as the command that would have worked; it now quotes
    each item as a shell would."""
    store = make_sweep(workdir, {"lr": {"values": [0.1]}},
                       command=["${env}", f"python3 {TOY}", "${args}"])
    result = run_agent(workdir, store)
    assert result.returncode == 1, result.stderr[-3000:]
    (run,) = store.runs()
    error = run_field(run, "error")
    assert f"/usr/bin/env 'python3 {TOY}' --lr=0.1 ... exited with code 127" in error, error


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_failing_program_is_failed_and_an_agent_whose_runs_all_failed_exits_1(workdir):
    store = make_sweep(workdir, {"lr": {"values": [0.1, 0.2]}, "exit_code": {"value": 3}})
    result = run_agent(workdir, store)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "all 2 runs failed" in result.stderr
    for run in store.runs():
        assert run_field(run, "state") == "failed"
        assert "exited with code 3" in run_field(run, "error")


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_pack_says_it_does_not_apply_to_another_programs_runs(workdir):
    store = make_sweep(workdir, {"lr": {"values": [0.1, 0.2]}, "epochs": {"value": 1}})
    result = run_agent(workdir, store, "--pack", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    notice = [line for line in result.stderr.splitlines() if "--pack 4 does not apply" in line]
    assert len(notice) == 1 and "another program, one process a run" in notice[0]
    assert [run_field(r, "state") for r in store.runs()] == ["finished", "finished"]
    assert all(run_field(r, "pack") is None for r in store.runs())


@pytest.mark.e2e
@pytest.mark.timeout(200)
@pytest.mark.parametrize("command", ["agent.report", "agent.repeat"])
def test_the_report_and_repeats_refuse_a_program_sweep_in_one_line(workdir, command):
    """They read and set our trainer's parameters and files (a repeat would hand the program
    --seed, --model...): for another program, one line and exit 2, nothing written."""
    store = make_sweep(workdir, {"lr": {"values": [0.1]}, "epochs": {"value": 2}})
    assert run_agent(workdir, store).returncode == 0
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    result = subprocess.run([sys.executable, "-m", command, store.sweep().id], cwd=workdir,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "runs another program, not our trainer" in line
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_program_runs_go_to_the_launchs_project_grouped_by_their_sweep(workdir):
    """--project (or WANDB_PROJECT) decides where a local sweep's runs go, for another
    program's runs as for our trainer's, and offline, where no sweep holds them together,
    the program's runs carry the sweep's group."""
    path = workdir / "toy.yaml"
    path.write_text(yaml.safe_dump({"program": str(TOY), "method": "grid",
                                    "metric": {"name": "val_loss", "goal": "minimize"},
                                    "parameters": {"lr": {"values": [0.1, 0.2]},
                                                   "epochs": {"value": 2}}}))
    result = subprocess.run([sys.executable, "-m", "agent.launch", str(path), "--project",
                             "proj-x"], cwd=workdir, env=subprocess_env(), capture_output=True,
                            text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    (store_dir,) = (workdir / "data" / "sweeps").iterdir()
    runs = closed_offline_runs(workdir / "wandb", 2)
    assert len(runs) == 2
    assert {(r.project, r.group) for r in runs} == {("proj-x", f"toy-{store_dir.name}")}
    # each run is announced and ended on the console as a trial of ours is
    store = SweepStore(store_dir / "sweep.db")
    for run in store.runs():
        k = 1 + sorted(r.seq for r in store.runs()).index(run.seq)
        assert f"run {k}/2 {run.id}  lr={run.config['lr']}" in result.stdout
        assert f"run {k}/2 {run.id} finished: val_loss " in result.stdout


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_nested_metric_is_read_by_its_dotted_name_and_a_hidden_history_is_said(workdir):
    """`wandb.log({"val": {"loss": x}})` is `val.loss` on W&B, the name a sweep's metric gives
    it: each row reaches the store under it. A program that puts its W&B files elsewhere
    (wandb.init(dir=...)) leaves the agent blind to its metric, and the agent says so."""
    store = make_sweep(workdir, {"lr": {"values": [0.5]}, "epochs": {"value": 2},
                                 "seconds_per_epoch": {"value": 0.1}, "nested": {"value": 1}},
                       metric={"name": "val.loss", "goal": "minimize"})
    result = run_agent(workdir, store)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    assert [row["val.loss"] for row in run_field(run, "history")] == pytest.approx(
        [1 / 1.5, 1 / 2.0])
    assert run_field(run, "summary")["val.loss"] == pytest.approx(0.5)
    assert "logged no" not in result.stderr

    hidden = make_sweep(workdir, {"lr": {"values": [0.5]}, "epochs": {"value": 1},
                                  "seconds_per_epoch": {"value": 0.1},
                                  "own_dir": {"value": str(workdir / "elsewhere")}})
    result = run_agent(workdir, hidden)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = hidden.runs()
    assert run_field(run, "state") == "finished" and not run_field(run, "history")
    assert f"note: run {run_field(run, 'id')} logged no 'val_loss' where its agent reads " \
           "it" in result.stderr, result.stderr[-2000:]
    assert "wandb.init(dir=...)" in result.stderr


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_a_metric_name_the_program_never_logs_is_said_with_what_it_logged(workdir):
    """A sweep whose metric has a typo (`val_los`; the program logs `val_loss`): the run
    finishes, and the note names what the run logged and the closest name."""
    store = make_sweep(workdir, {"lr": {"values": [0.5]}, "epochs": {"value": 1},
                                 "seconds_per_epoch": {"value": 0.1}},
                       metric={"name": "val_los", "goal": "minimize"})
    result = run_agent(workdir, store)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("note: run ")]
    assert "logged no 'val_los' in " in line and "(it logged " in line, line
    assert "val_loss" in line.split("(it logged ")[1]
    assert line.endswith("did you mean 'val_loss'?): the sweep's search and early "
                         "termination saw no value of it"), line


@pytest.mark.e2e
@pytest.mark.timeout(200)
@pytest.mark.parametrize("activated, with_wandb", [("VIRTUAL_ENV", True), ("CONDA_PREFIX", True),
                                                 (None, True), ("CONDA_PREFIX", False)])
def test_a_program_runs_with_the_python_of_the_callers_activated_environment(workdir,
                                                                              activated,
                                                                              with_wandb):
    """`wandb agent` started from a shell runs `${interpreter}` (python) as that shell finds
    it: the user's activated environment (a virtualenv, conda), with their program's
    packages. ./run_sweep.sh (through util/with_venv.sh, which puts .venv/bin first) gives a
    program's runs the caller's PATH, PYTHONPATH and VIRTUAL_ENV back when one is activated
    and its python has wandb; with none, or one without wandb (conda's base environment,
    which its installer activates in every shell), the project's venv python runs them (it
    exists and holds torch and wandb)."""
    own_env = workdir / "own-env" / "bin"
    own_env.mkdir(parents=True)
    # without wandb: the same python without its site-packages (-S), as a bare conda base
    (own_env / "python").write_text(f"#!/bin/sh\necho \"$@\" >> {workdir / 'used'}\n"
                                    f"exec {sys.executable} {'' if with_wandb else '-S'} \"$@\"\n")
    (own_env / "python").chmod(0o755)
    (workdir / "report.py").write_text(
        "import json, os, sys\n"
        "json.dump({k: os.environ.get(k) for k in ('PYTHONPATH', 'VIRTUAL_ENV')}"
        " | {'python': sys.executable}, open('seen.json', 'w'))\n")
    (workdir / "own.yaml").write_text(yaml.safe_dump({
        "program": "report.py", "method": "grid", "parameters": {"lr": {"value": 0.1}}}))
    env = subprocess_env(PATH=f"{own_env}{os.pathsep}{os.environ['PATH']}")
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX"):
        env.pop(name, None)
    if activated:
        env[activated] = str(own_env.parent)
    result = subprocess.run([str(ROOT / "run_sweep.sh"), "own.yaml"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads((workdir / "seen.json").read_text())
    used = (workdir / "used").read_text().splitlines() if (workdir / "used").exists() else []
    if activated and with_wandb:
        assert "report.py --lr=0.1" in used
        assert seen["PYTHONPATH"] is None
        assert seen["VIRTUAL_ENV"] == (str(own_env.parent) if activated == "VIRTUAL_ENV"
                                       else None)
    else:
        assert "report.py --lr=0.1" not in used
        assert seen["python"].startswith(str(ROOT / ".venv"))
        assert seen["VIRTUAL_ENV"] == str(ROOT / ".venv")
        assert ("has no wandb" in result.stderr) == bool(activated), result.stderr[-2000:]


def test_status_and_closing_lines_show_nested_parameters_by_their_dotted_names(workdir):
    """A nested `parameters` block reaches another program as one dict (--opt={...}), and
    its runs differ by the values inside it: the status table and the closing lines name
    them as W&B does (opt.lr), where they showed no column for them, so runs of two lrs
    read alike ('tied with 1 other run', the table's rows the same)."""
    import io

    from rich.console import Console

    from agent.sweep.controller import claim
    from agent.sweep.status import closing_lines, status_table

    store = make_sweep(workdir, {"opt": {"parameters": {"lr": {"values": [0.1, 0.01]},
                                                        "name": {"value": "sgd"}}},
                                 "epochs": {"value": 1}})
    for loss in (0.5, 0.25):
        (run,) = claim(store, "agent-a").runs
        store.record_epoch(run.run_id, "agent-a", 1, {"epoch": 1, "val_loss": loss})
        store.finish(run.run_id, "agent-a", "finished", {"val_loss": loss})
    runs = store.runs()
    assert [run_field(r, "config")["opt"]["lr"] for r in runs] == [0.1, 0.01]
    shown = io.StringIO()
    Console(file=shown, width=200).print(status_table(store.sweep().config, runs))
    header, *rows = [line for line in shown.getvalue().splitlines()
                     if line.strip() and "─" not in line]
    assert header.split() == ["run", "state", "rows", "val_loss", "opt.lr"], header
    assert [row.split()[-1] for row in rows] == ["0.1", "0.01"], rows
    best = next(line for line in closing_lines(store) if line.startswith("Best run:"))
    assert best.endswith("val_loss=0.2500 (opt.lr=0.01)"), best


def test_a_nested_key_with_a_dot_in_its_name_shows_its_values(workdir):
    """A nested parameter whose own name holds a dot (a public bayes sweep of
    scripts/launch_run.py names its init scales per layer, f"{layer}.{param}": here
    layer0.weight inside init.scales, a name W&B's schema takes): the runs get
    {"init": {"scales": {"layer0.weight": x}}}, and its column in the status table was blank,
    the closing line's best run left it out and a run's header read
    'init.scales.layer0.weight=None', since the dotted name was split at every dot
    (init -> scales -> layer0 -> weight)."""
    import io

    from rich.console import Console

    from agent.sweep.controller import claim
    from agent.sweep.status import closing_lines, status_table

    store = make_sweep(workdir, {"init": {"parameters": {"scales": {"parameters": {
        "layer0.weight": {"values": [0.1, 0.01]}}}}}, "epochs": {"value": 1}})
    for loss in (0.5, 0.25):
        (run,) = claim(store, "agent-a").runs
        store.record_epoch(run.run_id, "agent-a", 1, {"epoch": 1, "val_loss": loss})
        store.finish(run.run_id, "agent-a", "finished", {"val_loss": loss})
    runs = store.runs()
    assert [run_field(r, "config")["init"]["scales"]["layer0.weight"] for r in runs] == [
        0.1, 0.01]
    shown = io.StringIO()
    Console(file=shown, width=200).print(status_table(store.sweep().config, runs))
    header, *rows = [line for line in shown.getvalue().splitlines()
                     if line.strip() and "─" not in line]
    assert header.split()[-1] == "init.scales.layer0.weight", header
    assert [row.split()[-1] for row in rows] == ["0.1", "0.01"], rows
    best = next(line for line in closing_lines(store) if line.startswith("Best run:"))
    assert best.endswith("val_loss=0.2500 (init.scales.layer0.weight=0.01)"), best

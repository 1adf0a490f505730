"""A run whose distribution drew a value the trial refuses (a sweep accepted with a note: its
probability is below agent/sweep/config.py OUTSIDE_LIMIT), at run time: offline through the
launcher with packed agents, and through a W&B sweep's packed agent. The run fails alone with
its one-line reason, recorded (the store, the W&B run) and shown (the closing lines, the
report); its pack-mates train and the sweep goes on. A null value reads None in every line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.sweep.controller import keep_proposal
from agent.sweep.store import create_store
from conftest import closed_offline_runs, subprocess_env

COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
REASON = "weight_decay=-1e-05 is not allowed: expected a number in [0, 10]"


def fixed(workdir) -> dict:
    return {"dataset": "digits", "data_dir": str(workdir / "data"), "model": "dense",
            "hidden": 16, "epochs": 1, "train_subset": 256, "num_threads": 1,
            "histograms": False, "sinks": ["console", "tensorboard"]}


def session_hparams(events) -> dict:
    """The HPARAMS values of a run's TensorBoard event file (its session start)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    (start,) = [metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                for event in EventFileLoader(str(events)).Load() for value in event.summary.value
                if value.tag == metadata.SESSION_START_INFO_TAG]
    return start.hparams


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_refused_draw_fails_alone_and_the_packed_sweep_goes_on(workdir):
    parameters = {name: {"value": value} for name, value in fixed(workdir).items()}
    # the runs' group from a variable this shell lacks: each run gets its name, said at launch
    command = COMMAND + ["--group=${envvar:SWEEP_TEST_UNSET}"]
    store = create_store(workdir / "data" / "sweeps" / "rd1", "rd1", "refused", {
        "program": "agent/train.py", "command": command, "method": "random", "run_cap": 4,
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {**parameters, "run_name": {"values": [None]},
                       # below 0 with probability 2.9e-7: what one run drew here
                       "weight_decay": {"distribution": "normal", "mu": 5e-4,
                                        "sigma": 1e-4}}})
    # the engine's draw outside the range, waiting to be claimed first
    assert keep_proposal(store, {**fixed(workdir), "run_name": None, "weight_decay": -1e-5})
    launched = subprocess.run(
        [sys.executable, "-m", "agent.launch", str(store.directory), "--pack", "2"],
        cwd=workdir, env={k: v for k, v in subprocess_env(OMP_NUM_THREADS="1").items()
                          if k != "SWEEP_TEST_UNSET"}, capture_output=True, text=True,
        timeout=240)
    assert launched.returncode == 0, launched.stderr
    assert "note: command[5]: --group=${envvar:SWEEP_TEST_UNSET}: SWEEP_TEST_UNSET is not set" \
        in " ".join(launched.stdout.split()) and "'--group=SWEEP_TEST_UNSET'" in launched.stdout
    runs = store.runs()
    (failed,) = [r for r in runs if r.state == "failed"]
    assert failed.config["weight_decay"] == -1e-5 and failed.error == REASON
    assert sorted(r.state for r in runs) == ["failed"] + ["finished"] * 3
    assert len({r.pack for r in runs if r.state == "finished" and r.pack}) >= 1  # packed
    assert f"run {failed.id} failed ({REASON})" in launched.stderr
    out = launched.stdout
    closing = out[out.index("Results:"):].splitlines()
    assert "Failed: 1 run" in closing and f"  {failed.id}: {REASON}" in closing, out
    # a null is None in the run lines, the table and the best run's line, as ${args} passes it
    run_lines = [line for line in out.splitlines() if line.startswith("run ")
                 and "finished" not in line]
    assert len(run_lines) == 3 and all(" run_name=None " in line for line in run_lines), out
    assert "run_name=None" in next(line for line in closing if line.startswith("Best run"))
    for run in runs:  # TensorBoard's HPARAMS, under the group every run got from the name
        if run.state == "finished":
            (events,) = (workdir / "data" / "logs" / "SWEEP_TEST_UNSET" / run.id).glob(
                "events.out.tfevents.*")
            assert session_hparams(events)["run_name"].string_value == "None"
    table = out[:out.index("Results:")]
    assert all(f"{r.id} finished" in " ".join(table.split()) for r in runs
               if r.state == "finished")
    # every run with a result has its row; the failed one is counted under the table
    assert table.count(" None") >= sum(r.state == "finished" for r in runs)
    from agent.report.document import main as report

    assert report(["rd1", "--out", str(workdir / "reports")]) == 0
    text = (workdir / "reports" / "rd1" / "report.md").read_text()
    failed_row = next(line for line in text.splitlines() if failed.id in line
                      and REASON in line)
    assert "0 of 1" in failed_row  # its own epochs, not the default
    # and the set-up's run time counts it apart: it trained nothing
    assert f"- 1 run failed before a first epoch ended (not counted below): {failed.id}." \
        in text
    assert "run_name=None" in text  # the report (its figures took None for a number)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_refused_draw_of_a_wandb_sweep_fails_alone_recorded_in_wandb(workdir, monkeypatch,
                                                                        capsys):
    from agent.sweep.wandb_agent import run_wandb_sweep
    from test_wandb_packed_agent import ScriptedServer, base, sweep_config

    proposals = [base(workdir, epochs=1, weight_decay=wd) for wd in (5e-4, -1e-5, 6e-4)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw020", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(), pack=3)
    assert code == 0  # not every run failed
    assert f"run wbrun001 failed ({REASON})" in capsys.readouterr().err
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 3)}
    assert sorted(runs) == ["wbrun000", "wbrun001", "wbrun002"]
    assert runs["wbrun001"].exit_code == 1 and runs["wbrun001"].summary["error"] == REASON
    assert runs["wbrun001"].config["weight_decay"] == -1e-5
    assert runs["wbrun001"].sweep_id == "sw020"
    for run_id in ("wbrun000", "wbrun002"):  # its pack-mates trained, as one pack
        assert runs[run_id].exit_code == 0 and "test/acc" in runs[run_id].summary

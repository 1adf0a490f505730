"""A grid whose run_cap is below its size runs the engine's first run_cap points (in
sweeps/grid_search.py's order: itertools.product over the parameters sorted by name, each
one's values as listed; W&B's grid walks its points in order as well), so the sweep check
judges the values and rules of those points only: a value or combination the trial refuses
among the points past the cap is never handed to a trial. The oracle is the engine's own
grid, asked for its runs one after another as the controller asks, each run validated by
the trial's own validate."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess

import pytest
import torch
import yaml

from agent.launch import check_sweep_devices
from agent.params import validate
from agent.sweep.config import OUTSIDE_LIMIT
from agent.sweep.engine import engine_config, proposed_params
from conftest import ROOT, subprocess_env, sweep_check
from util.errors import UserError

HEAD = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"}}
# Written with nesterov last: the engine orders the parameters by name, so nesterov varies
# slowest and its true points are the grid's last 4 (nesterov with adam fails: 2 of them)
RULE_GRID = {"dataset": {"value": "digits"}, "optimizer": {"values": ["adam", "sgd"]},
             "weight_decay": {"values": [0.0, 0.0005]}, "nesterov": {"values": [False, True]}}


def checked(tmp_path, parameters: dict, run_cap: int | None) -> tuple[list[str], str | None]:
    """The sweep check's notes, and its refusal (None where it accepts the sweep)."""
    cap = {} if run_cap is None else {"run_cap": run_cap}
    return sweep_check(tmp_path / "grid.yaml", {**HEAD, **cap, "parameters": parameters})


def engine_grid(tmp_path, run_cap: int) -> list[dict]:
    """The runs the engine's grid proposes for grid.yaml, one after another as the
    controller asks for them (each earlier run finished), until run_cap or the grid's end."""
    config = engine_config(yaml.safe_load((tmp_path / "grid.yaml").read_text()))
    runs: list[dict] = []
    while len(runs) < run_cap and (params := proposed_params(config, runs)) is not None:
        runs.append({"id": str(len(runs)), "state": "finished", "config": params,
                     "history": [], "summary": {}})
    return [run["config"] for run in runs]


def failing(runs: list[dict]) -> int:
    count = 0
    for run in runs:
        try:
            validate(run)
        except UserError:
            count += 1
    return count


@pytest.mark.parametrize("run_cap", range(1, 10))
def test_a_capped_grid_is_judged_by_the_runs_the_engine_makes(tmp_path, run_cap):
    """Grid of 8 points: nesterov true fails with adam, the engine's 5th and 6th runs.
    Capped at 1 to 4 runs, no run fails (it was refused: 'in 2 of the grid's 8 runs');
    from 5 on, the share said is that of the engine's runs."""
    notes, refusal = checked(tmp_path, RULE_GRID, run_cap)
    runs = engine_grid(tmp_path, run_cap)
    assert len(runs) == min(run_cap, 8)
    bad = failing(runs)
    assert [run["nesterov"] for run in runs] == [False] * min(4, run_cap) + \
        [True] * max(0, min(run_cap, 8) - 4)
    if bad == 0:
        assert refusal is None and not [n for n in notes if "can be drawn" in n], \
            (refusal, notes)
        return
    assert bad / len(runs) >= OUTSIDE_LIMIT and refusal is not None, notes
    said = re.search(r"in (\d+) of the grid's (\d+) runs \(([0-9.]+)%", refusal)
    assert said and (int(said[1]), int(said[2])) == (bad, len(runs)), refusal
    assert float(said[3]) == pytest.approx(100 * bad / len(runs), abs=0.05), refusal
    capped = f"; run_cap {len(runs)} of its 8 points)" if run_cap < 8 else "%)"
    assert capped in refusal and "\n" not in refusal, refusal


def test_the_refusal_names_the_combination_refused_in_most_of_the_runs(tmp_path):
    """Capped at 6: the runs 5 and 6 are nesterov with adam, both refused: 2 of 6 runs, not
    the 2 of 8 of the whole grid, nor 1 of 4 as each parameter's share multiplied."""
    _, refusal = checked(tmp_path, RULE_GRID, 6)
    assert refusal is not None
    assert "nesterov=True, optimizer='adam'" in refusal, refusal
    assert "in 2 of the grid's 6 runs (33.3%; run_cap 6 of its 8 points)" in refusal, refusal


@pytest.mark.parametrize("run_cap, refused", [(2, False), (3, True), (None, True)])
def test_a_value_refused_alone_past_the_cap_is_never_run(tmp_path, run_cap, refused):
    """lr 500 is out of the trial's range: listed last of a grid over lr alone, it is the
    grid's third run, so a run_cap of 2 never hands it to a trial."""
    parameters = {"dataset": {"value": "digits"}, "lr": {"values": [0.1, 0.01, 500]}}
    _, refusal = checked(tmp_path, parameters, run_cap)
    assert failing(engine_grid(tmp_path, run_cap or 3)) == int(refused)
    if refused:
        assert refusal is not None and "parameters.lr.values[2]: lr=500.0" in refusal, refusal
    else:
        assert refusal is None, refusal


@pytest.mark.parametrize("run_cap, expected", [
    (2, None),
    (3, "val_split=0.0, in 1 of the grid's 3 runs (33.3%; run_cap 3 of its 4 points)"),
])
def test_a_validation_metric_is_judged_by_the_capped_grids_runs(tmp_path, run_cap, expected):
    """val_split [0.1, 0.0] x weight_decay [0.0, 0.001]: by name weight_decay varies fastest,
    so val_split=0.0 is in the grid's last two runs; metric val/acc, which such a run does
    not report."""
    parameters = {"dataset": {"value": "digits"}, "val_split": {"values": [0.1, 0.0]},
                  "weight_decay": {"values": [0.0, 0.001]}}
    _, refusal = checked(tmp_path, parameters, run_cap)
    runs = engine_grid(tmp_path, run_cap)
    without = sum(run["val_split"] == 0.0 for run in runs)
    if expected is None:
        assert without == 0 and refusal is None, (runs, refusal)
    else:
        assert without == 1 and refusal is not None and expected in refusal, (runs, refusal)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_capped_grid_whose_refused_points_are_past_the_cap_runs_every_run(tmp_path):
    """The launch itself: the grid above capped at 4 is made and its 4 runs train and
    finish on digits, each with nesterov false (it was refused: 'in 2 of the grid's 8
    runs')."""
    config = {**HEAD, "name": "capped", "run_cap": 4, "parameters": {
        **RULE_GRID, "epochs": {"value": 1}, "train_subset": {"value": 200},
        "channels": {"value": [4]}, "sinks": {"value": ["console"]}}}
    (tmp_path / "capped.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    launch = subprocess.run([str(ROOT / "run_sweep.sh"), "capped.yaml"], cwd=tmp_path,
                            env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
                            text=True, timeout=280)
    assert launch.returncode == 0, launch.stderr[-3000:]
    sweep_id = re.search(r"Created local sweep (\w+)", launch.stdout).group(1)
    store = sqlite3.connect(tmp_path / "data" / "sweeps" / sweep_id / "sweep.db")
    rows = store.execute("SELECT state, config FROM runs").fetchall()
    assert sorted(state for state, _ in rows) == ["finished"] * 4, rows
    assert {json.loads(config)["nesterov"] for _, config in rows} == {False}, rows


@pytest.mark.parametrize("run_cap", [2, 3, None])
def test_a_device_past_the_cap_is_not_asked_of_this_machine(run_cap):
    """device [cpu, cuda] x lr [0.1, 0.01]: by name device varies slowest, so a run_cap of 2
    runs on the CPU only, and the launcher's device check (which refused a cuda among the
    values on a machine without a GPU) has nothing to refuse; from 3 runs a run asks for
    cuda. The config as W&B's server holds it, without the engine's defaults."""
    config = {"program": "agent/train.py", "method": "grid",
              "parameters": {"dataset": {"value": "digits"},
                             "device": {"values": ["cpu", "cuda"]},
                             "lr": {"values": [0.1, 0.01]}}}
    if run_cap is not None:
        config["run_cap"] = run_cap
    if run_cap == 2 or torch.cuda.is_available():
        check_sweep_devices("sweep e/p/abc", config)  # no UserError
        return
    with pytest.raises(UserError, match=r"^sweep e/p/abc: parameters.device: device=cuda"):
        check_sweep_devices("sweep e/p/abc", config)


def test_a_run_cap_written_as_a_float_caps_as_its_integer(workdir, capfd):
    """W&B's schema takes run_cap: 2.0 as an integer (JSON Schema draft 7: a number whose
    fraction is zero), so `wandb sweep` creates the sweep and W&B makes 2 runs. A capped grid
    asked the engine for run_cap points at once (range(2.0): TypeError), and the dry run and
    the launch were refused with 'the sweep engine rejects the sweep (proposing the next
    run): TypeError: ...'; a random sweep said 'run 1/2.0'. Now run_cap: 2.0 is 2."""
    from agent.launch import main
    from agent.sweep.target import open_store

    path = workdir / "s.yaml"
    path.write_text(yaml.safe_dump({
        **HEAD, "program": "agent/train.py", "run_cap": 2.0,
        "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                       "hidden": {"value": 8}, "epochs": {"value": 1},
                       "sinks": {"value": ["console"]},
                       "lr": {"values": [0.1, 0.01, 0.001]}}}))
    assert main([str(path), "--dry-run"]) == 0
    assert "grid: 2 of its 3 points (run_cap)" in capfd.readouterr().out
    assert main([str(path)]) == 0
    said = "".join(capfd.readouterr())  # the runs' lines are the agent's, on stderr
    assert "run 2/2 " in said and "/2.0" not in said, said
    (store,) = [open_store(str(d)) for d in (workdir / "data" / "sweeps").iterdir()]
    assert [run.config["lr"] for run in store.runs()] == [0.1, 0.01]
    assert store.sweep().config["run_cap"] == 2 and \
        isinstance(store.sweep().config["run_cap"], int)

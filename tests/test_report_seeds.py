"""A sweep that searches `seed` holds repeats, not settings: its runs that differ only in
their seed are one setting. `agent.repeat` picks settings by their mean over the sweep's
seeds and gives them seeds the sweep did not; the report shows one row per setting, with
the mean and Student-t interval over fresh seeds only (two repeat sweeps of one setting read
as one, each seed once). Real SQLite stores holding finished runs (no training: the report
reads summaries), written by the agents' own store calls."""

from __future__ import annotations

import csv
import itertools
import re
import signal

import numpy as np
import pytest
from scipy import stats as scipy_stats

from agent.report import document
from agent.report.repeat import repeat_configs
from agent.report.study import local_study, repeat_description
from agent.sweep.controller import claim
from agent.sweep.store import SweepStore, create_store
from finished_runs import end_every_run

pytestmark = pytest.mark.timeout(300)
OPTIMIZERS, LRS, SEEDS = ["sgd", "adam"], [0.1, 0.01], [0, 1, 2]
# a setting's value: its base plus a seed's offset; sgd's best single run (lr 0.01, seed 2)
# belongs to its worse setting by the mean
BASE = {("sgd", 0.1): 0.60, ("sgd", 0.01): 0.55, ("adam", 0.1): 0.40, ("adam", 0.01): 0.70}
OFFSET = {0: 0.0, 1: 0.01, 2: 0.2, 3: -0.02, 4: 0.03, 5: 0.01, 6: -0.04}


def value(config: dict) -> float:
    return BASE[(config["optimizer"], config["lr"])] + OFFSET[config["seed"]]


def finish_all(store, owner: str = "host:1", diverges=lambda config: False) -> None:
    """Finish every run of `store` at its value(); a run for which `diverges` holds ends as
    the trainer ends a diverged run (state finished, summary diverged, its last value)."""
    while (work := claim(store, owner, count=64)).kind == "run":
        for run in work.runs:
            score = value(run.config)
            assert store.finish(run.run_id, owner, "finished",
                                {"val/acc": score, "test/acc": score - 0.01,
                                 "epochs_done": 1, "diverged": diverges(run.config)})


def seeded_sweep(tmp_path, epochs: int = 1, diverges=lambda config: False,
                 dataset: str = "digits"):
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": dataset}, "model": {"value": "dense"},
                             "hidden": {"value": 16}, "epochs": {"value": epochs},
                             "batch_size": {"value": 16}, "sinks": {"value": ["console"]},
                             "optimizer": {"values": OPTIMIZERS}, "lr": {"values": LRS},
                             "seed": {"values": SEEDS}}}
    store = create_store(tmp_path / "data" / "sweeps" / "seeded", "seeded", "seeded", config)
    finish_all(store, diverges=diverges)
    return store


def repeated_sweep(tmp_path, seeds: int, diverges=lambda config: False):
    """The seeded sweep and, for the best setting of each optimizer, a repeat sweep over
    `seeds` fresh seeds, finished (its runs for which `diverges` holds diverged): (the
    sweep's store, its study before the repeats, the repeat configs)."""
    store = seeded_sweep(tmp_path)
    study = local_study(store)
    configs = repeat_configs(study, top=1, by="optimizer", seeds=seeds)
    for n, (_, config) in enumerate(configs):
        repeat = create_store(tmp_path / "data" / "sweeps" / f"rep{n}", f"rep{n}", "r", config)
        finish_all(repeat, diverges=diverges)
    return store, study, configs


def adam_seed_4_diverges(config: dict) -> bool:
    """adam's repeat at seed 4 diverges."""
    return (config["optimizer"], config["seed"]) == ("adam", 4)


def test_repeats_pick_settings_by_their_mean_over_seeds_and_give_them_fresh_seeds(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = local_study(seeded_sweep(tmp_path))
    configs = repeat_configs(study, top=2, by="optimizer", seeds=3)
    by_id = {r.id: r for r in study.runs}
    picked = [(by_id[run_id].config["optimizer"], by_id[run_id].config["lr"])
              for run_id, _ in configs]
    means = {key: np.mean([BASE[key] + OFFSET[s] for s in SEEDS]) for key in BASE}
    for optimizer in OPTIMIZERS:  # each optimizer's settings, best mean first
        expected = sorted((k for k in BASE if k[0] == optimizer), key=means.get, reverse=True)
        assert [p for p in picked if p[0] == optimizer] == expected
    assert len(set(picked)) == len(picked) == 4  # one repeat per setting, never per seed
    for run_id, config in configs:
        assert config["parameters"]["seed"] == {"values": [3, 4, 5]}  # none of 0, 1, 2
        assert by_id[run_id].config["seed"] == 2  # named by the setting's best run


@pytest.mark.parametrize("dataset", ["digits", "cifar100"])
def test_repeats_are_not_picked_from_runs_that_diverged(tmp_path, monkeypatch, capsys,
                                                        dataset):
    """`agent.repeat` ranks settings as the report's "By ..." tables do: a diverged run's
    last value means nothing, so it makes no setting best. (sgd, 0.1), the best sgd setting
    by value, diverged on every seed: sgd's one repeat is (sgd, 0.01). (adam, 0.01) diverged
    on seed 2 only: its rank is the mean of seeds 0 and 1, and its fresh seeds still leave
    out all three the sweep gave it. A sweep whose every scored run diverged has nothing to
    repeat (one line, exit 2, nothing made). The same for a sweep of a dataset whose files
    are not on this machine (CIFAR-100): its class count is known without them."""
    from agent.report.repeat import main, planned

    monkeypatch.chdir(tmp_path)
    diverges = {("sgd", 0.1, s) for s in SEEDS} | {("adam", 0.01, 2)}
    store = seeded_sweep(tmp_path, diverges=lambda c: (c["optimizer"], c["lr"], c["seed"])
                         in diverges, dataset=dataset)
    _, study, configs = planned(["seeded", "--by", "optimizer", "--top", "2", "--seeds", "3"])
    by_id = {r.id: r for r in study.runs}
    picked = {(by_id[run_id].config["optimizer"], by_id[run_id].config["lr"]): config
              for run_id, config in configs}
    assert set(picked) == {("sgd", 0.01), ("adam", 0.1), ("adam", 0.01)}
    for config in picked.values():
        assert config["parameters"]["seed"] == {"values": [3, 4, 5]}
    adam = next(run_id for run_id, _ in configs
                if (by_id[run_id].config["optimizer"], by_id[run_id].config["lr"]) ==
                ("adam", 0.01))
    assert by_id[adam].config["seed"] == 1  # its best run that did not diverge
    assert ("adam", 0.01) == max(((o, lr) for o, lr in picked if o == "adam"),
                                 key=lambda k: np.mean([value({"optimizer": k[0], "lr": k[1],
                                                               "seed": s}) for s in (0, 1)]))

    every = tmp_path / "every"
    every.mkdir()
    monkeypatch.chdir(every)
    seeded_sweep(every, diverges=lambda c: True, dataset=dataset)
    from util.errors import exit_on_user_error

    with pytest.raises(SystemExit) as ended:
        exit_on_user_error(lambda: main(["seeded"]))
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: sweep='seeded': every run with a value of its metric 'val/acc' "
                   "diverged (see its report): nothing to repeat"], err
    assert [p.name for p in (every / "data" / "sweeps").iterdir()] == ["seeded"]
    assert store.sweep().id == "seeded"


STUCK_SWEEP = {"program": "agent/train.py", "method": "grid",
               "metric": {"name": "val/acc", "goal": "maximize"},
               "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                              "epochs": {"value": 1}, "sinks": {"value": ["console"]},
                              "optimizer": {"values": OPTIMIZERS}, "lr": {"values": LRS},
                              "seed": {"values": SEEDS}}}


def finish_stuck(store, stuck) -> None:
    """Finish every run of `store` after one epoch at its value(), or near chance (0.1, so
    the report groups it stuck) where `stuck(config)` holds."""
    def score(config: dict) -> float:
        return 0.1 if stuck(config) else value(config)

    end_every_run(store, lambda c: [{"epoch": 1, "val/acc": score(c), "train/loss": 2.3,
                                     "val/loss": 2.3}], lambda c: {"test/acc": score(c)})


def test_repeats_pass_over_settings_stuck_near_chance(tmp_path, monkeypatch, capsys):
    """A setting whose every run stayed near chance (best validation accuracy below the
    report's stuck bound: 0.15 for 10 classes) learnt nothing that more seeds would measure:
    `agent.repeat --top 2` repeats sgd's one setting that learnt and says it passed over the
    other; a sweep whose every run was stuck has nothing to repeat (one line, exit 2)."""
    from agent.report.repeat import main, planned
    from util.errors import exit_on_user_error

    config = STUCK_SWEEP
    monkeypatch.chdir(tmp_path)
    store = create_store(tmp_path / "data" / "sweeps" / "stuck", "stuck", "stuck", config)
    finish_stuck(store, lambda c: (c["optimizer"], c["lr"]) == ("sgd", 0.01))
    _, study, configs = planned(["stuck", "--by", "optimizer", "--top", "2"])
    by_id = {r.id: r for r in study.runs}
    picked = sorted((by_id[run_id].config["optimizer"], by_id[run_id].config["lr"])
                    for run_id, _ in configs)
    assert picked == [("adam", 0.01), ("adam", 0.1), ("sgd", 0.1)]
    err = capsys.readouterr().err
    assert "optimizer=sgd: passed over lr=0.01: stuck near chance" in err, err
    assert "optimizer=adam" not in err

    every = tmp_path / "every"
    every.mkdir()
    monkeypatch.chdir(every)
    store = create_store(every / "data" / "sweeps" / "stuck", "stuck", "stuck", config)
    finish_stuck(store, lambda c: True)
    with pytest.raises(SystemExit) as ended:
        exit_on_user_error(lambda: main(["stuck"]))
    assert ended.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: sweep='stuck': every run with a value of its metric 'val/acc' stayed stuck "
        "near chance (see its report): nothing to repeat"]
    assert [p.name for p in (every / "data" / "sweeps").iterdir()] == ["stuck"]


def test_a_setting_stuck_on_some_seeds_is_ranked_by_all_of_them(tmp_path, monkeypatch, capsys):
    """adam at lr 0.01 stayed near chance on seeds 0 and 1 and reached 0.90 on seed 2: its
    mean over the sweep's seeds is 0.37, below adam at lr 0.1 (0.47), as the report's "By
    optimizer" table ranks them. agent.repeat left the stuck runs out of the mean and picked
    lr 0.01 on its one lucky seed; it passes over a setting only where every run of it
    stayed stuck, and ranks the others by all their seeds."""
    from agent.report.repeat import planned

    monkeypatch.chdir(tmp_path)
    config = STUCK_SWEEP
    store = create_store(tmp_path / "data" / "sweeps" / "some", "some", "some", config)
    finish_stuck(store, lambda c: (c["optimizer"], c["lr"]) == ("adam", 0.01)
                 and c["seed"] in (0, 1))
    _, study, configs = planned(["some", "--by", "optimizer", "--top", "1"])
    by_id = {r.id: r for r in study.runs}
    picked = sorted((by_id[run_id].config["optimizer"], by_id[run_id].config["lr"])
                    for run_id, _ in configs)
    assert picked == [("adam", 0.1), ("sgd", 0.1)]
    assert "passed over" not in capsys.readouterr().err
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("\n## ")[0]
    (adam_first, *_) = [line for line in table.splitlines() if line.startswith("| adam |")]
    assert "| lr=0.1 |" in adam_first, table


def test_a_repeat_seed_that_diverged_is_named_and_counts_in_no_mean(tmp_path, monkeypatch):
    """A fresh seed whose repeat diverged is shown as "div" in the per-seed column, counted
    beside the mean ("1 of 4 diverged"), written to seeds.csv with diverged=True, and kept out
    of the mean, the interval and Welch's test; a setting with such a seed is never bold,
    even with the best mean of the seeds that trained."""
    monkeypatch.chdir(tmp_path)
    # adam (0.70 + offsets) is far above sgd (0.60 + offsets): bold unless a seed diverged
    store, _, _ = repeated_sweep(tmp_path, seeds=4, diverges=adam_seed_4_diverges)
    report = document.build_report(local_study(store), tmp_path / "report")
    text = report.path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    adam = next(line for line in table.splitlines() if line.startswith("| adam | lr=0.01 |"))
    fresh = [3, 5, 6]  # 4 diverged
    values = [BASE[("adam", 0.01)] + OFFSET[s] for s in fresh]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * sd / np.sqrt(len(values))
    cell = f"{mean:.4f} ± {half:.4f} (n=3); 1 of 4 diverged"
    assert f"| {cell} |" in adam, adam  # not bold
    per_seed = " ".join("div" if s == 4 else f"{BASE[('adam', 0.01)] + OFFSET[s]:.4f}"
                        for s in (3, 4, 5, 6))
    assert f"| {per_seed} |" in adam, adam
    sgd = next(line for line in table.splitlines() if line.startswith("| sgd |"))
    assert "**" not in sgd and "diverged" not in sgd
    assert "Not bold: optimizer=adam, lr=0.01 has the best mean" in table, table
    assert "1 of its 4 fresh seeds (4) diverged" in table
    with open(tmp_path / "report" / "seeds.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    flags = {(row["optimizer"], int(row["seed"])): row["diverged"] for row in written}
    assert flags.pop(("adam", 4)) == "True"
    assert set(flags.values()) == {"False"} and len(flags) == 7


def test_a_repeated_setting_with_one_seed_that_trained_is_named_not_compared(tmp_path,
                                                                            monkeypatch):
    """`agent.repeat --seeds 2` where one of adam's two fresh seeds diverged: its row has one
    value, which Welch's test cannot use. The report said nothing of it and, with sgd the
    only row left to test, stopped on a traceback (min() of no comparison); now the
    sentence says nothing was compared and names the row that could not be."""
    monkeypatch.chdir(tmp_path)
    store, _, _ = repeated_sweep(tmp_path, seeds=2, diverges=adam_seed_4_diverges)
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    assert "**" not in table
    assert ("Fewer than two rows have 2 fresh seeds that did not diverge: nothing to compare, "
            "nothing bold. Not compared, fewer than 2 fresh seeds that did not diverge: "
            "optimizer=adam, lr=0.01.") in table, table
    # nor is it in the figure of seeds, which says so
    assert ("Not in the figure of seeds (fewer than 2 fresh seeds with a value that did not "
            "diverge): optimizer=adam, lr=0.01.") in text
    assert "![values per seed](seeds.png)" in text  # sgd's two seeds are drawn


def test_the_report_shows_each_setting_once_over_fresh_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store, study, configs = repeated_sweep(tmp_path, seeds=3)
    # an older repeat of adam's best setting, named by another of its runs, seeds 0, 3, 6:
    # 0 is the sweep's, 3 is counted already, 6 is fresh
    adam = next(r for r in study.runs if (r.config["optimizer"], r.config["lr"], r.config[
        "seed"]) == ("adam", 0.01, 0))
    by_id = {r.id: r for r in study.runs}
    older = next(config for run_id, config in configs
                 if by_id[run_id].config["optimizer"] == "adam")
    older = {**older, "description": repeat_description(study.sweep_id, adam.id),
             "parameters": {**older["parameters"], "seed": {"values": [0, 3, 6]}}}
    finish_all(create_store(tmp_path / "data" / "sweeps" / "old", "old", "r", older))

    report = document.build_report(local_study(store), tmp_path / "report")
    text = report.path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    rows = [line for line in table.splitlines() if line.startswith("| sgd") or
            line.startswith("| adam")]
    assert len(rows) == 4 and "seed=" not in table  # two settings each, one row each
    for optimizer, lr in (("sgd", 0.1), ("adam", 0.01)):
        fresh = [3, 4, 5] + ([6] if optimizer == "adam" else [])
        values = [BASE[(optimizer, lr)] + OFFSET[s] for s in fresh]
        mean, sd = np.mean(values), np.std(values, ddof=1)
        half = scipy_stats.t.ppf(0.975, len(values) - 1) * sd / np.sqrt(len(values))
        row = next(r for r in rows if r.startswith(f"| {optimizer} | lr={lr:g} |"))
        assert f"{mean:.4f} ± {half:.4f} (n={len(values)})" in row, row
        swept = np.mean([BASE[(optimizer, lr)] + OFFSET[s] for s in SEEDS])
        assert f"{swept:.4f} (mean of 3:" in row, row
    with open(tmp_path / "report" / "seeds.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert {row["sweep_seeds"] for row in written} == {"0 1 2"}
    seen = sorted((row["selected_run"], int(row["seed"])) for row in written)
    assert len(seen) == len(set(seen)) == 7  # 3 + 4 fresh seeds, each once
    assert not {int(row["seed"]) for row in written} & set(SEEDS)


def test_the_sweeps_own_seeds_say_what_their_interval_is(tmp_path, monkeypatch):
    """Without a repeat sweep, a sweep that searched `seed` tables each setting's mean over
    its seeds with a "±": the sentence above the table says it is the half-width of a 95%
    Student-t interval."""
    monkeypatch.chdir(tmp_path)
    text = document.build_report(local_study(seeded_sweep(tmp_path)),
                                 tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    assert " ± " in table
    assert ("val/acc and test/acc over the sweep's own seeds (mean ± half-width of the 95% "
            "Student-t interval), which also ranked them") in table, table


def test_a_sweep_without_seed_keeps_one_setting_a_run():
    """Without `seed` in the sweep, every run is its own setting (n = 1), as before."""
    from agent.report.stats import setting_key

    class Run:
        def __init__(self, config):
            self.config = config

    runs = [Run({"lr": lr, "optimizer": o}) for lr, o in itertools.product(LRS, OPTIMIZERS)]
    assert len({setting_key(r) for r in runs}) == len(runs)
    same = [Run({"lr": 0.1, "seed": s}) for s in SEEDS]
    assert len({setting_key(r) for r in same}) == 1


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_repeat_run_before_the_next_repeat_sweep(tmp_path, signum):
    """`agent.repeat --run` trains one repeat sweep after another; Ctrl-C preempts the run
    in training and stops there (the next repeat sweep is not started), with a line on how
    to go on, then ends as interrupted: killed by SIGINT (a shell reports 130), so that
    `agent.repeat ... --run && next` goes no further; it ended with 0. A scheduler's
    SIGTERM ends it with 0, as any preempted agent."""
    import subprocess
    import sys
    import time

    from agent.sweep.store import SweepStore
    from conftest import subprocess_env

    seeded_sweep(tmp_path, epochs=50)  # a repeat run trains for a while
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.repeat", "seeded", "--by", "optimizer", "--top", "1",
         "--seeds", "4", "--run"], cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in process.stdout:  # the first repeat run is training
        lines.append(line)
        if line.startswith("run 1/4 "):
            break
    time.sleep(1.0)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=120)
    text = "".join(lines) + out
    assert "stopped unfinished" in text and "Traceback" not in text, text
    # the command that goes on is a line of its own, to copy (it was inside a line of 150
    # columns, between 'go on with' and '(finished repeats are kept)')
    said = text.splitlines()
    at = next(n for n, line in enumerate(said) if "stopped unfinished" in line)
    assert said[at].startswith("Repeat sweep ") and said[at].endswith(
        " stopped unfinished (its ended runs are kept): go on with"), said[at]
    assert len(said[at]) <= 80 and said[at + 1].startswith("  ./util/with_venv.sh python -m "
                                                            "agent.repeat seeded")
    assert said[at + 1].endswith(" --run"), said[at + 1]
    if signum == signal.SIGINT:
        assert process.returncode == -signal.SIGINT, text
        assert text.splitlines()[-1] == "interrupted" and "--run" in text.splitlines()[-2]
    else:
        assert process.returncode == 0, text
        assert "--run" in text.splitlines()[-1], text
    sweeps = [SweepStore(p) for p in (tmp_path / "data" / "sweeps").glob("*/sweep.db")]
    repeats = [s for s in sweeps if s.sweep().id != "seeded"]
    assert len(repeats) == 2  # both made, one started
    assert sorted(len(s.runs()) for s in repeats)[0] == 0, text


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_second_ctrl_c_ends_repeat_run_at_once(tmp_path):
    """`agent.repeat --run` whose repeat runs' data set never loads (its cache a FIFO no one
    writes to: a stalled file system): the first Ctrl-C asks the run to stop at its next
    step, which never comes; a second ends the command at once, killed by SIGINT (a shell
    reports 130), nothing more said. It was swallowed, and the command hung there."""
    import os
    import subprocess
    import sys

    from conftest import subprocess_env
    from test_local_sweeps import press_ctrl_c_twice, said_after, wait_for
    from util.errors import SWEEP_CTRL_C_NOTE

    seeded_sweep(tmp_path)
    (tmp_path / "data" / "cache").mkdir(parents=True)
    os.mkfifo(tmp_path / "data" / "cache" / "digits.pt")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.repeat", "seeded", "--by", "optimizer", "--top", "1",
             "--seeds", "2", "--run"], cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"),
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        wait_for(lambda: any(run.state == "running" for path in tmp_path.glob(
            "data/sweeps/[!.]*/sweep.db") for run in SweepStore(path).runs()), 120,
            "a repeat run")  # (a store being made is in a hidden folder)
        press_ctrl_c_twice(process.pid, log, [process.pid])
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGINT, log.read_text()[-2000:]
    assert said_after(log, SWEEP_CTRL_C_NOTE) == [], log.read_text()[-2000:]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_repeat_run_pack_trains_each_settings_seeds_as_one_pack(tmp_path):
    """`agent.repeat S --run --pack 4`: a repeat sweep's runs differ only in their seed, so
    the four of each setting train as one packed trial, each a finished run of its own; a
    --pack that is not one is refused in one line before anything is made."""
    import subprocess
    import sys

    from agent.sweep.store import SweepStore
    from conftest import subprocess_env

    seeded_sweep(tmp_path)
    command = [sys.executable, "-m", "agent.repeat", "seeded", "--by", "optimizer", "--top",
               "1", "--seeds", "4", "--run"]
    refused = subprocess.run([*command, "--pack", "many"], cwd=tmp_path, env=subprocess_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == ("error: --pack='many': expected auto or an integer from 1 to "
                              "256\n")
    assert len(list((tmp_path / "data" / "sweeps").iterdir())) == 1  # nothing made
    done = subprocess.run([*command, "--pack", "4"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    repeats = [SweepStore(p) for p in (tmp_path / "data" / "sweeps").glob("*/sweep.db")
               if p.parent.name != "seeded"]
    assert len(repeats) == 2
    for store in repeats:
        runs = store.runs()
        assert [r.state for r in runs] == ["finished"] * 4
        assert len({r.pack for r in runs}) == 1 and runs[0].pack is not None
        assert len({r.config["seed"] for r in runs}) == 4


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_repeat_run_pack_auto_measures_each_kind_of_pack_once(tmp_path):
    """`agent.repeat S --by optimizer --top 2 --run --pack auto`: four repeat sweeps, two of
    each optimizer (a kind of pack: the same model and optimizer). What --pack auto measured
    for a kind in the first sweep holds for the next of that kind: two measurements, not
    four (each sweep used to start a new agent that measured again)."""
    import subprocess
    import sys

    from conftest import subprocess_env

    seeded_sweep(tmp_path)
    done = subprocess.run([sys.executable, "-m", "agent.repeat", "seeded", "--by", "optimizer",
                           "--top", "2", "--seeds", "2", "--run", "--pack", "auto"],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = [line for line in (done.stdout + done.stderr).splitlines()
                if "--pack auto for " in line]
    assert len(measured) == 2, measured
    assert sum(" repeat sweep " in line and "running it now" in line
               for line in done.stdout.splitlines()) == 4, done.stdout


def test_the_hint_to_run_the_repeats_keeps_the_options(tmp_path, monkeypatch, capsys):
    """`agent.repeat S --by optimizer --top 1 --seeds 4` (no --run) ends with the command that
    runs the repeats it made: with the same options, else the copied hint would pick the
    best runs per model and leave the repeat sweeps just made unrun."""
    from agent.report.repeat import main

    monkeypatch.chdir(tmp_path)
    seeded_sweep(tmp_path)
    assert main(["seeded", "--by", "optimizer", "--top", "1", "--seeds", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ("Or all now: ./util/with_venv.sh python -m agent.repeat seeded --top 1 --by "
            "optimizer --seeds 4 --run") in lines, lines
    assert main(["seeded", "--pack", "auto"]) == 0
    assert ("Or all now: ./util/with_venv.sh python -m agent.repeat seeded --pack auto --run"
            in capsys.readouterr().out.splitlines())
    assert main(["seeded"]) == 0  # the defaults: the plain command
    assert ("Or all now: ./util/with_venv.sh python -m agent.repeat seeded --run"
            in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("rows", [2, 3, 4])
def test_the_bold_sentence_names_as_many_comparisons_as_it_made(rows):
    """Welch against every other row, Holm over those comparisons: with two rows, one test and
    nothing to correct ('those 1 comparisons' read wrong)."""
    from agent.report.seeds_section import _bold_sentence

    samples = {f"s{k}": [0.5 + k / 100, 0.51 + k / 100, 0.49 + k / 100] for k in range(rows)}
    names = {key: f"setting {key}" for key in samples}
    best = f"s{rows - 1}"
    adjusted = {key: 0.5 for key in samples if key != best}
    text = _bold_sentence(samples, None, adjusted, names, "maximize")
    assert text.startswith(f"Nothing is bold: setting {best} has the best mean")
    if rows == 2:
        assert "against the other row at 0.05" in text and "Holm" not in text
    else:
        assert f"Holm-corrected over those {rows - 1} comparisons" in text


def test_settings_with_seeds_of_their_own_and_a_stopped_pick_are_told_apart(tmp_path,
                                                                            monkeypatch):
    """lr {0.1, 0.01} x seed {0, 1}, of which lr 0.1 kept seed 0 and lr 0.01 seed 1 (the
    others failed): each setting's fresh seeds are the others' sweep seeds, so the text says
    so instead of 'Seeds used: 0-2' beside 'the sweep's seeds (0, 1) are not among them'.
    lr 0.01's sweep run was stopped early by hyperband: its partial value is marked where it
    is shown and kept out of the winner's-curse figure."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 4}, "lr": {"values": [0.1, 0.01]},
                             "seed": {"values": [0, 1]}}}
    store = create_store(tmp_path / "data" / "sweeps" / "own", "own", "own", config)
    stopped_id = None
    for run in claim(store, "host:1", count=4).runs:
        lr, seed = run.config["lr"], run.config["seed"]
        if (lr, seed) in ((0.1, 1), (0.01, 0)):
            store.finish(run.run_id, "host:1", "failed", error="boom")
        elif lr == 0.01:
            stopped_id = run.run_id
            store.finish(run.run_id, "host:1", "stopped",
                         {"val/acc": 0.5, "test/acc": 0.5, "epochs_done": 2})
        else:
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": 0.8, "test/acc": 0.8, "epochs_done": 4})
    study = local_study(store)
    configs = repeat_configs(study, top=1, by="lr", seeds=2)
    by_id = {r.id: r for r in study.runs}
    fresh = {by_id[run_id].config["lr"]: config["parameters"]["seed"]["values"]
             for run_id, config in configs}
    assert fresh == {0.1: [1, 2], 0.01: [0, 2]}
    for n, (_, repeat_config) in enumerate(configs):
        repeat = create_store(tmp_path / "data" / "sweeps" / f"rp{n}", f"rp{n}", "r",
                              repeat_config)
        for run in claim(repeat, "host:1", count=4).runs:
            score = (0.78 if run.config["lr"] == 0.1 else 0.7) + run.config["seed"] / 100
            repeat.finish(run.run_id, "host:1", "finished",
                          {"val/acc": score, "test/acc": score, "epochs_done": 4})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert "Fresh seeds: 0-2 over all settings, a setting's own being those the sweep did " \
           "not give it" in text
    assert "Seeds used" not in text
    row = next(line for line in text.split("### By lr")[1].splitlines()
               if line.startswith("| 0.01 |"))
    assert f"{stopped_id} stopped early at epoch 2 of 4" in row, row
    # only lr 0.1's pick (0.8 against its fresh mean 0.795) is set against its fresh seeds
    assert "scored above its mean over fresh seeds in 1 of 1 setting (val/acc +0.0050" in text
    with open(tmp_path / "report" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # the four runs were claimed together: one packed trial, named in every row
    assert len(rows) == 4 and len({row["pack"] for row in rows}) == 1 and rows[0]["pack"]
    assert {row["pack_size"] for row in rows} == {"4"}


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_nothing_bold_names_the_nearest_row_it_could_not_separate(goal):
    """Holm's adjusted p-values often tie at 1: the row named is the nearest mean among those
    not separated from the best, never a far one that tied, nor one that was separated."""
    from agent.report.seeds_section import _bold_sentence

    sign = 1 if goal == "maximize" else -1
    means = {"best": 0.90, "far": 0.70, "near": 0.89, "apart": 0.895}
    samples = {k: [sign * (m + d) for d in (-0.01, 0.0, 0.01)] for k, m in means.items()}
    adjusted = {"far": 1.0, "near": 1.0, "apart": 0.01}  # 'apart' was separated
    text = _bold_sentence(samples, None, adjusted, {k: k for k in samples}, goal)
    assert text.startswith("Nothing is bold: best has the best mean")
    assert "does not separate it from near (adjusted p = 1)" in text, text


def test_a_repeat_without_by_groups_an_optimizer_study_by_optimizer(tmp_path, monkeypatch):
    """One model, optimizers compared (the seeded sweep): without --by, agent.repeat picks the
    best setting of each optimizer, not the best overall twice; a sweep that varies the model
    is grouped by model, one that varies the batch size (and neither) by batch size; a sweep
    that varies none of them picks the best overall."""
    from agent.report.stats import default_by

    monkeypatch.chdir(tmp_path)
    study = local_study(seeded_sweep(tmp_path))
    assert default_by(study) == "optimizer"
    configs = repeat_configs(study, top=1, by=default_by(study), seeds=2)
    by_id = {r.id: r for r in study.runs}
    assert sorted(by_id[run_id].config["optimizer"] for run_id, _ in configs) == sorted(
        OPTIMIZERS)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "model": {"values": ["dense", "cnn"]},
                             "optimizer": {"values": ["sgd", "adam"]}}}
    both = create_store(tmp_path / "data" / "sweeps" / "both", "both", "both", config)
    single = create_store(tmp_path / "data" / "sweeps" / "one", "one", "one", {
        **config, "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.1, 0.01]}}})
    sizes = create_store(tmp_path / "data" / "sweeps" / "bs", "bs", "bs", {
        **config, "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.1, 0.01]},
                                 "batch_size": {"values": [32, 128]}}})
    for store in (both, single, sizes):
        for k, run in enumerate(claim(store, "host:1", count=4).runs):
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": 0.5 + k / 10, "test/acc": 0.5, "epochs_done": 1})
    assert default_by(local_study(both)) == "model"
    assert default_by(local_study(single)) == "model"
    assert default_by(local_study(sizes)) == "batch_size"  # a batch-size study


def test_the_winners_curse_is_read_by_the_goal_and_an_equal_pick_is_no_luck(tmp_path,
                                                                           monkeypatch):
    """A loss is minimized: picks whose sweep loss lies below their fresh seeds' mean were
    the lucky ones (the report said 'above ... in 0 of 3: not luckier' for a val/loss sweep
    whose picks were all at least as lucky). A pick equal to its fresh mean (31/144, an
    accuracy-like fraction whose float mean differs in its last bit) is neither."""
    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/loss", "goal": "minimize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "lr": {"values": [0.1, 0.01, 0.001]}}}
    sweep_loss = {0.1: 0.20, 0.01: 0.30, 0.001: 31 / 144}
    fresh = {0.1: lambda s: 0.25 + (s - 3) / 100, 0.01: lambda s: 0.39 + (s - 3) / 100,
             0.001: lambda s: [26, 25, 37, 47, 20][s - 1] / 144}
    store = create_store(tmp_path / "data" / "sweeps" / "loss", "loss", "loss", config)
    for run in claim(store, "host:1", count=3).runs:
        loss = sweep_loss[run.config["lr"]]
        store.finish(run.run_id, "host:1", "finished",
                     {"val/loss": loss, "val/acc": 0.9, "test/acc": 0.9, "epochs_done": 1})
    configs = repeat_configs(local_study(store), top=1, by="lr", seeds=5)
    assert len(configs) == 3
    for n, (_, repeat_config) in enumerate(configs):
        repeat = create_store(tmp_path / "data" / "sweeps" / f"rl{n}", f"rl{n}", "r",
                              repeat_config)
        for run in claim(repeat, "host:1", count=5).runs:
            loss = fresh[run.config["lr"]](run.config["seed"])
            repeat.finish(run.run_id, "host:1", "finished",
                          {"val/loss": loss, "val/acc": 0.9, "test/acc": 0.9,
                           "epochs_done": 1})
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert np.mean([fresh[0.001](s) for s in range(1, 6)]) != sweep_loss[0.001]
    mean = np.mean([-0.05, -0.09, 0.0])
    assert ("scored below (better: val/loss is minimized) its mean over fresh seeds in 2 of 3 "
            f"settings, equal to it in 1 (val/loss {mean:+.4f} on average): a sweep's best is "
            "partly lucky seeds") in text, text.split("![values per seed]")[1][:400]
    assert "would bias the mean downward" in text
    assert "One run of one seed: the intervals over seeds are in the section on seeds above" \
        in text  # the best run's note, with repeats to point to


def test_a_setting_without_repeats_names_the_sweeps_seeds_that_diverged(tmp_path,
                                                                        monkeypatch):
    """A setting the sweep gave three seeds, one of which diverged: its row (no repeat sweep
    yet) gives the mean of the other two and names the diverged seed beside them, rather
    than a mean that reads as if every seed trained."""
    monkeypatch.chdir(tmp_path)
    store = seeded_sweep(tmp_path, diverges=lambda c: (c["optimizer"], c["lr"], c["seed"])
                         == ("adam", 0.01, 2))
    study = local_study(store)
    text = document.build_report(study, tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    row = next(line for line in table.splitlines() if line.startswith("| adam | lr=0.01 |"))
    values = [value({"optimizer": "adam", "lr": 0.01, "seed": s}) for s in (0, 1)]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = scipy_stats.t.ppf(0.975, 1) * sd / np.sqrt(2)
    assert f"| {mean:.4f} ± {half:.4f} (n=2) |" in row, row
    (bad,) = [r for r in study.runs if (r.config["optimizer"], r.config["lr"],
                                         r.config["seed"]) == ("adam", 0.01, 2)]
    assert row.endswith(f"; seed 2 diverged ({bad.id}), not in its value |"), row
    sgd = next(line for line in table.splitlines() if line.startswith("| sgd | lr=0.1 |"))
    assert "diverged" not in sgd


def test_a_random_search_that_draws_a_batch_size_per_run_is_not_grouped_by_it(tmp_path,
                                                                              monkeypatch):
    """A random search over lr and a batch size drawn for each run (q_log_uniform_values):
    its batch sizes are no levels of a study, nearly one run each. Grouped by batch size,
    `agent.repeat` made a repeat sweep for (nearly) every run, 5 seeds each: 12 sweeps for
    12 runs, 5 times the sweep's cost; it picks the best 2 overall, as before."""
    from collections import Counter

    from agent.report.repeat import planned

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "random", "run_cap": 12,
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "lr": {"distribution": "log_uniform_values", "min": 0.001,
                                    "max": 0.1},
                             "batch_size": {"distribution": "q_log_uniform_values",
                                            "min": 8, "max": 4096, "q": 1}}}
    store = create_store(tmp_path / "data" / "sweeps" / "drawn", "drawn", "drawn", config)
    while (work := claim(store, "host:1", count=12)).kind == "run":
        for k, run in enumerate(work.runs):
            store.finish(run.run_id, "host:1", "finished",
                         {"val/acc": 0.5 + k / 100, "test/acc": 0.5, "epochs_done": 1})
    study = local_study(store)
    sizes = Counter(r.config["batch_size"] for r in study.runs)
    assert len(study.runs) == 12 and min(sizes.values()) == 1, sizes
    args, _, configs = planned(["drawn"])
    assert args.by == "model" and len(configs) == 2, (args.by, len(configs))


@pytest.mark.parametrize("by, why", [
    ("momentum", "the sweep never varies it (every run has momentum=0.9, one group)"),
    ("model", "the sweep never varies it (every run has model=dense, one group)"),
    ("seed", "each repeat runs its setting over fresh seeds, so seed forms no group")])
def test_by_a_parameter_the_sweep_never_varied_is_refused_and_nothing_is_made(
        tmp_path, monkeypatch, capsys, by, why):
    """`agent.repeat S --by momentum` where the sweep (optimizer x lr x seed) left momentum
    at its default: every run fell in one group, and two repeat sweeps were made of the best
    runs overall, exit 0. `--by seed` did the same, though each repeat draws its own seeds.
    Refused as an unknown name is: one line naming the parameter and the ones the sweep
    varies, exit 2, no repeat sweep written."""
    from agent.report.repeat import main
    from util.errors import exit_on_user_error

    monkeypatch.chdir(tmp_path)
    seeded_sweep(tmp_path)
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(lambda: main(["seeded", "--by", by]))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == "", out
    assert err == f"error: --by={by!r}: {why}; the sweep varies: optimizer, lr\n", err
    assert [p.name for p in (tmp_path / "data" / "sweeps").iterdir()] == ["seeded"]
    assert main(["seeded", "--by", "lr", "--top", "1"]) == 0  # one it varies: made
    assert len(list((tmp_path / "data" / "sweeps").iterdir())) == 3


def test_a_group_whose_every_run_diverged_is_named_not_left_out_silently(tmp_path,
                                                                        monkeypatch, capsys):
    """`agent.repeat` by optimizer where every sgd run diverged: adam's settings are
    repeated, and one line says that sgd has none to repeat; before, sgd was simply missing
    from the repeat sweeps it listed, as if it had been repeated or never swept."""
    from agent.report.repeat import main

    monkeypatch.chdir(tmp_path)
    seeded_sweep(tmp_path, diverges=lambda c: c["optimizer"] == "sgd")
    assert main(["seeded", "--top", "1"]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if "repeat sweep" in line]) == 1, out
    assert err.splitlines() == ["optimizer=sgd: every run with a value of val/acc diverged "
                                "(see the report): no", "  setting of it to repeat"], err


# optimizer -> lr -> (state, epochs done, how good: higher is better by the goal). sgd's runs
# hyperband stopped score better at their epoch than its full-length one: stopped is no best
# while a full-length setting exists. sam's runs were all stopped: the furthest is repeated,
# though another scored better at an earlier epoch.
CUT_SHORT = {"adam": {0.1: ("finished", 3, 5), 0.01: ("finished", 3, 7),
                      0.001: ("finished", 3, 6)},
             "sgd": {0.1: ("finished", 3, 1), 0.01: ("stopped", 1, 8),
                     0.001: ("stopped", 2, 9)},
             "sam": {0.1: ("stopped", 1, 4), 0.01: ("stopped", 2, 2),
                     0.001: ("stopped", 1, 3)}}


@pytest.mark.parametrize("stopper", ["hyperband", "wandb"])
@pytest.mark.parametrize("goal", ["maximize", "minimize"])
@pytest.mark.parametrize("top", [1, 2, 3])
def test_settings_hyperband_stopped_are_repeated_only_where_no_run_went_the_full_length(
        tmp_path, monkeypatch, capsys, goal, top, stopper):
    """A run hyperband stopped scored below the others at its epoch: its setting is not
    among its group's best while the group has a full-length one (passed over, said); in a
    group whose every run was stopped, the furthest one is repeated at its full length and
    the others are passed over. Before, `--top 2` repeated sam's two stopped runs and sgd's
    stopped runs ahead of its full-length one. A run a user stopped in W&B (its summary's
    stop_reason) has a partial value too, and is said to be stopped there, not by hyperband."""
    from agent.metrics import STOPPED_IN_WANDB
    from agent.report.repeat import planned

    metric = "val/acc" if goal == "maximize" else "val/loss"
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": metric, "goal": goal},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 3}, "optimizer": {"values": list(CUT_SHORT)},
                             "lr": {"values": [0.1, 0.01, 0.001]}}}
    monkeypatch.chdir(tmp_path)
    store = create_store(tmp_path / "data" / "sweeps" / "cut", "cut", "cut", config)
    for run in claim(store, "host:1", count=9).runs:
        state, done, good = CUT_SHORT[run.config["optimizer"]][run.config["lr"]]
        score = 0.5 + good / 20 if goal == "maximize" else 1.0 - good / 20
        in_wandb = stopper == "wandb" and run.config["optimizer"] == "sam"
        assert store.finish(run.run_id, "host:1", state,
                            {metric: score, "test/acc": 0.5 + good / 20, "epochs_done": done,
                             **({"stop_reason": STOPPED_IN_WANDB} if in_wandb else {})})
    _, study, configs = planned(["cut", "--by", "optimizer", "--top", str(top)])
    by_id = {r.id: r for r in study.runs}
    picked = sorted((by_id[run_id].config["optimizer"], by_id[run_id].config["lr"])
                    for run_id, _ in configs)

    def best(optimizer: str, lrs: list[float]) -> list[tuple]:
        ranked = sorted(lrs, key=lambda lr: -CUT_SHORT[optimizer][lr][2])
        return [(optimizer, lr) for lr in ranked[:top]]

    assert picked == sorted(best("adam", [0.1, 0.01, 0.001]) + [("sgd", 0.1), ("sam", 0.01)])
    raw = capsys.readouterr().err
    # each note wrapped within 80 columns (a note of up to 190 was one line), read as text
    assert max(map(len, raw.splitlines())) <= 80, raw
    err = " ".join(raw.split())
    assert ("optimizer=sgd: passed over lr=0.001; lr=0.01: stopped early by the sweep's "
            "hyperband (below others at the same epoch), not among its best: not repeated"
            ) in err, err
    stopped = "in W&B (a user's Stop)" if stopper == "wandb" else "by the sweep's hyperband"
    assert (f"optimizer=sam: all 3 of its runs were stopped early {stopped}: "
            "repeating the furthest, lr=0.01 (epoch 2 of 3), at its full length; passed over "
            "lr=0.1; lr=0.001") in err, err
    assert "optimizer=adam" not in err
    # every repeat runs the full length: the sweep's epochs, not where hyperband stopped it
    assert all(c["parameters"]["epochs"] == {"value": 3} for _, c in configs)


def test_more_seeds_asked_later_are_added_beside_the_repeats_made_before(tmp_path, monkeypatch,
                                                                         capsys):
    """`agent.repeat S --seeds 2`, its repeats run, then `--seeds 4`: a repeat sweep of the
    two seeds each setting lacks is made beside the first (it said "exists already, every
    run ended" and ran nothing, so the report stayed at n = 2); the report reads both as one
    (n = 4, each seed once). `--seeds 3` after that makes nothing and says why."""
    from agent.report.repeat import main
    from agent.sweep.store import SweepStore

    monkeypatch.chdir(tmp_path)
    store = seeded_sweep(tmp_path)
    options = ["seeded", "--by", "optimizer", "--top", "1"]
    sweeps = tmp_path / "data" / "sweeps"

    def repeat_stores() -> set[str]:
        return {p.name for p in sweeps.iterdir() if p.name != "seeded"}

    assert main([*options, "--seeds", "2"]) == 0
    first = repeat_stores()
    assert len(first) == 2  # sgd's best setting and adam's
    for sweep_id in first:
        finish_all(SweepStore(sweeps / sweep_id / "sweep.db"))
    capsys.readouterr()

    assert main([*options, "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    added = repeat_stores() - first
    assert len(added) == 2, out
    for sweep_id in added:
        config = SweepStore(sweeps / sweep_id / "sweep.db").sweep().config
        assert config["parameters"]["seed"] == {"values": [5, 6]}  # 3, 4 were the first's
        assert f"repeat sweep {sweep_id} created (seeds 5, 6, beside 2 in the repeat sweeps " \
               "before: 4 in all)" in out, out
        finish_all(SweepStore(sweeps / sweep_id / "sweep.db"))
    assert out.count("exists already, every run ended") == 2, out

    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("###")[0]
    for optimizer, lr in (("sgd", 0.1), ("adam", 0.01)):
        values = [BASE[(optimizer, lr)] + OFFSET[s] for s in (3, 4, 5, 6)]
        half = scipy_stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
        row = next(r for r in table.splitlines() if r.startswith(f"| {optimizer} | lr={lr:g} |"))
        assert f"{np.mean(values):.4f} ± {half:.4f} (n=4)" in row, row

    assert main([*options, "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert repeat_stores() == first | added
    assert out.count("its repeat sweeps hold 4 seeds, more than --seeds 3: the report reads "
                     "them all") == 2, out


def test_the_by_tables_show_the_settings_agent_repeat_picked_over_stopped_ones(
        tmp_path, monkeypatch, capsys):
    """The report's "By optimizer" table and `agent.repeat --by optimizer` name the same
    settings as a group's best: the settings hyperband stopped that agent.repeat passes over
    are passed over in the table too, and said so. Before, the table ranked sgd's two
    stopped settings (partial values 0.95, 0.90) as its best two, and the one agent.repeat
    repeated, sgd at lr 0.1, had no row: its fresh seeds were in no table, nor in the bold
    test; sam's repeated setting likewise. A setting repeated before (a repeat sweep made of
    a stopped setting by older code) keeps its row with its fresh seeds."""
    from agent.report.repeat import main, repeat_configs

    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 3}, "optimizer": {"values": list(CUT_SHORT)},
                             "lr": {"values": [0.1, 0.01, 0.001]}}}
    monkeypatch.chdir(tmp_path)
    sweeps = tmp_path / "data" / "sweeps"
    store = create_store(sweeps / "cut", "cut", "cut", config)
    for run in claim(store, "host:1", count=9).runs:
        state, done, good = CUT_SHORT[run.config["optimizer"]][run.config["lr"]]
        assert store.finish(run.run_id, "host:1", state, {
            "val/acc": 0.5 + good / 20, "test/acc": 0.5 + good / 20, "epochs_done": done})
    assert main(["cut", "--by", "optimizer", "--seeds", "3"]) == 0
    capsys.readouterr()

    def finish_repeats() -> None:
        for path in sweeps.iterdir():
            if path.name == "cut":
                continue
            repeat = SweepStore(path / "sweep.db")
            while (work := claim(repeat, "host:1", count=8)).kind == "run":
                for run in work.runs:
                    score = 0.6 + run.config["lr"] + run.config["seed"] / 100
                    assert repeat.finish(run.run_id, "host:1", "finished", {
                        "val/acc": score, "test/acc": score, "epochs_done": 3})
            repeat.close()

    def rows(text: str) -> set[tuple[str, str]]:
        table = text.split("### By optimizer")[1].split("\n### ")[0]
        return {tuple(cell.strip() for cell in line.split("|")[1:3])
                for line in table.splitlines() if line.startswith("| ")
                and line.split("|")[1].strip() in CUT_SHORT}

    text = document.build_report(local_study(store), tmp_path / "report0").path.read_text()
    table = text.split("### By optimizer")[1].split("\n### ")[0]
    assert "optimizer=sam: lr=0.1 (epoch 1 of 3); lr=0.001 (epoch 1 of 3) (every setting of " \
        "it was stopped: lr=0.01 (epoch 2 of 3) stands for it)." in table, table  # not run yet

    finish_repeats()
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    table = text.split("### By optimizer")[1].split("\n### ")[0]
    # agent.repeat's picks (adam's best two, sgd's one full-length, sam's furthest), each
    # with its fresh seeds, and no other row
    assert rows(text) == {("adam", "lr=0.01"), ("adam", "lr=0.001"), ("sgd", "lr=0.1"),
                          ("sam", "lr=0.01")}, table
    # the winner's curse compares the three picks with a full-length sweep value and says
    # which it left out (it said "in N of 3 settings" with no word of the fourth)
    assert re.search(r"over fresh seeds in \d of 3 settings \(val/acc [+-][0-9.]+ on average\); "
                     r"1 setting whose sweep run early termination stopped is left out, its "
                     r"sweep value being partial: ", text), text
    assert "Settings without a repeat sweep" not in table
    # sam's furthest setting, repeated, ran the full length on its fresh seeds
    assert ("optimizer=sgd: lr=0.001 (epoch 2 of 3); lr=0.01 (epoch 1 of 3); optimizer=sam: "
            "lr=0.1 (epoch 1 of 3); lr=0.001 (epoch 1 of 3).") in table, table

    # a repeat sweep of a setting now passed over (made by older code: sgd at lr 0.001)
    study = local_study(store)
    (old,) = [c for run_id, c in repeat_configs(study, 1, "optimizer", 3)
              if c["parameters"]["optimizer"] == {"values": ["sgd"]}]
    assert old["parameters"]["lr"] == {"values": [0.001]}
    create_store(sweeps / "old", "old", "old", old).close()
    finish_repeats()
    text = document.build_report(local_study(store), tmp_path / "report2").path.read_text()
    table = text.split("### By optimizer")[1].split("\n### ")[0]
    assert ("sgd", "lr=0.001") in rows(text) and ("sgd", "lr=0.1") in rows(text), table
    assert "optimizer=sgd: lr=0.01 (epoch 1 of 3);" in table, table


class StandInWandb:
    """W&B's public API and wandb.sweep as agent.repeat and the report call them, over
    sweeps held here (W&B's server is not reachable where the tests run): `sweeps` maps a
    sweep id to its config and runs (each run a dict: id, state, config, summary)."""

    def __init__(self):
        self.sweeps: dict[str, dict] = {}

    def install(self, monkeypatch) -> None:
        import wandb

        stand_in = self

        class Run:
            def __init__(self, run: dict):
                self.id, self.state, self.config = run["id"], run["state"], run["config"]
                self.summary = type("Summary", (), {"_json_dict": run["summary"]})()

            def scan_history(self):
                return []

        class Sweep:
            def __init__(self, sweep_id: str):
                held = stand_in.sweeps[sweep_id]
                self.id, self.config, self.created_at = sweep_id, held["config"], held["at"]
                self.runs = [Run(run) for run in held["runs"]]

        class Project:
            def sweeps(self):
                return [Sweep(sweep_id) for sweep_id in reversed(stand_in.sweeps)]

        class Api:
            def __init__(self, *args, **kwargs):
                pass

            def sweep(self, path: str):
                return Sweep(path.split("/")[-1])

            def project(self, name: str, entity: str | None = None):
                return Project()

        def sweep(config: dict, entity: str, project: str) -> str:
            return self.add(f"rp{len(self.sweeps)}", config, [])

        monkeypatch.setattr(wandb, "Api", Api)
        monkeypatch.setattr(wandb, "sweep", sweep)

    def add(self, sweep_id: str, config: dict, runs: list[dict]) -> str:
        self.sweeps[sweep_id] = {"config": config, "runs": runs,
                                 "at": f"2026-12-01T10:{len(self.sweeps):02d}:00"}
        return sweep_id

    def finish(self, sweep_id: str) -> None:
        """Every seed of a repeat sweep's grid run and finished, at value()."""
        config = self.sweeps[sweep_id]["config"]
        fixed = {name: spec.get("value", (spec.get("values") or [None])[0])
                 for name, spec in config["parameters"].items() if name != "seed"}
        self.sweeps[sweep_id]["runs"] = [
            {"id": f"{sweep_id}-{seed}", "state": "finished", "config": {**fixed, "seed": seed},
             "summary": {"val/acc": value({**fixed, "seed": seed}), "epochs_done": 1}}
            for seed in config["parameters"]["seed"]["values"]]


def test_more_seeds_asked_later_of_a_wandb_sweep_are_added_and_read_as_one(monkeypatch,
                                                                            capsys):
    """`agent.repeat team/study/sw --seeds 2`, then `--seeds 4`, on a W&B sweep: the second
    makes W&B repeat sweeps of the two seeds each setting lacks (it made sweeps of seeds
    1-4 again, training 1 and 2 twice), and the report reads a run's two W&B repeat sweeps
    as one, n = 4 (it kept one of them, whichever the project listed last)."""
    from agent.report.repeat import main
    from agent.report.seeds_section import repeated_configurations
    from agent.report.study import load_study, repeats_of

    wandb = StandInWandb()
    wandb.install(monkeypatch)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "optimizer": {"values": OPTIMIZERS}, "lr": {"values": LRS},
                             "seed": {"values": [0]}}}
    wandb.add("sw", config, [
        {"id": f"{optimizer}-{lr}", "state": "finished",
         "config": {"dataset": "digits", "model": "dense", "optimizer": optimizer, "lr": lr,
                    "seed": 0},
         "summary": {"val/acc": value({"optimizer": optimizer, "lr": lr, "seed": 0}),
                     "epochs_done": 1}}
        for optimizer in OPTIMIZERS for lr in LRS])
    options = ["team/study/sw", "--by", "optimizer", "--top", "1"]

    assert main([*options, "--seeds", "2"]) == 0
    first = [sweep_id for sweep_id in wandb.sweeps if sweep_id != "sw"]
    assert len(first) == 2
    for sweep_id in first:
        assert wandb.sweeps[sweep_id]["config"]["parameters"]["seed"] == {"values": [1, 2]}
        wandb.finish(sweep_id)
    capsys.readouterr()

    assert main([*options, "--seeds", "4"]) == 0
    out = capsys.readouterr().out
    added = [sweep_id for sweep_id in wandb.sweeps if sweep_id not in first + ["sw"]]
    assert len(added) == 2, out
    for sweep_id in added:
        assert wandb.sweeps[sweep_id]["config"]["parameters"]["seed"] == {"values": [3, 4]}
        wandb.finish(sweep_id)
    assert out.count("exists already, every run ended") == 2, out
    assert out.count("(seeds 3, 4, beside 2 in the repeat sweeps before: 4 in all)") == 2, out

    study = load_study("team/study/sw")
    repeats = repeats_of(study)
    assert sorted(r.sweep_id for r in repeats.values()) == sorted(
        f"{a}, {b}" for a, b in zip(first, added))
    for rep in repeated_configurations(study, repeats).values():
        assert sorted(r.params.seed for r in rep.runs) == [1, 2, 3, 4]

    assert main([*options, "--seeds", "3"]) == 0  # fewer: nothing made, said
    assert len(wandb.sweeps) == 5
    assert capsys.readouterr().out.count("its repeat sweeps hold 4 seeds, more than --seeds "
                                         "3: the report reads them all") == 2


def test_a_setting_whose_best_seed_changes_keeps_its_repeats(tmp_path, monkeypatch, capsys):
    """`agent.repeat` while a sweep over `seed` is still running, then again once it ended:
    the runs of seed 2 ended best of their settings meanwhile, so each setting's best run
    changed. Its repeat sweep so far is still the setting's (before, a second one was made,
    named by the new best run, of overlapping seeds), and the first one's seeds already left
    out seed 2, which the sweep was still to give the setting."""
    from agent.report.repeat import main
    from agent.sweep.store import SweepStore

    monkeypatch.chdir(tmp_path)
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "optimizer": {"values": OPTIMIZERS},
                             "lr": {"values": LRS}, "seed": {"values": SEEDS}}}
    sweeps = tmp_path / "data" / "sweeps"
    store = create_store(sweeps / "seeded", "seeded", "seeded", config)
    work = claim(store, "host:1", count=64)
    late = [run for run in work.runs if run.config["seed"] == 2]  # still running
    for run in work.runs:
        if run not in late:
            score = value(run.config)
            assert store.finish(run.run_id, "host:1", "finished",
                                {"val/acc": score, "test/acc": score, "epochs_done": 1})
    options = ["seeded", "--by", "optimizer", "--top", "1", "--seeds", "2"]
    assert main(options) == 0
    first = {p.name for p in sweeps.iterdir()} - {"seeded"}
    assert len(first) == 2, capsys.readouterr()
    for sweep_id in first:
        repeat = SweepStore(sweeps / sweep_id / "sweep.db")
        assert repeat.sweep().config["parameters"]["seed"] == {"values": [3, 4]}
        finish_all(repeat)
        repeat.close()
    study_before = local_study(store)
    for run in late:
        score = value(run.config)
        assert store.finish(run.run_id, "host:1", "finished",
                            {"val/acc": score, "test/acc": score, "epochs_done": 1})
    study = local_study(store)
    best_before = {r.config["optimizer"]: r.id for r in study_before.scored_runs()[::-1]}
    best_now = {r.config["optimizer"]: r.id for r in study.scored_runs()[::-1]}
    assert best_before != best_now  # the picked runs changed: seed 2 is the best now
    capsys.readouterr()

    assert main(options) == 0
    out = capsys.readouterr().out
    assert {p.name for p in sweeps.iterdir()} - {"seeded"} == first, out
    assert out.count("exists already, every run ended") == 2, out
    assert out.count("of the same setting") == 2, out
    assert "created" not in out, out
    text = document.build_report(local_study(store), tmp_path / "report").path.read_text()
    assert "repeat runs were left out" not in text  # no seed of the sweep's among them


def scored_sweep(tmp_path, optimizers: list[str], lrs: list[float], scores: dict):
    """A grid store of optimizer x lr (dense on digits, 1 epoch) at tmp_path/data/sweeps/
    single whose first 6 runs finished with val/acc = test/acc = scores[(optimizer, lr)]."""
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "optimizer": {"values": optimizers},
                             "lr": {"values": lrs}}}
    store = create_store(tmp_path / "data" / "sweeps" / "single", "single", "single", config)
    for run in claim(store, "host:1", count=6).runs:
        score = scores[(run.config["optimizer"], run.config["lr"])]
        assert store.finish(run.run_id, "host:1", "finished",
                            {"val/acc": score, "test/acc": score, "epochs_done": 1})
    return store


def test_a_groups_rows_go_by_their_mean_over_fresh_seeds(tmp_path, monkeypatch):
    """A "By ..." table's rows of a group go in the order of the number each leads with, the
    mean over fresh seeds (as seeds.png orders them), not of the sweep's one run: sgd at lr
    0.1 scored 0.90 in the sweep and 0.77 over fresh seeds, below lr 0.01 (0.85, then 0.81),
    and was listed first. Means equal but for rounding keep the sweep's order, as the bold
    test reads ties: adam at lr 0.01 (0.7, 0.8, 0.9: 0.7999999999999999) before lr 0.001
    (0.8 three times: 0.8000000000000002), which a plain sort would put first. seeds.png draws
    the rows in the order of the first table, whose heading says so; it drew them by their
    means alone, the groups interleaved, under "as seeds.png orders them"."""
    sweep = {("sgd", 0.1): 0.90, ("sgd", 0.01): 0.85, ("sgd", 0.001): 0.50,
             ("adam", 0.1): 0.60, ("adam", 0.01): 0.80, ("adam", 0.001): 0.75}
    fresh = {("sgd", 0.1): [0.76, 0.77, 0.78], ("sgd", 0.01): [0.80, 0.81, 0.82],
             ("adam", 0.01): [0.7, 0.8, 0.9], ("adam", 0.001): [0.8, 0.8, 0.8]}
    monkeypatch.chdir(tmp_path)
    store = scored_sweep(tmp_path, OPTIMIZERS, [0.1, 0.01, 0.001], sweep)
    configs = repeat_configs(local_study(store), top=2, by="optimizer", seeds=3)
    for n, (_, repeat_config) in enumerate(configs):
        repeat = create_store(tmp_path / "data" / "sweeps" / f"rep{n}", f"rep{n}", "r",
                              repeat_config)
        seeds = sorted(repeat_config["parameters"]["seed"]["values"])
        for run in claim(repeat, "host:1", count=3).runs:
            score = fresh[(run.config["optimizer"], run.config["lr"])][
                seeds.index(run.config["seed"])]
            assert repeat.finish(run.run_id, "host:1", "finished",
                                 {"val/acc": score, "test/acc": score, "epochs_done": 1})
    report = document.build_report(local_study(store), tmp_path / "report")
    text = report.path.read_text()
    table = text.split("### By optimizer")[1].split("\n### ")[0]
    rows = [tuple(cell.strip() for cell in line.split("|")[1:4])
            for line in table.splitlines() if line.split("|")[1:2] in (
                [" sgd "], [" adam "])]
    assert [row[:2] for row in rows] == [("sgd", "lr=0.01"), ("sgd", "lr=0.1"),
                                         ("adam", "lr=0.01"), ("adam", "lr=0.001")], table
    assert [row[2].split(" ± ")[0] for row in rows] == ["0.8100", "0.7700", "0.8000", "0.8000"]
    # the sentence under the table names the first row's setting as the best mean
    assert "Nothing is bold: optimizer=sgd, lr=0.01 has the best mean" in table, table
    # seeds.png: the rows of the table that says "as seeds.png orders them", a group's
    # together (it drew them by their means alone: sgd 0.01, adam 0.01, adam 0.001, sgd 0.1)
    assert "as seeds.png orders them" in table, table
    labels = [label for ax in report.figures["seeds.png"].axes for label in ax.yticks
              if "optimizer=" in label]
    assert labels == ["optimizer=sgd lr=0.01", "optimizer=sgd lr=0.1",
                      "optimizer=adam lr=0.01", "optimizer=adam lr=0.001"], labels
    # the By lr table's rows go otherwise (lr 0.01's sgd and adam first): it says whose
    # order the figure keeps rather than claiming its own
    by_lr = text.split("### By lr")[1].split("\n### ")[0]
    assert "as seeds.png orders them" not in by_lr, by_lr
    assert "seeds.png keeps the order of the table by optimizer" in by_lr, by_lr


def test_the_groups_go_by_their_best_mean_over_fresh_seeds_and_the_heading_names_the_repeats(
        tmp_path, monkeypatch):
    """`agent.repeat --top 1 --seeds 3`, one row a group: the "By optimizer" rows went in the
    order of the sweep's one run (sgd 0.90, adam 0.85, rmsprop 0.80) while seeds.png put adam
    (0.81 over fresh seeds) first; the rows go by the fresh mean as seeds.png orders them,
    and the heading says what agent.repeat ran (it said "The best 2 settings of each
    optimizer" with their repeats, of which it had run one)."""
    sweep = {("sgd", 0.1): 0.90, ("sgd", 0.01): 0.50, ("adam", 0.1): 0.85,
             ("adam", 0.01): 0.60, ("rmsprop", 0.1): 0.80, ("rmsprop", 0.01): 0.55}
    fresh = {"sgd": [0.70, 0.71, 0.72], "adam": [0.80, 0.81, 0.82],
             "rmsprop": [0.75, 0.76, 0.77]}
    monkeypatch.chdir(tmp_path)
    store = scored_sweep(tmp_path, ["sgd", "adam", "rmsprop"], [0.1, 0.01], sweep)
    configs = repeat_configs(local_study(store), top=1, by="optimizer", seeds=3)
    assert len(configs) == 3
    for n, (_, repeat_config) in enumerate(configs):
        repeat = create_store(tmp_path / "data" / "sweeps" / f"rep{n}", f"rep{n}", "r",
                              repeat_config)
        seeds = sorted(repeat_config["parameters"]["seed"]["values"])
        for run in claim(repeat, "host:1", count=3).runs:
            score = fresh[run.config["optimizer"]][seeds.index(run.config["seed"])]
            assert repeat.finish(run.run_id, "host:1", "finished",
                                 {"val/acc": score, "test/acc": score, "epochs_done": 1})
    report = document.build_report(local_study(store), tmp_path / "report")
    table = report.path.read_text().split("### By optimizer")[1].split("\n### ")[0]
    heading = table.strip().splitlines()[0]
    assert heading == (
        "The best 2 settings of each optimizer by val/acc in the sweep; `python -m "
        "agent.repeat` ran the best setting of each optimizer again on 3 fresh seeds: the "
        "first table, its rows in the order of their mean over those seeds (a group's best "
        "mean first), as seeds.png orders them; the settings not repeated are in the table "
        "after it."), heading
    first, second = [[line.split("|")[1:4] for line in part.splitlines()
                      if line.startswith("| ") and "---" not in line][1:]
                     for part in table.split("\n\n") if part.startswith("| ")][:2]
    assert [(row[0].strip(), row[2].split(" ± ")[0].strip("* ")) for row in first] == [
        ("adam", "0.8100"), ("rmsprop", "0.7600"), ("sgd", "0.7100")], table
    assert [row[0].strip() for row in second] == ["sgd", "adam", "rmsprop"], table
    # seeds.png: the same settings in the same order, best mean first
    drawn = report.figures["seeds.png"]
    labels = [text for ax in drawn.axes for text in ax.yticks if "optimizer=" in text]
    assert [label.split("optimizer=")[1].split()[0].rstrip(",") for label in labels] == [
        "adam", "rmsprop", "sgd"], labels


@pytest.mark.parametrize("varied, picks", [
    ({"lr": [0.1, 0.01, 0.001]}, "the best 2 overall"),
    ({"model": ["dense", "cnn"], "lr": [0.1, 0.01]}, "the best 2 per model"),
    ({"optimizer": ["sgd", "adam"], "lr": [0.1, 0.01]}, "the best 2 per optimizer")])
def test_the_repeat_hint_says_what_agent_repeat_picks_by_what_the_sweep_varies(
        tmp_path, monkeypatch, varied, picks):
    """A sweep of one model over lr read "(the best 2 per model, 5 seeds each)", as if each
    of several models got two: agent.repeat picks the best 2 runs overall there. The hint
    names a group only where the sweep varies it, and says what agent.repeat does: its
    picks without --by are the 2 best runs of each group (of the sweep, for "overall")."""
    from agent.report.stats import default_by

    monkeypatch.chdir(tmp_path)
    parameters = {"dataset": {"value": "digits"}, "hidden": {"value": 16},
                  "epochs": {"value": 1}, "sinks": {"value": ["console"]},
                  **{name: {"values": values} for name, values in varied.items()}}
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"}, "parameters": parameters}
    for searched in (False, True):
        name = f"s{int(searched)}"
        if searched:
            parameters["seed"] = {"values": [0, 1]}
        store = create_store(tmp_path / "data" / "sweeps" / name, name, name, config)
        while (work := claim(store, "host:1", count=64)).kind == "run":
            for k, run in enumerate(work.runs):
                store.finish(run.run_id, "host:1", "finished",
                             {"val/acc": 0.5 + k / 100, "test/acc": 0.5, "epochs_done": 1})
        study = local_study(store)
        text = document.build_report(study, tmp_path / name).path.read_text()
        expected = (f"runs {picks.replace('best 2', 'best 2 settings')} on 5 fresh seeds "
                    "each." if searched else f"({picks}, 5 seeds each).")
        assert expected in text, text.split("## Best configurations over seeds")[1][:800]
        by = default_by(study)
        groups = {r.config.get(by) for r in study.runs} if "overall" not in picks else {None}
        configs = repeat_configs(study, top=2, by=by, seeds=5)
        assert len(configs) == 2 * len(groups)  # what the hint says agent.repeat runs

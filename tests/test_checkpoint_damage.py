"""A damaged checkpoint never fails a run for good: the run resumes from the checkpoint before
it, or from scratch, and says so; the results are those of a run never interrupted. Every kind
of damage a file can have: cut short, empty, another file, other keys, another model's, a
directory, a pickle that would run code."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent.trial.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME
from agent.trial.loop import TrialHooks, train, train_pack
from conftest import subprocess_env

QUICK = {"dataset": "digits", "sinks": [], "histograms": False, "num_threads": 1,
         "model": "dense", "hidden": 32, "batch_size": 64, "optimizer": "adam", "lr": 3e-3,
         "schedule": "constant"}  # a run of 2 epochs is then the first 2 of a run of 3


def config(workdir: Path, **overrides) -> dict:
    return {**QUICK, "data_dir": str(workdir / "data"), "log_dir": str(workdir / "logs"),
            "run_dir": str(workdir / "runs"), **overrides}


class Exploit:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch exploited",))


def _other_model(path: Path) -> None:
    other = path.parent.parent / "other"
    train(config(path.parent.parent.parent, run_id="other", hidden=16, epochs=1))
    shutil.copy(other / CHECKPOINT_NAME, path)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGE = {
    "cut short": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "not a torch file": lambda path: path.write_text("checkpoint\n"),
    "other keys": lambda path: torch.save({"weights": torch.zeros(3)}, path),
    "progress beyond the run": lambda path: torch.save(
        {**torch.load(path, weights_only=True), "progress": {"epoch": 99}}, path),
    "another model's": _other_model,
    "a directory": _directory,
    "code in a pickle": lambda path: path.write_bytes(pickle.dumps({"model": Exploit()})),
}
COMPARED = ("train/loss", "val/acc", "test/acc", "test/loss", "global_step", "epochs_done")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A run of 3 epochs never interrupted: what every resumed run must equal."""
    workdir = tmp_path_factory.mktemp("straight")
    return train(config(workdir, run_id="straight", epochs=3))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_resumes_from_the_one_before_and_says_so(workdir, capfd, damage,
                                                                      straight):
    train(config(workdir, run_id="r1", epochs=2))  # checkpoints of epochs 2 and 1
    path = workdir / "runs" / "r1" / CHECKPOINT_NAME
    DAMAGE[damage](path)
    capfd.readouterr()
    resumed = train(config(workdir, run_id="r1", epochs=3))
    (line,) = [line for line in capfd.readouterr().err.splitlines() if line.startswith("run r1")]
    assert str(path) in line and line.endswith("resuming from epoch 1"), line
    assert {k: resumed[k] for k in COMPARED} == {k: straight[k] for k in COMPARED}
    assert resumed["state"] == "finished"
    assert not (workdir / "exploited").exists()
    saved = torch.load(path, weights_only=True)  # the new checkpoint replaced the damaged one
    assert saved["progress"]["epoch"] == 3


@pytest.mark.timeout(180)
@pytest.mark.parametrize("damage", ["cut short", "empty", "a directory"])
def test_with_both_checkpoints_damaged_the_run_starts_from_scratch_and_says_so(
        workdir, capfd, damage, straight):
    train(config(workdir, run_id="r2", epochs=2))
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        DAMAGE[damage](workdir / "runs" / "r2" / name)
    capfd.readouterr()
    resumed = train(config(workdir, run_id="r2", epochs=3))
    (line,) = [line for line in capfd.readouterr().err.splitlines() if line.startswith("run r2")]
    assert line.count("is damaged") == 2 and line.endswith("starting from scratch"), line
    assert {k: resumed[k] for k in COMPARED} == {k: straight[k] for k in COMPARED}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("first", [1, 2])
def test_a_member_left_behind_by_a_damaged_checkpoint_goes_back_and_its_pack_resumes(
        workdir, capfd, first):
    # m1's newest checkpoint is cut short: m0 resumes at its own epoch, and m1, which has no
    # checkpoint of it, ends preempted (its files untouched) for a later claim to resume from
    # what it has. Before, the pack resumed together at m1's epoch: m0 gave up an epoch, or,
    # where m1 had only the one checkpoint (first=1), both started again from scratch.
    configs = [config(workdir, run_id=f"m{k}", lr=lr, epochs=first) for k, lr in
               enumerate((1e-3, 3e-3))]
    train_pack(configs)
    DAMAGE["cut short"](workdir / "runs" / "m1" / CHECKPOINT_NAME)
    damaged = (workdir / "runs" / "m1" / CHECKPOINT_NAME).read_bytes()
    capfd.readouterr()
    ended = []
    summaries = train_pack([{**c, "epochs": 3} for c in configs],
                           [TrialHooks(ended=ended.append) for _ in configs])
    said = capfd.readouterr().err
    assert ended[0] is summaries[1]  # told before its pack-mate trains
    assert summaries[1]["state"] == "preempted" and summaries[1]["epochs_done"] == first - 1
    assert (workdir / "runs" / "m1" / CHECKPOINT_NAME).read_bytes() == damaged
    has = f"its checkpoint of epoch {first - 1}" if first > 1 else "scratch"
    line = (f"run m1: {workdir / 'runs' / 'm1' / CHECKPOINT_NAME} is damaged")
    assert line in said and f"the pack resumes at epoch {first}, which it has no checkpoint " \
        f"of; it goes back to the sweep, to resume from {has} in a later claim" in said, said
    assert "run m0" not in said  # resumed from its newest: nothing to say
    again = train({**configs[1], "epochs": 3})  # the later claim: m1 from what it has
    straight = train_pack([config(workdir / "straight", run_id=f"s{k}", lr=c["lr"], epochs=3)
                           for k, c in enumerate(configs)])
    for summary, reference in zip((summaries[0], again), straight):  # packs of other sizes
        assert {k: summary[k] for k in COMPARED} == pytest.approx(  # round in another order
            {k: reference[k] for k in COMPARED}, rel=1e-4)


@pytest.mark.timeout(180)
def test_a_member_sent_back_starts_no_sink_and_keeps_its_tensorboard_epochs(workdir, capfd):
    # m1's newest checkpoint is cut short and the pack sends it back before it trains: its
    # sinks must not start. Before, they did: the console printed its header (as a run
    # started over) and a 'preempted' table, and TensorBoard's start of it, from scratch
    # with earlier files, purged past step 0: the epoch its later claim resumes after was
    # gone from TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    configs = [config(workdir, run_id=f"m{k}", lr=lr, epochs=2,
                      sinks=["console", "tensorboard"]) for k, lr in enumerate((1e-3, 3e-3))]
    train_pack(configs)
    DAMAGE["cut short"](workdir / "runs" / "m1" / CHECKPOINT_NAME)
    capfd.readouterr()
    summaries = train_pack([{**c, "epochs": 3} for c in configs])
    assert [s["state"] for s in summaries] == ["finished", "preempted"]
    out = capfd.readouterr().out
    assert "run m0" in out and "m1" not in out, out
    train({**configs[1], "epochs": 3})  # the later claim: m1 from its epoch 1
    straight = config(workdir / "straight", run_id="s1", lr=3e-3, epochs=3,
                      sinks=["tensorboard"])
    train(straight)

    def val_acc(log_dir: Path) -> list[tuple[int, float]]:
        events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
        return [(e.step, e.value) for e in events.Scalars("val/acc")]

    resumed = val_acc(workdir / "logs" / "default" / "m1")
    reference = val_acc(workdir / "straight" / "logs" / "default" / "s1")
    assert [step for step, _ in resumed] == [step for step, _ in reference], resumed
    assert [v for _, v in resumed] == pytest.approx([v for _, v in reference], rel=1e-4)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_an_agent_resumes_a_preempted_run_whose_checkpoint_was_damaged(workdir):
    from test_local_sweeps import LONG_RUN, make_sweep, preempt_after, start_agent

    store = make_sweep(workdir, "damaged", {**LONG_RUN, "epochs": {"value": 4},
                                            "lr": {"value": 0.01}})
    run = preempt_after(workdir, store, 2)
    (workdir / "data" / "runs" / run.id / CHECKPOINT_NAME).write_bytes(b"")
    second = start_agent(workdir, store)
    assert second.wait(timeout=200) == 0
    err = second.stderr.read()
    assert f"run {run.id}: " in err and "is damaged" in err and "Traceback" not in err
    (resumed,) = store.runs()
    assert resumed.state == "finished" and resumed.summary["epochs_done"] == 4
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_trainer_command_resumes_past_a_damaged_checkpoint(workdir):
    args = [f"--{k}={v}" for k, v in config(workdir, run_id="cli", epochs=1).items()
            if k != "sinks"] + ["--sinks=[]"]
    command = [sys.executable, "-m", "agent.train", *args]
    assert subprocess.run(command, cwd=workdir, env=subprocess_env(), timeout=150).returncode == 0
    (workdir / "runs" / "cli" / CHECKPOINT_NAME).write_text("not a checkpoint")
    again = subprocess.run([*command, "--epochs=2"], cwd=workdir, env=subprocess_env(),
                           capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr
    assert "is damaged" in again.stderr and "starting from scratch" in again.stderr


@pytest.mark.parametrize("changed", [{"lr": 0.5}, {"optimizer": "sgd"}, {"seed": 3},
                                     {"dropout": 0.3}])
def test_a_run_started_again_with_other_values_is_refused_and_its_checkpoints_kept(
        workdir, changed):
    """The same run id with other values would train on from the checkpoint under a config
    its epochs so far did not have: refused in one line before anything is written, both
    checkpoints as they were. More epochs (training a run on) is allowed."""
    from util.errors import UserError

    train(config(workdir, run_id="r1", epochs=2))
    run_dir = workdir / "runs" / "r1"
    before = {name: (run_dir / name).read_bytes() for name in (CHECKPOINT_NAME, PREVIOUS_NAME)}
    with pytest.raises(UserError) as refused:
        train(config(workdir, run_id="r1", epochs=2, **changed))
    message = str(refused.value)
    (name, value), = changed.items()
    assert "\n" not in message and message.startswith("run r1: its checkpoint (epoch 2)")
    assert f"(now {value!r})" in message and name in message
    assert {n: (run_dir / n).read_bytes() for n in before} == before
    summary = train(config(workdir, run_id="r1", epochs=3))  # trained on, from epoch 2
    assert summary["epochs_done"] == 3


def test_a_run_started_again_with_fewer_epochs_than_it_has_is_refused_and_its_checkpoints_kept(
        workdir):
    """The same run id with fewer epochs than its checkpoints hold: both sound checkpoints
    were called damaged ('its progress says epoch 3, not one of 1..2') and the run started
    from scratch, writing over them. Now refused in one line, exit code 2, files untouched."""
    train(config(workdir, run_id="r1", epochs=3))
    run_dir = workdir / "runs" / "r1"
    before = {name: (run_dir / name).read_bytes() for name in (CHECKPOINT_NAME, PREVIOUS_NAME)}
    arguments = [f"--{key}={value}" for key, value in config(workdir, run_id="r1").items()]
    again = subprocess.run([sys.executable, "-m", "agent.train", *arguments, "--epochs=2"],
                           cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                           timeout=150)
    assert again.returncode == 2, again.stderr
    assert again.stderr.strip() == ("error: run r1: its checkpoint is of epoch 3, past "
                                    "epochs=2: resume it with epochs=3 or more, or start a "
                                    "new run (another --run_id)"), again.stderr
    assert {n: (run_dir / n).read_bytes() for n in before} == before
    assert train(config(workdir, run_id="r1", epochs=4))["epochs_done"] == 4  # trained on


@pytest.mark.timeout(180)
def test_a_run_started_again_after_its_last_checkpoint_ends_finished_at_once(workdir, straight):
    """A run whose last epoch's checkpoint stands (it ended preempted after it: a full disk
    as it wrote its summary, a signal as it tested) is tested and summarised when started
    again, with its results; before, its summary had no state (a KeyError) and an agent
    left its run `running`."""
    (workdir / "runs").mkdir(exist_ok=True)
    train(config(workdir, run_id="r1", epochs=3))
    (workdir / "runs" / "r1" / "summary.json").unlink()
    again = train(config(workdir, run_id="r1", epochs=3))
    assert again["state"] == "finished"
    assert {key: again[key] for key in COMPARED} == {key: straight[key] for key in COMPARED}
    assert (workdir / "runs" / "r1" / "summary.json").exists()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_preempted_run_whose_folder_was_deleted_says_so_and_starts_over(workdir):
    """data/runs/<id>/ deleted while the run trains, then SIGTERM: the agent said the run's
    checkpoint was kept, and the next agent started it over at epoch 1, silently, the store's
    rows of the first start left where the second stopped short of them. Now the preemption
    says no checkpoint is kept, the resume says the checkpoint of the store's epoch is missing
    and clears the store's epochs (store.forget_epochs), and a third agent finishes it."""
    import signal

    from test_local_sweeps import LONG_RUN, make_sweep, start_agent, wait_for

    store = make_sweep(workdir, "deleted", {**LONG_RUN, "epochs": {"value": 3},
                                            "batch_size": {"value": 4},
                                            "lr": {"value": 0.01}})
    first = start_agent(workdir, store)
    wait_for(lambda: any(r.epoch >= 2 for r in store.runs()), 200, "2 epochs")
    (run,) = store.runs()
    run_dir = workdir / "data" / "runs" / run.id
    shutil.rmtree(run_dir)  # early in epoch 3 (seconds long): no checkpoint is written again
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    missing = f"({run_dir.relative_to(workdir) / CHECKPOINT_NAME} is missing)"
    assert f"run {run.id} preempted after epoch 2, but no checkpoint of it is kept {missing}: " \
           "the next agent starts it over" in first.stderr.read()
    assert store.run(run.id).state == "preempted" and not run_dir.exists()

    second = start_agent(workdir, store)  # preempted in the first epoch of its start over
    wait_for(lambda: store.run(run.id).epoch == 1, 200, "the first epoch of the start over")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    assert f"run {run.id} (preempted after epoch 2) starts over from scratch: its checkpoint " \
           f"of epoch 2 is missing ({run_dir.relative_to(workdir) / CHECKPOINT_NAME})" \
           in second.stderr.read()
    again = store.run(run.id)
    assert again.state == "preempted" and [h["epoch"] for h in again.history] == [1]

    third = start_agent(workdir, store)
    assert third.wait(timeout=200) == 0
    assert "starts over" not in third.stderr.read()  # its new checkpoint is there
    done = store.run(run.id)
    assert done.state == "finished" and [h["epoch"] for h in done.history] == [1, 2, 3]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_trainer_command_preempted_after_its_folder_was_deleted_says_it_starts_over(
        workdir):
    """`python -m agent.train` (as `wandb agent` runs it) whose run folder is deleted while
    it trains, then SIGTERM: it said "run it again with the same --run_id to resume" with
    nothing left to resume from; it now says that no checkpoint is kept and why, and that
    running it again starts it over. With checkpoint: false, likewise."""
    import signal
    import time

    args = [f"--{k}={v}" for k, v in config(workdir, run_id="cut", epochs=3, hidden=256,
                                             batch_size=2, optimizer="sgd", lr=0.01).items()
            if k != "sinks"]
    run_dir = workdir / "runs" / "cut"

    def started(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "agent.train", *args, *extra],
                                cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    trainer = started("--sinks=[]")
    deadline = time.time() + 200
    while not ((run_dir / PREVIOUS_NAME).exists() and (run_dir / CHECKPOINT_NAME).exists()
               and not (run_dir / f"{CHECKPOINT_NAME}.tmp").exists()):  # epoch 2's is saved
        assert trainer.poll() is None and time.time() < deadline, trainer.stderr.read()
        time.sleep(0.01)
    trainer.send_signal(signal.SIGSTOP)  # in epoch 3 (about a second), until SIGTERM is sent
    shutil.rmtree(run_dir)
    trainer.send_signal(signal.SIGTERM)
    trainer.send_signal(signal.SIGCONT)
    _, stderr = trainer.communicate(timeout=60)
    assert trainer.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"preempted: run cut interrupted in epoch 3, but no checkpoint of it is kept "
        f"({run_dir / CHECKPOINT_NAME} is missing): run again with the same --run_id, it "
        "starts over from scratch"), stderr
    assert not run_dir.exists()

    trainer = started("--sinks=console", "--checkpoint=false")  # nothing kept by design
    assert trainer.stdout.readline().startswith("run cut ")  # its header: it trains now
    trainer.send_signal(signal.SIGTERM)
    _, stderr = trainer.communicate(timeout=60)
    assert trainer.returncode == 143, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("preempted: run cut interrupted in epoch ") and line.endswith(
        ": run again with the same --run_id, it starts over from scratch"), stderr


@pytest.mark.timeout(120)
def test_a_repeat_left_with_its_checkpoint_before_the_newest_resumes_from_its_own(workdir):
    """What the agent checks before it resumes a crashed run's repeat (continue_crashed): the
    repeat's own checkpoint before the newest (the newest deleted) is its own to resume from,
    as for a preempted run; it was overwritten by the crashed run's older files."""
    from agent.trial.member import continue_crashed

    train(config(workdir, run_id="crashed", epochs=1))
    train(config(workdir, run_id="rep", epochs=2))
    own = workdir / "runs" / "rep"
    (own / CHECKPOINT_NAME).unlink()
    before = (own / PREVIOUS_NAME).read_bytes()
    assert continue_crashed(config(workdir, run_id="rep", epochs=3), "crashed", 2, 1) == (
        "run rep (repeating crashed run crashed) resumes from its own checkpoint", "own")
    assert (own / PREVIOUS_NAME).read_bytes() == before and not (own / CHECKPOINT_NAME).exists()


@pytest.mark.timeout(120)
def test_a_preempted_run_with_nothing_to_resume_from_is_named_before_it_starts_over(workdir):
    """What the agent checks before it resumes a preempted run (member.resume_preempted): a
    checkpoint there, or the one before it alone, resumes; none, or checkpoint: false, is a
    line saying that the run starts over."""
    from agent.trial.member import resume_preempted

    train(config(workdir, run_id="r1", epochs=2))
    run_dir = workdir / "runs" / "r1"
    assert resume_preempted(config(workdir, run_id="r1", epochs=3), 2) is None
    (run_dir / CHECKPOINT_NAME).unlink()
    assert resume_preempted(config(workdir, run_id="r1", epochs=3), 2) is None  # epoch 1's
    (run_dir / PREVIOUS_NAME).unlink()
    assert resume_preempted(config(workdir, run_id="r1", epochs=3), 2) == (
        f"run r1 (preempted after epoch 2) starts over from scratch: its checkpoint of epoch "
        f"2 is missing ({run_dir / CHECKPOINT_NAME})")
    assert resume_preempted(config(workdir, run_id="r2", epochs=3, checkpoint=False), 2) == (
        "run r2 (preempted after epoch 2) starts over from scratch: it keeps no checkpoint "
        "(checkpoint: false)")

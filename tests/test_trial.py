"""The trial runner end to end on real data: learning, every optimizer, determinism,
divergence, checkpoint and resume, and what lands in TensorBoard."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agent.trial.loop import Preempted, TrialHooks, train
from agent.trial.member import Progress
from conftest import subprocess_env

QUICK = {"dataset": "digits", "sinks": [], "histograms": False, "num_threads": 2}


def run(workdir, **overrides):
    return train({**QUICK, "data_dir": str(workdir / "data"), "log_dir": str(workdir / "logs"),
                  "run_dir": str(workdir / "runs"), **overrides})


@pytest.mark.timeout(120)
def test_cnn_learns_digits_to_95_percent(workdir):
    summary = run(workdir, model="cnn", channels=[32, 64, 128], epochs=4, batch_size=64,
                  optimizer="sgd", lr=0.05)
    assert summary["test/acc"] >= 0.95, summary
    assert summary["state"] == "finished" and summary["diverged"] is False
    assert summary["val/best_acc"] >= 0.9 and 1 <= summary["val/best_epoch"] <= 4
    assert summary["params"] == 3 * 3 * (1 * 32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128) \
        + 128 * 10 + 10  # conv weights (no bias under batch norm), bn affine, head
    class_acc = [summary[f"test/class_acc/{d}"] for d in range(10)]
    assert min(class_acc) > 0.8
    assert (Path(workdir) / "runs" / summary["run_id"] / "confusion.json").exists()


LEARNING_RATES = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3, "sam": 0.05}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("optimizer", sorted(LEARNING_RATES))
def test_every_optimizer_lowers_the_loss(workdir, optimizer):
    summary = run(workdir, model="dense", hidden=64, optimizer=optimizer,
                  lr=LEARNING_RATES[optimizer], epochs=2, batch_size=32)
    chance = math.log(10)  # cross-entropy of a uniform guess over 10 classes
    assert summary["train/loss"] < 0.5 * chance and summary["val/loss"] < 0.5 * chance


@pytest.mark.timeout(120)
def test_sam_with_batch_norm_and_adaptive_variant_trains(workdir):
    summary = run(workdir, model="cnn", channels=[16, 32], optimizer="sam", sam_base="adam",
                  lr=2e-3, adaptive=True, rho=0.5, epochs=2, batch_size=64)
    assert summary["test/acc"] > 0.8


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["dense", "skip_mlp", "cnn"])
def test_same_seed_and_config_give_identical_metrics(workdir, model):
    config = dict(model=model, hidden=32, widths=[32, 16], channels=[8, 16], dropout=0.1,
                  augment=True, epochs=2, batch_size=64, seed=7)
    first, second = run(workdir, **config), run(workdir, **config)
    for key in ("train/loss", "val/loss", "val/acc", "test/acc", "test/loss"):
        assert first[key] == second[key], key
    third = run(workdir, **{**config, "seed": 8})
    assert third["train/loss"] != first["train/loss"]


@pytest.mark.timeout(120)
def test_non_finite_loss_stops_at_once_and_is_a_result(workdir):
    summary = run(workdir, model="dense", optimizer="sgd", lr=100, momentum=0.0, epochs=5,
                  batch_size=32)
    assert summary["diverged"] is True and summary["state"] == "diverged"
    assert summary["epochs_done"] < 5 and "test/acc" not in summary
    for value in summary.values():
        if isinstance(value, float):
            assert math.isfinite(value)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_diverged_run_exits_0_from_the_command_line(workdir):
    result = subprocess.run(
        [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
         "--lr=100", "--momentum=0", "--epochs=2", "--sinks=[console]"],
        cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert "diverged" in result.stdout


@pytest.mark.e2e
@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_preempts_a_command_line_trial_and_a_ctrl_c_ends_it_as_interrupted(workdir,
                                                                                    signum):
    """`python -m agent.train ...` stopped mid-run by a Ctrl-C (SIGINT to its group, as a
    terminal sends it) or SIGTERM: the run is preempted at its next step, its checkpoint
    kept, with the line saying how to resume; then a Ctrl-C ends the command killed by
    SIGINT (a shell reports 130, `train && next` goes no further), SIGTERM with 143. A
    Ctrl-C raised KeyboardInterrupt mid-step: the run failed, with a traceback. With the
    W&B sink (offline), whose service wraps sys.excepthook, as by default."""
    run_dir = workdir / "runs" / "cut"
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
         "--hidden=256", "--batch_size=8", "--epochs=300", "--run_id=cut",
         "--sinks=[wandb]", f"--run_dir={workdir / 'runs'}", f"--data_dir={workdir / 'data'}"],
        cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").is_file():  # into its epochs
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    os.killpg(process.pid, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGINT if signum == signal.SIGINT else 143), err
    assert "Traceback" not in err, err[-2000:]
    lines = err.splitlines()
    said = lines[-2:] if signum == signal.SIGINT else lines[-1:]
    assert said[0].startswith("preempted: run cut interrupted in epoch "), err[-2000:]
    assert said[1:] == (["interrupted"] if signum == signal.SIGINT else []), err[-2000:]
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 1 <= saved["progress"]["epoch"] < 300


def _handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (/proc's SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & 1 << (signum - 1))


CTRL_C_NOTE = "Ctrl-C: the run stops at its next step; Ctrl-C again ends it at once"


@pytest.mark.e2e
@pytest.mark.timeout(180)
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_start_up_stops_at_the_first_step_and_a_second_ends_it_at_once(
        workdir, presses):
    """Ctrl-C (SIGINT to its group, as a terminal sends it) once `python -m agent.train` has
    its handlers in (SIGTERM caught) but has not trained a step: the first asks the run to
    stop, which it does at its first step (preempted, nothing to resume) and ends killed by
    SIGINT; a second, while the data set still loads, ends it at once, killed by SIGINT,
    with nothing more said. The set's cache is a FIFO no one writes to, so that its load
    never ends: every Ctrl-C after the first was swallowed, the process hung there."""
    if presses == 2:
        (workdir / "data" / "cache").mkdir(parents=True)
        os.mkfifo(workdir / "data" / "cache" / "digits.pt")
    log = workdir / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
             "--batch_size=4", "--epochs=5", "--run_id=cut", "--sinks=[console]",
             f"--run_dir={workdir / 'runs'}", f"--data_dir={workdir / 'data'}"],
            cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _handles(process.pid, signal.SIGTERM):  # its handlers are in
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        while CTRL_C_NOTE not in log.read_text():  # the first Ctrl-C handled
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        if presses == 2:
            time.sleep(1)
            assert process.poll() is None, log.read_text()  # still loading, asked to stop
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=10 if presses == 2 else 60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    err = log.read_text()
    assert process.returncode == -signal.SIGINT, err
    assert "Traceback" not in err, err[-2000:]
    said = err[err.index(CTRL_C_NOTE):].splitlines()[1:]
    if presses == 2:
        assert said == [], err[-2000:]
    else:
        assert len(said) == 2 and said[1] == "interrupted", err[-2000:]
        assert said[0].startswith("preempted: run cut interrupted in epoch 1, before its "
                                  "first checkpoint"), err[-2000:]
    assert not (workdir / "runs" / "cut" / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_interrupted_run_resumes_from_its_checkpoint_to_identical_results(workdir):
    config = dict(model="cnn", channels=[8, 16], optimizer="sam", augment=True, dropout=0.1,
                  epochs=3, batch_size=64)
    straight = run(workdir, run_id="straight", **config)

    steps = {"n": 0}

    def interrupt_in_epoch_two():
        steps["n"] += 1
        return steps["n"] > 25  # 20 steps per epoch: stops inside the second epoch

    with pytest.raises(Preempted):
        train({**QUICK, **config, "run_id": "resumed", "data_dir": str(workdir / "data"),
               "log_dir": str(workdir / "logs"), "run_dir": str(workdir / "runs")},
              TrialHooks(interrupted=interrupt_in_epoch_two))
    saved = torch.load(workdir / "runs" / "resumed" / "checkpoint.pt", weights_only=True)
    assert saved["progress"]["epoch"] == 1
    # the checkpoint's progress is the whole Progress (every field), its epoch-1 row included
    assert set(saved["progress"]) == {f.name for f in dataclasses.fields(Progress)}
    assert [row["epoch"] for row in saved["progress"]["history"]] == [1]
    assert saved["progress"]["global_step"] == 20
    began = time.perf_counter()
    resumed = run(workdir, run_id="resumed", **config)
    second_stretch = time.perf_counter() - began
    assert resumed["epochs_done"] == 3 and resumed["global_step"] == straight["global_step"]
    # its wall time counts the first stretch (up to its checkpoint) and the second one
    assert 0 < saved["progress"]["wall_s"] < resumed["wall_s"]
    assert resumed["wall_s"] - saved["progress"]["wall_s"] <= second_stretch
    for key in ("train/loss", "val/acc", "test/acc", "test/loss"):
        assert resumed[key] == straight[key], key


@pytest.mark.timeout(120)
@pytest.mark.parametrize("counter", [None, 9], ids=["", "files 9 and 10"])
@pytest.mark.parametrize("stop_after", [32, 12], ids=["in epoch two", "in epoch one"])
def test_a_resumed_run_shows_each_step_once_in_tensorboard(workdir, monkeypatch, stop_after,
                                                           counter):
    """The interrupted process logged steps past its checkpoint; the resumed one logs them
    again (purge_step): TensorBoard reads each step once, with the straight run's values.
    Interrupted in its first epoch (no checkpoint), the run starts over and hides all that
    the first start logged. `counter`: tensorboard numbers a process's event files 9, then
    10 (unpadded, after the second): resumed within the second, the new file sorted first
    and the purge hid nothing (a CI failure, by the test order). Read by EventAccumulator
    and by the reader TensorBoard's server uses in Python, which purges at a run's second
    SessionLog START on: the first start wrote none, and the server showed the steps past
    the checkpoint twice."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import event_file_writer
    from tensorboard.util import tensor_util

    config = dict(model="dense", hidden=32, epochs=3, batch_size=64, log_interval=5,
                  sinks=["tensorboard"], group="g", optimizer="adam", lr=3e-3)
    run(workdir, run_id="straight", **config)
    steps = {"n": 0}

    def interrupt():
        steps["n"] += 1
        return steps["n"] > stop_after  # 20 steps an epoch (steps 5, 10 ... logged)

    if counter is not None:
        monkeypatch.setattr(event_file_writer, "_global_uid",
                            event_file_writer.AtomicCounter(counter))
    with pytest.raises(Preempted):
        train({**QUICK, **config, "run_id": "resumed", "data_dir": str(workdir / "data"),
               "log_dir": str(workdir / "logs"), "run_dir": str(workdir / "runs")},
              TrialHooks(interrupted=interrupt))
    run(workdir, run_id="resumed", **config)

    def scalars(run_id: str) -> dict:
        events = EventAccumulator(str(workdir / "logs" / "g" / run_id),
                                  size_guidance={"scalars": 0}).Reload()
        return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
                for tag in ("train/step_loss", "val/acc", "train/loss")}

    def served_scalars(run_id: str) -> dict:
        """As TensorBoard's server reads them with Python (--load_fast=false)."""
        events = plugin_event_accumulator.EventAccumulator(
            str(workdir / "logs" / "g" / run_id), tensor_size_guidance={"scalars": 0}).Reload()
        return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item())
                      for e in events.Tensors(tag)]
                for tag in ("train/step_loss", "val/acc", "train/loss")}

    for read in (scalars, served_scalars):
        resumed, straight = read("resumed"), read("straight")
        for tag, points in resumed.items():
            assert [step for step, _ in points] == [step for step, _ in straight[tag]], \
                (read.__name__, tag)
            assert [v for _, v in points] == pytest.approx([v for _, v in straight[tag]]), \
                (read.__name__, tag)
        assert len(resumed["train/step_loss"]) == 13  # 1, 6, ..., 56 and 60: none twice
    # and the run's config text once, at step 0, for both readers (it showed once a start)
    assert [step for step, _ in config_texts(workdir / "logs" / "g" / "resumed")] == [0]
    served = plugin_event_accumulator.EventAccumulator(
        str(workdir / "logs" / "g" / "resumed"), tensor_size_guidance={"text": 0}).Reload()
    assert [e.step for e in served.Tensors("run/config/text_summary")] == [0]


def test_a_run_started_over_with_other_values_shows_their_config(workdir):
    """Interrupted in its first epoch (no checkpoint) and started again under its run id
    with another lr: it starts over, and TensorBoard's server reads the new config text
    alone (the earlier start's purged with all it logged), where a start over with the same
    values keeps the earlier text and writes none."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    config = dict(model="dense", hidden=16, epochs=1, sinks=["tensorboard"], group="g",
                  run_id="over", data_dir=str(workdir / "data"), log_dir=str(workdir / "logs"),
                  run_dir=str(workdir / "runs"))
    with pytest.raises(Preempted):
        train({**QUICK, **config, "lr": 3e-3}, TrialHooks(interrupted=lambda: True))
    run(workdir, **config, lr=1e-2)
    served = plugin_event_accumulator.EventAccumulator(
        str(workdir / "logs" / "g" / "over"), tensor_size_guidance={"text": 0}).Reload()
    texts = [e.tensor_proto.string_val[0].decode()
             for e in served.Tensors("run/config/text_summary")]
    assert len(texts) == 1 and "| lr | 0.01 |" in texts[0], texts
    # and HPARAMS the new lr (it read the first start's: a tag's first metadata stands)
    assert session_start(served)["lr"].number_value == pytest.approx(1e-2)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_start_over_killed_as_its_events_open_leaves_the_run_an_hparams_session(workdir):
    """A start with other values drops the earlier HPARAMS session from the run's event
    files; killed (SIGKILL: a second Ctrl-C, the OOM killer) as its own event file opens, it
    dropped the earlier session before its own was on disk (flushed every 5 s), and the run
    left HPARAMS with none: TensorBoard listed it nowhere. Its own goes to disk first now."""
    from tensorboard.backend.event_processing import plugin_event_accumulator

    config = dict(model="dense", hidden=16, epochs=1, sinks=["tensorboard"], group="g",
                  run_id="over", data_dir=str(workdir / "data"), log_dir=str(workdir / "logs"),
                  run_dir=str(workdir / "runs"))
    with pytest.raises(Preempted):
        train({**QUICK, **config, "lr": 3e-3}, TrialHooks(interrupted=lambda: True))
    log_dir = workdir / "logs" / "g" / "over"
    (first,) = log_dir.glob("events.out.tfevents.*")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
         "--hidden=16", "--epochs=1", "--lr=0.01", "--sinks=[tensorboard]", "--group=g",
         "--run_id=over", "--histograms=false", *(f"--{k}={config[k]}" for k in (
             "data_dir", "log_dir", "run_dir"))],
        cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    while process.poll() is None and set(log_dir.glob("events.out.tfevents.*")) == {first}:
        time.sleep(0.002)
    process.kill()
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err[-2000:]  # killed, not ended by itself
    served = plugin_event_accumulator.EventAccumulator(str(log_dir)).Reload()
    assert session_start(served)["lr"].number_value in (pytest.approx(3e-3),
                                                        pytest.approx(1e-2))


def session_start(events) -> dict:
    """{name: struct_pb2.Value} of the HPARAMS session start a reader of the run's events
    (a plugin_event_accumulator.EventAccumulator, loaded) hands the HPARAMS plugin."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return dict(plugin_data_pb2.HParamsPluginData.FromString(content)
                .session_start_info.hparams)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_start_killed_while_it_drops_the_hparams_session_leaves_the_runs_events_once(
        tmp_path):
    """A start whose values changed rewrites the run's earlier event files without their
    HPARAMS session, each aside and then put in place; killed mid-rewrite (a second Ctrl-C,
    the OOM killer), its copy aside stays. TensorBoard reads every file whose name holds
    `tfevents`, and the copy's did (.events.out.tfevents...rewrite): the run's loss read
    54,656 points of 50,000. Now it reads each once, and the session as it was."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    log_dir, points = tmp_path / "run", 50_000
    writer = EventFileWriter(str(log_dir), max_queue_size=points + 1, flush_secs=600)
    start = plugin_data_pb2.HParamsPluginData(
        session_start_info=plugin_data_pb2.SessionStartInfo(start_time_secs=1.0))
    writer.add_event(Event(wall_time=1.0, step=0, summary=Summary(value=[Summary.Value(
        tag=metadata.SESSION_START_INFO_TAG, metadata={"plugin_data": {
            "plugin_name": metadata.PLUGIN_NAME, "content": start.SerializeToString()}})])))
    for step in range(points):
        writer.add_event(Event(wall_time=2.0, step=step, summary=Summary(
            value=[Summary.Value(tag="train/loss", simple_value=float(step))])))
    writer.close()
    (events,) = log_dir.iterdir()
    size = events.stat().st_size
    rewrite = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from agent.trial.sinks."
         "tensorboard_sink import drop_hparams; drop_hparams([Path(sys.argv[1])])",
         str(events)], env=subprocess_env())
    copied = 0
    while rewrite.poll() is None and copied < size // 10:  # a tenth of the file copied aside
        copied = sum(p.stat().st_size for p in log_dir.iterdir() if p != events)
        time.sleep(0.002)
    rewrite.kill()
    rewrite.wait()
    assert copied >= size // 10, "the rewrite ended before a tenth of it was copied"
    read = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    assert len(read.Scalars("train/loss")) == points
    assert metadata.SESSION_START_INFO_TAG in read.PluginTagToContent(metadata.PLUGIN_NAME)


def config_texts(log_dir: Path) -> list[tuple[int, str]]:
    """(step, text) of a run's config text as TensorBoard's EventAccumulator reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0}).Reload()
    return [(e.step, e.tensor_proto.string_val[0].decode())
            for e in events.Tensors("run/config/text_summary")]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_run_preempted_by_sigterm_and_resumed_shows_its_config_and_its_end_once(workdir):
    """`python -m agent.train` stopped by SIGTERM once it has a checkpoint, then run again
    with the same --run_id (resumed to its end), then once more with more epochs: TensorBoard
    reads the run's config text once at step 0, and at the step the third start resumed from
    the text with its new epochs; before, each start wrote its step-0 text again (one per
    start). HPARAMS reads the session's end as the finished run's: the preempted start's,
    status unknown, was the one read (a tag's first metadata stands); and its epochs as
    those the run finished with, 4 (it read the first start's 3), its end the last start's."""
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.context import RequestContext
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    args = [sys.executable, "-m", "agent.train", "--dataset=digits", "--model=dense",
            "--hidden=256", "--batch_size=8", "--run_id=cut", "--group=g",
            "--sinks=[tensorboard]", "--histograms=false", f"--run_dir={workdir / 'runs'}",
            f"--log_dir={workdir / 'logs'}", f"--data_dir={workdir / 'data'}"]
    env = subprocess_env(OMP_NUM_THREADS="1")
    process = subprocess.Popen(args + ["--epochs=3"], cwd=workdir, env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (workdir / "runs" / "cut" / "checkpoint.pt").is_file():  # into epoch two
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "preempted: run cut" in err, err[-2000:]
    for epochs in (3, 4):  # resumed to its end; then given one more epoch
        done = subprocess.run(args + [f"--epochs={epochs}"], cwd=workdir, env=env, text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    log_dir = workdir / "logs" / "g" / "cut"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 3
    steps = torch.load(workdir / "runs" / "cut" / "checkpoint.pt",
                       weights_only=True)["progress"]["global_step"] // 4  # an epoch's
    texts = config_texts(log_dir)
    assert [step for step, _ in texts] == [0, 3 * steps], texts
    assert "| epochs | 3 |" in texts[0][1] and "| epochs | 4 |" in texts[1][1], texts
    assert texts[0][1].replace("| epochs | 3 |", "| epochs | 4 |") == texts[1][1]
    # HPARAMS' session as TensorBoard's server hands it to the plugin
    served = MultiplexerDataProvider(
        plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(
            str(workdir / "logs")).Reload(), str(workdir / "logs"))
    tags = served.list_tensors(RequestContext(), experiment_id="", plugin_name="hparams")
    end = plugin_data_pb2.HParamsPluginData.FromString(
        tags["g/cut"]["_hparams_/session_end_info"].plugin_content).session_end_info
    assert end.status == api_pb2.STATUS_SUCCESS, end
    start = plugin_data_pb2.HParamsPluginData.FromString(
        tags["g/cut"]["_hparams_/session_start_info"].plugin_content).session_start_info
    assert start.hparams["epochs"].number_value == 4 and start.hparams["lr"].number_value > 0
    last = max(log_dir.glob("events.out.tfevents.*"), key=lambda p: p.name)
    assert end.end_time_secs >= int(last.name.split(".")[3])  # the last start's end


# Where each schedule starts and ends, of a peak lr of 0.1 and no warm-up: onecycle as torch's
# OneCycleLR, from max_lr / div_factor (25) to that / final_div_factor (1e4)
FIRST_AND_LAST_LR = {"cosine": (0.1, 0.0), "onecycle": (0.1 / 25, 0.1 / 25 / 1e4)}


@pytest.mark.parametrize("schedule", sorted(FIRST_AND_LAST_LR))
@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_the_epoch_line_shows_the_lr_the_epoch_trained_with(workdir, capsys, warmup_epochs,
                                                            schedule):
    """The console's epoch line shows the lr of the epoch's first step; the last epoch of a
    cosine decay read "lr 0", the lr after it. TensorBoard's `lr` is the schedule at each
    epoch's end, its x: the line of epoch n shows TensorBoard's point of epoch n - 1."""
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agent.sweep_space import short_number

    run(workdir, run_id="decay", model="dense", hidden=16, epochs=3, lr=0.1,
        schedule=schedule, warmup_epochs=warmup_epochs, sinks=["console", "tensorboard"],
        group="g")
    shown = re.findall(r"^epoch \d/3 train .* lr (\S+) ", capsys.readouterr().out, re.M)
    events = EventAccumulator(str(workdir / "logs" / "g" / "decay"),
                              size_guidance={"scalars": 0}).Reload()
    logged = [point.value for point in events.Scalars("lr")]
    first, last = FIRST_AND_LAST_LR[schedule]
    assert len(shown) == len(logged) == 3
    assert logged[-1] == pytest.approx(last, rel=1e-6)  # TensorBoard's float32
    steps = events.Scalars("lr")[0].step  # an epoch's
    if warmup_epochs:
        first /= steps  # a warm-up's first step takes 1/W of the schedule's first rate
    assert shown == [short_number(first), *(short_number(v) for v in logged[:2])]
    assert shown[-1] != "0" and float(shown[-1]) > 0
    # and it is the lr the training table gives the epoch's first step
    from nn.schedules import lr_table

    table = lr_table([0.1], 3 * steps, [round(warmup_epochs * steps)], schedule)
    assert shown == [short_number(table[epoch * steps, 0].item()) for epoch in range(3)]


def test_a_onecycle_run_warming_up_throughout_trains_at_its_warm_up_rate(workdir, capsys):
    """warmup_epochs as long as epochs under onecycle: the warm-up rose to the rate torch's
    one-step cycle starts at, lr / 2.5e5, and the run trained at about 0 (its second epoch's
    line read lr 2.2e-7); it rises to onecycle's own start, lr / 25, as any warm-up does."""
    import re

    run(workdir, run_id="warm", model="dense", hidden=16, epochs=2, lr=0.1,
        schedule="onecycle", warmup_epochs=2.0, sinks=["console"])
    shown = [float(lr) for lr in re.findall(r"^epoch \d/2 train .* lr (\S+) ",
                                            capsys.readouterr().out, re.M)]
    assert len(shown) == 2 and 0.1 / 25 / 2 <= shown[1] <= 0.1 / 25, shown  # half way up


def test_tensorboard_gets_the_end_metrics_every_sink_gets(workdir):
    """README, "What a run reports": at the end test/loss, test/acc and test/class_acc/<class>
    reach every sink; TensorBoard holds each as a scalar equal to the run's summary."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(workdir, run_id="ends", model="dense", hidden=16, epochs=1,
                  sinks=["tensorboard"], group="g")
    events = EventAccumulator(str(workdir / "logs" / "g" / "ends"),
                              size_guidance={"scalars": 0}).Reload()
    ended = [k for k in summary if k.startswith("test/class_acc/")] + ["test/loss", "test/acc"]
    assert len(ended) == 12  # digits: ten classes
    for tag in ended:
        (point,) = events.Scalars(tag)
        assert point.value == pytest.approx(summary[tag]) and point.step == summary[
            "global_step"], tag


def test_every_number_a_trial_reports_is_in_the_metric_catalogue(workdir):
    """agent/metrics.py defines every metric a trial reports: each scalar the TensorBoard sink
    wrote and each number of the run's summary is found there (the summary's perf/train_s
    was not). Left out: `epoch`, the x-axis of W&B's epoch charts, and the summary's run
    identity and step counter."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agent import metrics

    summary = run(workdir, run_id="known", model="dense", hidden=16, epochs=1,
                  sinks=["tensorboard"], group="g", log_interval=1)
    events = EventAccumulator(str(workdir / "logs" / "g" / "known"),
                              size_guidance={"scalars": 0}).Reload()
    reported = set(events.Tags()["scalars"]) - {"epoch"}
    reported |= {key for key, value in summary.items() if isinstance(value, (int, float))
                 and key != "global_step"}
    assert {"perf/train_s", "test/class_acc/0", "wall_s"} <= reported
    assert [name for name in sorted(reported) if metrics.find(name) is None] == []


@pytest.mark.timeout(120)
def test_should_stop_hook_ends_the_run_early_as_stopped(workdir):
    summary = train({**QUICK, "model": "dense", "epochs": 5, "data_dir": str(workdir / "data"),
                     "run_dir": str(workdir / "runs")},
                    TrialHooks(should_stop=lambda epoch, history: "hyperband" if epoch == 2
                               else None))
    assert summary["state"] == "stopped" and summary["epochs_done"] == 2
    assert summary["stop_reason"] == "hyperband" and "test/acc" in summary


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train(workdir, precision):
    summary = run(workdir, model="cnn", channels=[16, 32], precision=precision, epochs=2,
                  batch_size=64, channels_last=True)
    assert summary["test/acc"] > 0.7


@pytest.mark.timeout(180)
def test_resnet_trains_on_the_cifar_fixture(workdir, cifar_root):
    summary = train({"dataset": "cifar10", "data_dir": str(cifar_root), "model": "resnet",
                     "width": 8, "epochs": 1, "batch_size": 32, "augment": True,
                     "sinks": ["tensorboard"], "log_dir": str(workdir / "logs"),
                     "run_dir": str(workdir / "runs"), "num_threads": 2})
    assert summary["state"] == "finished" and 0 <= summary["test/acc"] <= 1
    assert "test/class_acc/airplane" in summary


@pytest.mark.timeout(120)
def test_tensorboard_holds_scalars_histograms_and_hparams(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    summary = run(workdir, model="dense", hidden=32, epochs=2, sinks=["tensorboard"],
                  histograms=True, group="study", run_name="r1", optimizer="adam", lr=1e-3)
    events = EventAccumulator(str(workdir / "logs" / "study" / "r1"),
                              size_guidance={"scalars": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "train/step_loss",
                "grad_norm/global", "weight_norm/global", "perf/images_per_s",
                "perf/epoch_s", "perf/peak_mem_mb", "test/acc", "val/best_acc"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("val/acc")] == [events.Scalars("val/acc")[0].step,
                                                             summary["global_step"]]
    assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["test/acc"])
    assert any(tag.startswith("weights/") for tag in tags["histograms"])
    assert {"grad_norm/fc1", "grad_norm/fc2", "grad_norm/fc3"} <= set(tags["scalars"])
    assert {"weights/fc1", "weights/fc2", "weights/fc3"} <= set(tags["histograms"])
    # each epoch's histogram of fc1 (64 inputs x 32 units) bins all its weights
    fc1 = [event.histogram_value for event in events.Histograms("weights/fc1")]
    assert len(fc1) == 2 and all(h.num == 64 * 32 == sum(h.bucket) for h in fc1)
    assert all(h.min < 0 < h.max and h.bucket_limit[-1] >= h.max for h in fc1)
    assert "test/confusion_matrix" in tags["images"]

    content = events.PluginTagToContent("hparams")
    assert set(content) >= {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optimizer"].string_value == "adam"
    assert start.hparams["lr"].number_value == pytest.approx(1e-3)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"val/acc", "test/acc"}


@pytest.mark.timeout(120)
def test_a_trial_process_never_imports_torch_dynamo(workdir):
    """torch.compile's machinery (torch._dynamo) costs ~1.2 s to import, once a process: no
    trial needs it, whatever its optimizer, precision or model (the preflight's size check
    and torch.optim's bookkeeping methods used to import it)."""
    code = f"""
import sys
from agent.trial.loop import train
for optimizer in ("sgd", "adam", "adamw", "rmsprop", "sam"):
    for model in ("dense", "cnn", "resnet"):
        train({{"dataset": "digits", "epochs": 1, "train_subset": 128, "sinks": ["tensorboard"],
               "model": model, "channels": [4, 8], "width": 4, "optimizer": optimizer,
               "precision": "bf16", "augment": True, "data_dir": {str(workdir / "data")!r},
               "run_dir": {str(workdir / "runs")!r}, "log_dir": {str(workdir / "logs")!r}}})
print(sorted(m for m in sys.modules if m.startswith("torch._dynamo")))
"""
    child = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=subprocess_env(),
                           capture_output=True, text=True, timeout=110)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("sinks", [["console"], ["console", "tensorboard"]])
def test_a_single_run_names_its_tensorboard_logs_only_when_it_wrote_them(workdir, capsys,
                                                                           sinks):
    summary = run(workdir, model="dense", hidden=16, epochs=1, sinks=sinks, run_id="tb1")
    out = capsys.readouterr().out
    logs = workdir / "logs" / "default" / "tb1"
    assert ("./run_tensorboard.sh --logdir" in out) == ("tensorboard" in sinks) == logs.is_dir()
    assert summary["state"] == "finished"


SIGNALLED_JOB_PACK = """
import json
from agent.trial.loop import TrialHooks, train_pack

signalled = []

def signal_and_fail(epoch, history):
    # the job's SIGTERM has arrived (interrupted() holds from now on), and the call this
    # hook stands for (W&B's, its service process killed by the same signal) fails
    signalled.append(True)
    raise ConnectionResetError(104, "Connection reset by peer")

configs = [dict(dataset="digits", model="dense", hidden=16, epochs=3, lr=lr,
                sinks=["tensorboard"], group="g", run_id=f"member{k}", log_dir="logs",
                run_dir="runs", histograms=False) for k, lr in enumerate([0.1, 0.01])]
interrupted = lambda: bool(signalled)
summaries = train_pack(configs, [TrialHooks(interrupted=interrupted),
                                 TrialHooks(recorded=signal_and_fail, interrupted=interrupted)])
print(json.dumps([(s["state"], s["epochs_done"]) for s in summaries]))
"""


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_failure_once_the_signal_to_stop_holds_leaves_the_pack_preempted(workdir):
    """A scheduler's SIGTERM reaches every process of the job, W&B's service too: a call into
    it fails before the loop has seen the signal (here in a member's epoch hook). The pack
    ends preempted at its last checkpoint (the next agent resumes it), in one line; it used
    to end failed, with a traceback, and was not resumed."""
    import json

    from conftest import subprocess_env

    done = subprocess.run([sys.executable, "-c", SIGNALLED_JOB_PACK], cwd=workdir,
                          env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["preempted", 1]] * 2
    assert "run(s) member0, member1: ConnectionResetError ([Errno 104] Connection reset by " \
        "peer) while stopping for a signal; preempted at the last checkpoint" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for k in (0, 1):
        assert (workdir / "runs" / f"member{k}" / "checkpoint.pt").is_file()

"""--pack auto: packs grow while the whole pack's throughput rises, within device memory."""

import re

import pytest

from agent.sweep.pack_size import PackSizer, parse_pack
from util.errors import UserError


def test_a_fixed_pack_size_is_used_as_given():
    sizer = PackSizer(fixed=8)
    sizer.observe("k", 8, 100.0)
    assert sizer.next_size("k") == 8 and sizer.next_size("other") == 8


CURVES = [
    ({1: 60, 2: 100, 4: 190, 8: 360, 16: 700, 32: 720, 64: 715}, 16),  # saturates at 16
    ({1: 100, 2: 102, 4: 105, 8: 108, 16: 107, 32: 109, 64: 108}, 1),  # no size pays
    ({1: 100, 2: 72, 4: 70}, 1),  # a pack is slower than a run alone (CPU, tiny maps)
    ({1: 40, 2: 100, 4: 300, 8: 250, 16: 200}, 4),  # slower when larger: back to the best
    # a plateau, then a size that pays (a CPU's grouped convolutions): past the plateau
    ({1: 35, 2: 47, 4: 48, 8: 84, 16: 76, 32: 60}, 8),
]


@pytest.mark.parametrize("start", [1, 2, 4])
@pytest.mark.parametrize("curve,settles", CURVES)
def test_auto_doubles_while_throughput_rises_then_settles_on_the_best(curve, settles, start):
    sizer = PackSizer(fixed=None, start=start)
    seen = []
    for _ in range(10):
        size = sizer.next_size("cnn")
        seen.append(size)
        if size not in curve:
            break
        sizer.observe("cnn", size, curve[size])
    assert seen[-1] == settles
    tried = list(dict.fromkeys(seen))
    assert tried[0] == 1 and (len(tried) == 1 or tried[1] == max(start, 2))  # baseline first
    assert all(b == 2 * a for a, b in zip(tried[1:], tried[2:]))  # then explored by doubling
    assert seen[-3:] == [settles] * 3  # and stays settled


def test_auto_never_grows_past_the_device_memory():
    sizer = PackSizer(fixed=None, start=4)
    sizer.memory_mb = 1000.0
    sizer.observe("big", 1, 30.0, peak_memory_mb=100.0)
    assert sizer.next_size("big") == 4
    sizer.observe("big", 4, 100.0, peak_memory_mb=400.0)  # 100 MB a member: at most 8
    assert sizer.next_size("big") == 8
    sizer.observe("big", 8, 200.0, peak_memory_mb=800.0)
    assert sizer.next_size("big") == 8  # 16 members would need 1600 MB


def test_kinds_of_pack_are_sized_apart():
    sizer = PackSizer(fixed=None, start=2)
    sizer.observe("dense", 1, 50.0)
    assert sizer.next_size("dense") == 2 and sizer.next_size("cnn") == 1
    sizer.observe("dense", 2, 100.0)
    assert sizer.next_size("dense") == 4 and sizer.next_size("cnn") == 1


@pytest.mark.parametrize("text,value", [("auto", None), ("1", 1), ("16", 16)])
def test_pack_option_values(text, value):
    assert parse_pack(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "many", "", "257", "1e3"])
def test_bad_pack_option_values_are_refused(text):
    with pytest.raises(ValueError, match="--pack"):
        parse_pack(text)


def test_auto_says_what_it_settled_on_and_why():
    sizer = PackSizer(fixed=None, start=2)
    for size, rate in ((1, 3100.0), (2, 5800.0), (4, 5900.0), (8, 5200.0)):
        assert sizer.settled_text("cnn") is None
        assert sizer.next_size("cnn") == size
        sizer.observe("cnn", size, rate)
    assert sizer.next_size("cnn") == 2
    assert sizer.settled_text("cnn") == "packs of 2 (images/s by size: 1: 3.1k, 2: 5.8k, " \
                                        "4: 5.9k, 8: 5.2k)"
    assert PackSizer(fixed=4).settled_text("cnn") is None


@pytest.mark.parametrize("start", [1, 2, 4])
@pytest.mark.parametrize("curve,settles", CURVES)
def test_a_probe_measures_the_sizes_the_rule_asks_for_and_settles_before_any_claim(
        curve, settles, start):
    sizer = PackSizer(fixed=None, start=start)
    measured = []
    sizer.probe("cnn", lambda size, required: measured.append(size) or (curve[size], None))
    assert sizer.next_size("cnn") == settles and sizer.settled_text("cnn") is not None
    # the sizes the whole-run rule would have tried, one claim each, are measured at once
    stepwise = PackSizer(fixed=None, start=start)
    tried = []
    while stepwise.settled_text("cnn") is None:
        tried.append(stepwise.next_size("cnn"))
        stepwise.observe("cnn", tried[-1], curve[tried[-1]])
    # then the choice once more against its rival (a run alone, or the fastest pack) and
    # the size whose clear fall ended the doubling, where that is neither
    rival = 1 if settles != 1 else max(set(tried) - {1}, key=curve.get)
    best = max(curve[size] for size in tried)
    fallen = [tried[-1]] if 1.1 * curve[tried[-1]] < best else []
    assert measured == tried + list(dict.fromkeys([settles, rival, *fallen]))
    sizer.probe("cnn", lambda size, required: pytest.fail("a settled kind is not measured "
                                                          "again"))


@pytest.mark.parametrize("fits,settles", [(0, 1), (1, 1), (2, 2), (4, 4), (16, 16)])
def test_a_size_that_runs_out_of_memory_caps_the_pack(fits, settles):
    # throughput keeps rising, but sizes above `fits` run out of device memory
    sizer = PackSizer(fixed=None, start=2)
    sizer.probe("big", lambda size, required: "out of memory" if size > fits else
                (100.0 * size, 10.0 * size))
    assert sizer.next_size("big") == settles
    text = sizer.settled_text("big")
    assert text.startswith(f"packs of {settles} (") and "out of memory" in text
    assert text.endswith(f", {2 * fits}: out of memory)" if fits else "(images/s by size: 1: "
                         "out of memory)")


def test_a_fixed_size_is_never_probed():
    sizer = PackSizer(fixed=3)
    sizer.probe("k", lambda size, required: pytest.fail("--pack 3 measures nothing"))
    assert sizer.next_size("k") == 3


def test_a_probe_times_real_packs_and_writes_nothing(workdir):
    from agent.trial.probe import measure_pack

    config = {"dataset": "digits", "data_dir": str(workdir / "data"), "model": "dense",
              "hidden": 16, "batch_size": 32, "sinks": ["tensorboard"], "num_threads": 1,
              "run_dir": str(workdir / "runs"), "log_dir": str(workdir / "logs")}
    speeds = [measure_pack(config, size) for size in (1, 3)]
    for speed in speeds:
        assert speed.images_per_s > 0 and speed.peak_memory_mb is None  # a CPU
    assert sorted(p.name for p in workdir.iterdir()) == ["data"]  # no run dir, no logs
    with pytest.raises(UserError, match="optimizer"):
        measure_pack({**config, "optimizer": "nope"}, 2)


@pytest.mark.parametrize("left,sizes", [(1, [1]), (3, [1, 2, 3]), (6, [1, 2, 4, 6]),
                                        (None, [1, 2, 4, 8, 16, 32, 64])])
def test_a_probe_never_measures_more_runs_than_the_sweep_has_left(left, sizes):
    sizer = PackSizer(fixed=None, start=2)
    measured = []
    sizer.probe("k", lambda size, required: measured.append(size) or (100.0 * size, None),
                left)
    again = [sizes[-1], 1] if len(sizes) > 1 else []  # the choice against a run alone
    assert measured == sizes + again and sizer.next_size("k") == sizes[-1]


@pytest.mark.parametrize("command", [
    ["${env}", "python", "-m", "agent.train", "--hidden=64", "--epochs=1", "${args}"],
    ["${env}", "python", "-m", "agent.train", "--hidden=64", "--epochs=1", "${args_json_file}"],
    ["${env}", "python", "agent/train.py", "--hidden=64", "--epochs=1", "${args_json}"],
])
def test_the_measured_config_is_the_trials_with_the_commands_fixed_arguments(workdir,
                                                                              command):
    from agent.params import validate
    from agent.sweep.program import values_for

    sweep = {"command": command, "method": "grid",
             "metric": {"name": "val/acc", "goal": "maximize"},
             "parameters": {"lr": {"values": [0.1, 0.01]}, "dropout": {"value": 0.1}}}
    config = validate(values_for(sweep, {"lr": 0.1, "dropout": 0.1}))
    assert (config["hidden"], config["epochs"], config["lr"], config["dropout"]) == \
        (64, 1, 0.1, 0.1)
    assert not (workdir / "wandb").exists()  # the run's files went to a scratch folder


@pytest.mark.parametrize("run_images,measured,why", [
    # 6 runs alone ~6 s: 1 s of measuring, but a run alone and the first pack, and the
    # choice once more against a run alone, are measured whatever the time
    (1_000, [1, 2, 2, 1], "4: not measured (over 1 s)"),
    (100_000, [1, 2, 4, 6, 6, 1], None),  # ~600 s alone: measuring up to the 6 runs is worth it
])
def test_measuring_stops_at_a_tenth_of_what_the_kinds_runs_take_alone(
        workdir, monkeypatch, run_images, measured, why):
    import time

    import agent.trial.probe as probe
    from agent.sweep.agent_loop import LocalAgent
    from agent.sweep.store import create_store

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    sizes = []

    def measure_pack(config, size, interrupted):  # 0.6 s a size, 1,000 images/s a member
        clock[0] += 0.6
        sizes.append(size)
        return probe.PackSpeed(1000.0 * size, None, run_images)

    monkeypatch.setattr(probe, "measure_pack", measure_pack)
    store = create_store(workdir / "data" / "sweeps" / "b1", "b1", "b1", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"},
                       "lr": {"values": [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]}}})
    agent = LocalAgent(store, 5.0, 60.0, PackSizer(fixed=None))
    agent.size_packs_of({"dataset": "digits", "lr": 0.3})
    assert sizes == measured
    key = next(iter(agent.sizer.records))
    text = agent.sizer.settled_text(key)
    assert (why in text) if why else "not measured" not in text, text


def test_a_first_timing_of_a_run_alone_slowed_by_a_busy_machine_is_measured_again():
    """Another process on the cores slowed the first timing of a run alone to 168 images/s
    (the pack's sizes truly run at 40-42k: packing does not pay). Every pack then looked
    faster than it by far: auto settled on packs of 2. Measured again against a run alone,
    each size keeping its best timing, runs go alone."""
    truth = {1: 40_000.0, 2: 41_000.0, 4: 42_000.0, 8: 42_000.0}
    timings = {1: [168.0]}
    sizer = PackSizer(fixed=None, start=2)
    measured = []

    def measure(size, required):
        measured.append(size)
        return (timings.get(size, []).pop() if timings.get(size) else truth[size]), None

    sizer.probe("cnn", measure, runs_left=8)
    assert sizer.next_size("cnn") == 1, sizer.settled_text("cnn")
    assert measured == [1, 2, 4, 8, 2, 1]
    assert sizer.settled_text("cnn") == "packs of 1 (images/s by size: 1: 40k, 2: 41k, " \
                                        "4: 42k, 8: 42k)"


def test_a_run_alone_and_the_first_pack_are_measured_whatever_the_time_taken():
    """On a busy machine a run alone's timing took the whole time allowed for measuring:
    auto said `2: not measured (over 1 s)` and, with nothing to compare, claimed packs of
    1. The first pack is measured whatever the time; sizes past it keep the limit."""
    sizer = PackSizer(fixed=None, start=2)
    measured = []

    def measure(size, required):
        if not required:
            return "not measured (over 1 s)"
        measured.append(size)
        return 1000.0 * size ** 0.8, None

    sizer.probe("dense", measure)
    assert measured == [1, 2, 2, 1] and sizer.next_size("dense") == 2
    assert sizer.settled_text("dense").endswith("4: not measured (over 1 s))")


def test_the_settled_size_is_never_wrapped_apart_from_its_words(workdir, capsys):
    """The agent's line wraps within 80 columns; where the kind's text and the agent's name
    (host:pid, of any length) left "packs of" at a line's end, the size went to the next
    line alone ("packs of" / "  2"). A real measurement on digits, the agent named so that
    the line is 82 characters long: the break comes before "packs of 2", not inside it."""
    from agent.sweep.agent_loop import LocalAgent
    from agent.sweep.store import create_store

    store = create_store(workdir / "data" / "sweeps" / "w1", "w1", "w1", {
        "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"},
                       "data_dir": {"value": str(workdir / "data")},
                       "model": {"value": "dense"}, "hidden": {"value": 16},
                       "num_threads": {"value": 1}, "lr": {"values": [0.1, 0.01]}}})
    agent = LocalAgent(store, 5.0, 60.0, PackSizer(fixed=None))
    rest = ": --pack auto for model=dense optimizer=sgd: packs of 2"
    agent.owner = "h" * (82 - len("agent " + rest))  # the whole line: 82 characters
    agent.size_packs_of({"dataset": "digits", "data_dir": str(workdir / "data"),
                         "model": "dense", "hidden": 16, "num_threads": 1, "lr": 0.1})
    lines = capsys.readouterr().err.splitlines()
    assert max(map(len, lines)) <= 80, lines
    assert re.fullmatch(r"  packs of [12]", lines[1]), lines
    assert lines[2].startswith("  (images/s by size: 1: "), lines


def test_a_pack_slowed_by_a_busy_machine_is_measured_again_before_its_fall_ends_the_doubling():
    """A random sweep on 2 cores busy with other jobs: --pack auto timed packs of a small
    skip_mlp with SAM at 5.37k images/s alone, 5.1k for 2 and 328 for 4, took the 16-fold
    fall for the end of what packing pays and ran that kind's 4 runs alone, one after another
    (92 s). Timed on the same cores a minute apart, the sizes read 22k, 37k, 69k, 116k,
    166k (1 to 16). The size whose fall ended the doubling is measured again with the
    settled size and its rival, each keeping its best timing, and the doubling goes on."""
    truth = {1: 21_945.0, 2: 36_979.0, 4: 69_178.0, 8: 116_350.0, 16: 165_941.0}
    timings = {1: [5_370.0], 2: [5_100.0], 4: [328.0]}  # the first timing of each, slowed
    sizer = PackSizer(fixed=None, start=2)
    measured = []

    def measure(size, required):
        measured.append(size)
        return (timings[size].pop() if timings.get(size) else truth[size]), None

    sizer.probe("skip_mlp", measure, runs_left=4)
    assert sizer.next_size("skip_mlp") == 4, sizer.settled_text("skip_mlp")
    assert measured == [1, 2, 4, 1, 2, 4]
    # a fall that holds when measured again still ends it, at no more measurements than the
    # rule took before where the fallen size is the rival (a CPU's grouped convolutions)
    falling = PackSizer(fixed=None, start=2)
    again = []
    falling.probe("cnn", lambda size, required: again.append(size) or (
        {1: 100.0, 2: 72.0, 4: 70.0}[size], None))
    assert falling.next_size("cnn") == 1 and again == [1, 2, 1, 2]

"""Packed trials: K configurations trained as one fused model, each member a run of its own.

The contract is equivalence: a member's metrics equal the same configuration trained alone
with the same seed (to float tolerance). Members have their own data order, augmentation and
dropout streams, seeded by their own seeds, so this holds with dropout and augmentation too.
"""

import math

import pytest
import torch

from agent.trial import Preempted, TrialHooks, train, train_pack
from agent.trial.checkpoint import SettingsMismatch
from agent.trial.member import PACK_SHARED, pack_key

BASE = {"dataset": "digits", "sinks": [], "histograms": False, "num_threads": 2,
        "train_subset": 640, "epochs": 2, "batch_size": 64}
MODEL_KINDS = {"dense": {"hidden": 24}, "skip_mlp": {"widths": [24, 16]},
               "cnn": {"channels": [6, 12]}, "resnet": {"width": 4}}
OPTIMIZERS = {"sgd": {"lr": 0.05, "momentum": 0.9}, "adam": {"lr": 3e-3},
              "adamw": {"lr": 3e-3}, "rmsprop": {"lr": 1e-3}, "sam": {"lr": 0.05}}
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc",
            "epochs_done", "global_step")


def members(optimizer: str, count: int = 3, **extra) -> list[dict]:
    """`count` configurations differing in what a sweep varies between pack members."""
    out = []
    for k in range(count):
        config = {**OPTIMIZERS[optimizer], "optimizer": optimizer, "seed": 11 + k,
                  "weight_decay": [0.0, 5e-4, 1e-3][k % 3],
                  "label_smoothing": [0.0, 0.1, 0.05][k % 3],
                  "warmup_epochs": [0.0, 0.5, 1.0][k % 3], **extra}
        config["lr"] = config["lr"] * (1.0, 0.5, 2.0)[k % 3]
        if optimizer == "sam":
            config["rho"] = (0.05, 0.1, 0.02)[k % 3]
            config["adaptive"] = k == 2
        if optimizer in ("sgd", "rmsprop"):
            config["momentum"] = (0.9, 0.5, 0.0)[k % 3]
        out.append(config)
    return out


def dirs(workdir) -> dict:
    return {"data_dir": str(workdir / "data"), "log_dir": str(workdir / "logs"),
            "run_dir": str(workdir / "runs")}


def assert_same(packed: dict, alone: dict, tolerance: float = 2e-3,
                accuracy_tolerance: float = 0.02) -> None:
    """Equal to float32 tolerance. The math of a member is exactly its solo math (tests/
    test_packed*.py check it in float64 to 1e-7); in float32 a fused kernel rounds in another
    order, which over ~60 steps moves a loss by ~1e-4 and can flip a few close argmaxes: an
    accuracy may differ by two or three images."""
    for key in COMPARED:
        if key not in alone and key not in packed:
            continue
        if key.endswith("/acc"):
            assert packed[key] == pytest.approx(alone[key], abs=accuracy_tolerance), key
        else:
            assert packed[key] == pytest.approx(alone[key], rel=tolerance, abs=1e-5), key


def _full(workdir, model: str, configs: list[dict]) -> list[dict]:
    return [{**BASE, **dirs(workdir), "model": model, **MODEL_KINDS[model], **c,
             "run_id": f"p{k}"} for k, c in enumerate(configs)]


def pack_and_alone(workdir, model: str, configs: list[dict]):
    full = _full(workdir, model, configs)
    packed = train_pack(full)
    alone = [train({**c, "run_id": f"a{k}"}) for k, c in enumerate(full)]
    return packed, alone


@pytest.mark.timeout(300)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_members_of_a_cnn_pack_train_as_they_would_alone(workdir, optimizer):
    packed, alone = pack_and_alone(workdir, "cnn", members(optimizer))
    for p, a in zip(packed, alone):
        assert p["state"] == a["state"] == "finished"
        assert_same(p, a)
    assert len({p["test/loss"] for p in packed}) == 3  # the members really differ


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", ["dense", "skip_mlp", "resnet"])
def test_every_model_kind_and_optimizer_packs_equivalently(workdir, model, optimizer):
    # A short horizon (5 steps, warm-up included), where float32 rounding has not yet been
    # amplified by training (ResNet's eight batch norms amplify it most): equal to 1e-4.
    # The math itself is checked in float64 in tests/test_packed_optimizers.py.
    short = [{**c, "epochs": 1, "train_subset": 320, "warmup_epochs": c["warmup_epochs"] / 2}
             for c in members(optimizer)]
    packed, alone = pack_and_alone(workdir, model, short)
    # RMSprop's first steps are nearly sign(g) * lr * 10 (its square average starts at 0.01 g^2),
    # so a gradient component that rounds across zero moves a weight by a whole step.
    tolerance = 3e-3 if optimizer == "rmsprop" or model == "resnet" else 1e-4
    floors = [0.0] * len(alone)
    if model == "resnet":
        # The float noise floor of each member: the same run alone summed in other orders (the
        # NCHW memory layout instead of channels-last, one thread instead of two, both). A
        # pack's grouped convolution is another order, so a member may lie a few such
        # distances from its run alone: within 3 of the largest (RMSprop at lr 2e-3 without
        # momentum, near chance, measured 2.7 against NCHW alone on an Intel Xeon; 1.7 against
        # the largest of the three on an AMD EPYC, where NCHW alone read 0.2 of it).
        orders = [{"channels_last": False}, {"num_threads": 1},
                  {"channels_last": False, "num_threads": 1}]
        others = [[train({**c, **order, "run_id": f"n{j}{k}"})
                   for k, c in enumerate(_full(workdir, model, short))]
                  for j, order in enumerate(orders)]
        floors = [3 * max(abs(o[key] - a[key]) / max(abs(a[key]), 1e-5)
                          for o in runs for key in ("train/loss", "val/loss", "test/loss"))
                  for a, *runs in zip(alone, *others)]
    for p, a, floor in zip(packed, alone, floors):
        assert_same(p, a, tolerance=max(tolerance, floor), accuracy_tolerance=0.014)


@pytest.mark.timeout(300)
def test_dropout_and_augmentation_are_each_members_own_streams(workdir):
    configs = members("sgd", dropout=0.3, augment=True)
    configs[0]["random_erasing"] = 0.3  # crop, flip and erasing
    configs[1].update(dropout=0.0, flip=False, crop_padding=2)  # a smaller crop, no flip
    configs[2].update(augment=False, random_erasing=0.5)  # erasing alone
    packed, alone = pack_and_alone(workdir, "dense", configs)
    for p, a in zip(packed, alone):
        assert_same(p, a, tolerance=1e-3)
    again = train_pack([{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"],
                         **c, "run_id": f"b{k}"} for k, c in enumerate(configs)])
    for p, q in zip(packed, again):  # a pack is deterministic for its seeds
        assert p["test/loss"] == q["test/loss"] and p["train/loss"] == q["train/loss"]


@pytest.mark.timeout(300)
def test_hyperband_stops_one_member_and_the_others_go_on_undisturbed(workdir):
    configs = [{**BASE, **dirs(workdir), "model": "cnn", **MODEL_KINDS["cnn"], **c,
                "epochs": 3, "run_id": f"m{k}"} for k, c in enumerate(members("adam"))]
    ended = []
    hooks = [TrialHooks(should_stop=(lambda epoch, history: "hyperband" if epoch == 1
                                     else None) if k == 1 else (lambda e, h: None),
                        ended=ended.append) for k in range(3)]
    packed = train_pack(configs, hooks)
    assert [s["state"] for s in packed] == ["finished", "stopped", "finished"]
    assert packed[1]["epochs_done"] == 1 and packed[1]["stop_reason"] == "hyperband"
    assert "test/acc" in packed[1]
    assert [s["run_id"] for s in ended] == ["m1", "m0", "m2"]  # told as each one ended
    for k in (0, 2):
        assert_same(packed[k], train({**configs[k], "run_id": f"alone{k}"}))


@pytest.mark.timeout(300)
def test_a_member_that_diverges_leaves_and_the_others_are_unharmed(workdir):
    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "run_id": f"d{k}"} for k, c in enumerate(members("sgd"))]
    # the largest lr and weight decay allowed: w <- (1 - lr * wd) w grows a thousandfold a step
    configs[1].update(lr=100, momentum=0.0, warmup_epochs=0.0, weight_decay=10)
    packed = train_pack(configs)
    assert packed[1]["state"] == "diverged" and packed[1]["diverged"] is True
    assert "test/acc" not in packed[1]
    for value in packed[1].values():
        if isinstance(value, float):
            assert math.isfinite(value)
    for k in (0, 2):
        assert packed[k]["state"] == "finished"
        assert_same(packed[k], train({**configs[k], "run_id": f"alone{k}"}))


@pytest.mark.timeout(300)
def test_in_fp16_a_member_that_overflows_does_not_skip_the_others_steps(workdir):
    # one loss scale per member (nn/loss_scale.py): with one scale for the pack, the step in
    # which member 1's gradients overflow would be skipped by every member
    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "precision": "fp16", "run_id": f"h{k}"} for k, c in enumerate(members("sgd"))]
    configs[1].update(lr=100, momentum=0.0, warmup_epochs=0.0, weight_decay=10)
    packed = train_pack(configs)
    assert packed[1]["state"] == "diverged"
    for k in (0, 2):
        alone = train({**configs[k], "run_id": f"h-alone{k}"})
        assert packed[k]["global_step"] == alone["global_step"]
        assert_same(packed[k], alone, tolerance=1e-3)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: per-member loss scales
def test_an_interrupted_pack_is_preempted_whole_and_resumes_to_identical_results(workdir,
                                                                                 precision):
    configs = [{**BASE, **dirs(workdir), "model": "cnn", **MODEL_KINDS["cnn"], **c,
                "epochs": 3, "dropout": 0.2, "augment": True, "checkpoint": True,
                "precision": precision} for c in members("sam")]
    straight = train_pack([{**c, "run_id": f"s{k}"} for k, c in enumerate(configs)])
    steps = {"n": 0}

    def interrupted():
        steps["n"] += 1
        return steps["n"] > 3 * 15  # polled once per member each step: inside epoch 2

    resumed_configs = [{**c, "run_id": f"r{k}"} for k, c in enumerate(configs)]
    hooks = [TrialHooks(interrupted=interrupted) for _ in configs]
    first = train_pack(resumed_configs, hooks)
    assert [s["state"] for s in first] == ["preempted"] * 3
    for k in range(3):
        saved = torch.load(workdir / "runs" / f"r{k}" / "checkpoint.pt", weights_only=True)
        assert saved["progress"]["epoch"] == 1
    with pytest.raises(Preempted):  # a pack of one raises, as a single trial always has
        train(resumed_configs[0], TrialHooks(interrupted=lambda: True))
    resumed = train_pack(resumed_configs)
    for r, s in zip(resumed, straight):
        assert r["state"] == "finished"
        for key in COMPARED:
            assert r[key] == s[key], key


@pytest.mark.timeout(300)
def test_each_member_is_its_own_run_in_every_sink(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import closed_offline_runs

    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "epochs": 1, "sinks": ["wandb", "tensorboard"], "group": "g",
                "run_id": f"w{k}", "run_name": f"member{k}", "histograms": True}
               for k, c in enumerate(members("adam"))]
    packed = train_pack(configs)
    runs = {r.run_id: r for r in closed_offline_runs(workdir / "wandb", 3)}
    assert set(runs) == {"w0", "w1", "w2"}
    for k, summary in enumerate(packed):
        run = runs[f"w{k}"]
        assert run.config["lr"] == pytest.approx(configs[k]["lr"])
        assert run.summary["test/acc"] == pytest.approx(summary["test/acc"])
        events = EventAccumulator(str(workdir / "logs" / "g" / f"member{k}")).Reload()
        assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["test/acc"])
        assert any(t.startswith("weights/") for t in events.Tags()["histograms"])
        assert (workdir / "runs" / f"w{k}" / "summary.json").exists()
        assert (workdir / "runs" / f"w{k}" / "checkpoint.pt").exists()


def test_what_members_may_differ_in_and_what_they_must_share():
    assert {"model", "batch_size", "epochs", "schedule", "optimizer", "dataset"} \
        <= set(PACK_SHARED)
    assert not {"lr", "seed", "dropout", "momentum", "rho", "run_id"} & set(PACK_SHARED)
    a = {"model": "cnn", "lr": 0.1, "seed": 1}
    assert pack_key(a) == pack_key({"model": "cnn", "lr": 0.01, "seed": 2, "dropout": 0.5})
    assert pack_key(a) != pack_key({"model": "cnn", "batch_size": 64})
    assert pack_key(a) == pack_key({"model": "cnn", "batch_size": 128})  # the default
    with pytest.raises(ValueError, match="batch_size"):
        train_pack([{**BASE, "batch_size": 32}, {**BASE, "batch_size": 64}])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("move", [False, True])
def test_a_member_whose_checkpoint_was_trained_with_other_values_fails_alone(workdir, capfd,
                                                                             move):
    # member 1's run directory holds another configuration's checkpoint (member 0's, copied
    # or moved there): resuming it would train on under values its epoch did not have, and
    # starting over would write over it, so that member is refused with its one line, as a
    # run alone is, and its pack-mates train as they would without it. Before, the pack's
    # every member failed with member 1's line (copied), or, where the pack started from
    # scratch anyway (moved: member 0 has no checkpoint), the file was never checked and
    # member 1 trained over it.
    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "checkpoint": True, "run_id": f"c{k}"} for k, c in enumerate(members("adam"))]
    first = train_pack([{**c, "epochs": 1} for c in configs])
    assert [s["state"] for s in first] == ["finished"] * 3
    runs = workdir / "runs"
    foreign = (runs / "c0" / "checkpoint.pt").read_bytes()
    (runs / "c1" / "checkpoint.pt").write_bytes(foreign)
    if move:
        (runs / "c0" / "checkpoint.pt").unlink()
    capfd.readouterr()
    ended = []
    packed = train_pack(configs, [TrialHooks(ended=ended.append) for _ in configs])
    said = capfd.readouterr().err
    assert packed[1]["state"] == "failed" and packed[1]["run_id"] == "c1"
    assert packed[1]["error"].startswith("run c1: its checkpoint (epoch 1) was trained with")
    assert "lr=0.003 (now 0.0015)" in packed[1]["error"]
    assert ended[0] is packed[1]  # told first, before the others train
    assert (runs / "c1" / "checkpoint.pt").read_bytes() == foreign  # nothing written over it
    # moved: member 0 has no checkpoint left, member 2 one of epoch 1; member 2 resumes from
    # it (before, the pack started over from scratch, its epoch thrown away) and member 0,
    # which has nothing to lose, goes back to the sweep to start in a later claim
    assert "the pack resumes together" not in said, said
    trained = (2,) if move else (0, 2)
    assert all(packed[k]["state"] == "finished" and packed[k]["epochs_done"] == 2
               for k in trained), packed
    if move:
        assert packed[0]["state"] == "preempted" and packed[0]["epochs_done"] == 0
        assert packed[0]["sent_back"] == ("no checkpoint of it, and its pack resumes at epoch "
                                          "1: it goes back to the sweep, to start in a later "
                                          "claim"), packed[0]
        assert not (runs / "c0" / "checkpoint.pt").exists()
    for k in trained:  # alone, the same way: 1 epoch, then on to 2
        train({**configs[k], "epochs": 1, "run_id": f"s{k}"})
    straight = [train({**configs[k], "run_id": f"s{k}"}) for k in trained]
    for k, alone in zip(trained, straight):
        assert packed[k]["test/loss"] == pytest.approx(alone["test/loss"], rel=1e-4)
    with pytest.raises(SettingsMismatch, match="run c1"):  # alone: refused, as before
        train(configs[1])


@pytest.mark.timeout(300)
def test_a_pack_whose_every_member_is_refused_fails_each_with_its_own_line(workdir, capfd):
    # every member's run directory holds a pack-mate's checkpoints (the folders swapped
    # round): each is refused as a run alone would be. Before, the trial raised the first
    # member's refusal and the agents recorded every member failed with that line, naming
    # another run's values.
    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "checkpoint": True, "run_id": f"c{k}"} for k, c in enumerate(members("adam"))]
    train_pack([{**c, "epochs": 1} for c in configs])
    runs = workdir / "runs"
    files = {k: (runs / f"c{k}" / "checkpoint.pt").read_bytes() for k in range(3)}
    for k in range(3):  # c0 gets c1's, c1 gets c2's, c2 gets c0's
        (runs / f"c{k}" / "checkpoint.pt").write_bytes(files[(k + 1) % 3])
    ended = []
    capfd.readouterr()
    packed = train_pack(configs, [TrialHooks(ended=ended.append) for _ in configs])
    assert [s["state"] for s in packed] == ["failed"] * 3
    assert ended == packed
    lrs = [c["lr"] for c in configs]
    for k, summary in enumerate(packed):
        assert summary["run_id"] == f"c{k}"
        assert summary["error"].startswith(f"run c{k}: its checkpoint (epoch 1) was trained "
                                           "with"), summary["error"]
        assert f"lr={lrs[(k + 1) % 3]:g} (now {lrs[k]:g})" in summary["error"]
        assert (runs / f"c{k}" / "checkpoint.pt").read_bytes() == files[(k + 1) % 3]
    with pytest.raises(SettingsMismatch, match="run c1"):  # alone: refused, as before
        train(configs[1])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_compiled_pack_stays_compiled_once_a_member_leaves(workdir, monkeypatch):
    # compile=True: member 0 leaves after epoch 1 (a hyperband stop); the two left train
    # epoch 2 through a compiled forward of the narrowed model, to the same results as
    # uncompiled. Before, pack.select put the plain model back as the forward, and the rest
    # of the trial ran uncompiled. torch.compile is only watched: each call counted per
    # model size, the compiled module doing the work.
    calls: dict[int, int] = {}
    real_compile = torch.compile

    def watched(model, *args, **kwargs):
        compiled = real_compile(model, *args, **kwargs)

        def forward(x):
            calls[model.members] = calls.get(model.members, 0) + 1
            return compiled(x)
        return forward

    configs = [{**BASE, **dirs(workdir), "model": "dense", **MODEL_KINDS["dense"], **c,
                "train_subset": 256, "num_threads": 2, "run_id": f"m{k}"}
               for k, c in enumerate(members("sgd"))]
    stop_first = [TrialHooks(should_stop=lambda epoch, history: "asked" if epoch == 1
                             else None)] + [TrialHooks() for _ in configs[1:]]
    plain = train_pack([{**c, "run_id": f"p{k}"} for k, c in enumerate(configs)], stop_first)
    monkeypatch.setattr(torch, "compile", watched)
    compiled = train_pack([{**c, "compile": True} for c in configs], stop_first)
    assert [s["state"] for s in compiled] == ["stopped", "finished", "finished"]
    assert set(calls) == {3, 2} and calls[2] >= 1, calls  # epoch 2 ran the compiled 2-pack
    for fast, slow in zip(compiled, plain):
        assert_same(fast, slow)

"""Packed trials on a W&B sweep without a server: K of W&B's agents registered from one
process (wandb.apis.public.sweeps._register_agent / _agent_heartbeat, the two calls W&B's own
Python agent makes), their runs trained as one pack, each its own offline W&B run in the
sweep. Only the server's answers are scripted: one `run` command per agent that has none
alive, `stop` for a run the script names, `exit` once the proposals are gone."""

from __future__ import annotations

import json
import threading
import warnings

import pytest

import agent.trial.loop as trial_loop
from agent.sweep import wandb_pack
from agent.sweep.wandb_agent import run_wandb_sweep
from conftest import closed_offline_runs, script_wandb_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import wandb
    import wandb.apis.public.sweeps as public_sweeps


class ScriptedServer:
    """W&B's server as its agents see it: each agent that reports no run alive gets the next
    proposal; `stop_when_alive` runs get `stop` once an agent reports them alive; `exit`
    when no proposal is left. Records every agent's heartbeats."""

    def __init__(self, proposals: list[dict], stop_when_alive: tuple[str, ...] = (),
                 exit_when_done: bool = True):
        self.proposals = [(f"wbrun{i:03d}", params) for i, params in enumerate(proposals)]
        self.stop_when_alive = set(stop_when_alive)
        self.exit_when_done = exit_when_done
        self.agents: list[tuple[str, str | None, str | None]] = []
        self.alive: dict[str, set[str]] = {}  # agent id -> runs it reported alive
        self.handed: dict[str, str] = {}  # run id -> the agent it was handed to
        self.lock = threading.Lock()

    def install(self, monkeypatch):
        script_wandb_server(monkeypatch, self.register, self.heartbeat)
        monkeypatch.setattr(wandb_pack, "HEARTBEAT_S", 0.02)

    def register(self, api, host, *, sweep_id, project=None, entity=None):
        with self.lock:
            agent_id = f"agent{len(self.agents):03d}"
            self.agents.append((sweep_id, project, entity))
            self.alive[agent_id] = set()
            return {"id": agent_id}

    def heartbeat(self, api, agent_id, metrics, run_states):
        with self.lock:
            alive = {run for run, on in run_states.items() if on}
            self.alive[agent_id] |= alive
            for run in alive & self.stop_when_alive:
                self.stop_when_alive.discard(run)
                return [{"type": "stop", "run_id": run}]
            if alive:
                return []
            if self.proposals:
                run_id, params = self.proposals.pop(0)
                self.handed[run_id] = agent_id
                return [{"type": "run", "run_id": run_id,
                         "args": {k: {"value": v} for k, v in params.items()}}]
            return [{"type": "exit"}] if self.exit_when_done else []


COMMAND = ["${env}", "python", "-m", "agent.train", "--dataset=digits", "${args}"]


def sweep_config(lrs=(0.1, 0.03, 0.01)) -> dict:
    return {"command": COMMAND, "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"lr": {"values": list(lrs)}}}


@pytest.fixture
def packs(monkeypatch):
    """The run ids of every pack trained (the real train_pack, spied on)."""
    seen: list[list[str]] = []
    real = trial_loop.train_pack

    def spy(configs, hooks=None, sweep=None):
        seen.append([c["run_id"] for c in configs])
        return real(configs, hooks, sweep)

    monkeypatch.setattr(trial_loop, "train_pack", spy)
    return seen


def base(workdir, **more) -> dict:
    return {"model": "dense", "hidden": 16, "epochs": 2, "train_subset": 512,
            "batch_size": 128, "num_threads": 1, "histograms": False,
            "data_dir": str(workdir / "data"), **more}


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_runs_of_a_wandb_sweep_train_as_one_pack_each_its_own_run(workdir, monkeypatch, packs):
    proposals = [base(workdir, lr=lr, seed=seed)
                 for lr, seed in ((0.1, 1), (0.03, 2), (0.01, 3))]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw010", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(), pack=4)
    assert code == 0
    assert packs == [["wbrun000", "wbrun001", "wbrun002"]]  # one pack, in the order handed
    # one W&B agent per member, each registered with the sweep
    assert server.agents[:3] == [("sw010", "study", "team")] * 3
    # each run was reported alive by the agent it was handed to, while the pack trained
    for run_id, agent_id in server.handed.items():
        assert run_id in server.alive[agent_id], (run_id, server.alive)
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 3)}
    assert sorted(runs) == ["wbrun000", "wbrun001", "wbrun002"]
    for (run_id, run), proposal in zip(sorted(runs.items()), proposals):
        assert run.sweep_id == "sw010" and run.exit_code == 0
        assert run.project == "study"
        assert run.config["lr"] == proposal["lr"] and run.config["seed"] == proposal["seed"]
        assert run.config["dataset"] == "digits"  # the command's own argument
        assert [row["epoch"] for row in run.history if "val/acc" in row] == [1, 2]
        summary = json.loads((workdir / "data" / "runs" / run_id / "summary.json").read_text())
        assert summary["state"] == "finished" and summary["epochs_done"] == 2
        assert run.summary["test/acc"] == pytest.approx(summary["test/acc"])
    # members of one pack are distinct runs: their own lr, their own results
    assert len({runs[r].summary["train/loss"] for r in runs}) == 3


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_stop_from_wandb_ends_one_member_and_the_others_go_on(workdir, monkeypatch, packs):
    proposals = [base(workdir, lr=0.05, seed=s, epochs=40) for s in (1, 2, 3)]
    server = ScriptedServer(proposals, stop_when_alive=("wbrun001",))
    server.install(monkeypatch)
    assert run_wandb_sweep("team/study/sw011", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(),
                           pack=3) == 0
    assert packs == [["wbrun000", "wbrun001", "wbrun002"]]
    summaries = {r: json.loads((workdir / "data" / "runs" / r / "summary.json").read_text())
                 for r in ("wbrun000", "wbrun001", "wbrun002")}
    stopped = summaries["wbrun001"]
    assert stopped["state"] == "stopped" and stopped["stop_reason"] == wandb_pack.STOPPED_BY_WANDB
    assert 1 <= stopped["epochs_done"] < 40
    assert [summaries[r]["state"] for r in ("wbrun000", "wbrun002")] == ["finished"] * 2
    assert all(summaries[r]["epochs_done"] == 40 for r in ("wbrun000", "wbrun002"))
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 3)}
    assert all(run.exit_code == 0 for run in runs.values())  # stopped is not failed


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_runs_that_cannot_share_a_model_train_in_separate_packs_and_a_bad_one_fails_alone(
        workdir, monkeypatch, packs, capsys):
    proposals = [base(workdir, lr=0.1), base(workdir, model="cnn", channels=[4, 8]),
                 base(workdir, lr="fast"), base(workdir, lr=0.01)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw012", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(), pack=4)
    assert code == 0  # not every run failed
    assert packs == [["wbrun000", "wbrun003"], ["wbrun001"]]
    err = capsys.readouterr().err
    assert "run wbrun002 failed" in err and "lr" in err
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 4)}
    assert sorted(runs) == ["wbrun000", "wbrun001", "wbrun002", "wbrun003"]
    # the refused run is a failed W&B run of the sweep, its reason in its summary
    assert runs["wbrun002"].exit_code == 1 and "lr='fast'" in runs["wbrun002"].summary["error"]
    assert all(runs[r].exit_code == 0 for r in ("wbrun000", "wbrun001", "wbrun003"))


def _trained_alone(workdir, earlier: dict[str, float], damaged: str | None = None) -> None:
    """Runs `earlier` ({run id: lr}) trained one epoch alone (their checkpoints are there
    when W&B hands those ids out again), `damaged`'s checkpoint then cut short."""
    from agent.trial import train

    for run_id, lr in earlier.items():
        train({**base(workdir, lr=lr, epochs=1), "dataset": "digits", "sinks": [],
               "run_id": run_id})
    if damaged:
        path = workdir / "data" / "runs" / damaged / "checkpoint.pt"
        path.write_bytes(path.read_bytes()[:100])


def _packed_sweep(workdir, monkeypatch, lrs: tuple, sweep_id: str) -> int:
    """A scripted W&B sweep handing out a run of each lr in `lrs`, packed all together: the
    agent's exit code."""
    ScriptedServer([base(workdir, lr=lr) for lr in lrs]).install(monkeypatch)
    return run_wandb_sweep(f"team/study/{sweep_id}", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(),
                           pack=len(lrs))


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_member_whose_checkpoint_has_other_values_fails_alone_and_its_pack_trains(
        workdir, monkeypatch, packs, capsys):
    # wbrun001's run directory holds a checkpoint trained with lr 0.5 (a run W&B hands out
    # again after its folder was copied over): it fails alone, as a run alone would be
    # refused; before, every member of its pack failed with its line
    _trained_alone(workdir, {"wbrun001": 0.5})
    foreign = (workdir / "data" / "runs" / "wbrun001" / "checkpoint.pt").read_bytes()
    assert _packed_sweep(workdir, monkeypatch, (0.1, 0.03, 0.01), "sw015") == 0
    assert packs[1:] == [["wbrun000", "wbrun001", "wbrun002"]]  # after the one that trained it
    assert "agent: run wbrun001 failed (run wbrun001: its checkpoint (epoch 1) was trained " \
        "with lr=0.5 (now 0.03)" in capsys.readouterr().err
    assert (workdir / "data" / "runs" / "wbrun001" / "checkpoint.pt").read_bytes() == foreign
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 3)}
    assert runs["wbrun001"].exit_code == 1 and "lr=0.5" in runs["wbrun001"].summary["error"]
    for run_id in ("wbrun000", "wbrun002"):
        assert runs[run_id].exit_code == 0
        summary = json.loads((workdir / "data" / "runs" / run_id / "summary.json").read_text())
        assert summary["state"] == "finished" and summary["epochs_done"] == 2


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_pack_whose_every_member_is_refused_fails_each_run_with_its_own_line(
        workdir, monkeypatch, packs, capsys):
    # both runs' folders hold a checkpoint trained with other values (lr 0.5 and 0.3): each
    # fails with its own line; before, the trial raised the first member's refusal and both
    # runs failed with a traceback, wbrun001 with no reason of its own
    _trained_alone(workdir, {"wbrun000": 0.5, "wbrun001": 0.3})
    assert _packed_sweep(workdir, monkeypatch, (0.1, 0.03), "sw016") == 1
    said = capsys.readouterr().err
    assert packs[2:] == [["wbrun000", "wbrun001"]]  # after the two that trained them
    assert "Traceback" not in said and "agent: all 2 runs failed" in said
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 2)}
    for run_id, was, now in (("wbrun000", 0.5, 0.1), ("wbrun001", 0.3, 0.03)):
        line = f"run {run_id}: its checkpoint (epoch 1) was trained with lr={was} (now {now})"
        assert f"agent: run {run_id} failed ({line}" in said
        assert runs[run_id].exit_code == 1
        assert runs[run_id].summary["error"].startswith(line), runs[run_id].summary


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_member_left_behind_by_a_damaged_checkpoint_is_preempted_for_wandb_to_hand_out(
        workdir, monkeypatch, packs, capsys):
    # both runs trained an epoch before (W&B hands them out again); wbrun001's checkpoint is
    # cut short: wbrun000 resumes at its epoch 1, and wbrun001, left with no checkpoint of
    # it, ends preempted (W&B hands it out again) rather than taking wbrun000 back to 0
    _trained_alone(workdir, {"wbrun000": 0.1, "wbrun001": 0.03}, damaged="wbrun001")
    assert _packed_sweep(workdir, monkeypatch, (0.1, 0.03), "sw017") == 0
    path = workdir / "data" / "runs" / "wbrun001" / "checkpoint.pt"
    said = capsys.readouterr().err
    assert packs[2:] == [["wbrun000", "wbrun001"]]  # after the two that trained them
    assert "run wbrun001: " in said and "it goes back to the sweep, to resume from scratch" \
        in said and "Traceback" not in said, said
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 2)}
    assert runs["wbrun001"].preempting and runs["wbrun001"].exit_code == 1
    assert path.stat().st_size == 100  # its file untouched
    assert runs["wbrun000"].exit_code == 0 and not runs["wbrun000"].preempting
    summary = json.loads((workdir / "data" / "runs" / "wbrun000" / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_done"] == 2
    assert [row["epoch"] for row in runs["wbrun000"].history if "val/acc" in row] == [2]
    assert "run wbrun000: the pack resumes together" not in said


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_new_run_packed_with_a_resumed_one_goes_back_and_the_resumed_one_keeps_its_epoch(
        workdir, monkeypatch, packs, capsys):
    # W&B hands out a preempted run (wbrun000, a checkpoint of epoch 1) beside a new one
    # (wbrun001): wbrun000 resumes at its epoch, and wbrun001, which has nothing to lose,
    # ends preempted for W&B to hand out again. Before, the pack started both from scratch
    # and wrote over wbrun000's checkpoint, which the line sending a damaged member back
    # had promised it would resume from.
    _trained_alone(workdir, {"wbrun000": 0.1})
    assert _packed_sweep(workdir, monkeypatch, (0.1, 0.03), "sw018") == 0
    said = capsys.readouterr().err
    assert packs[1:] == [["wbrun000", "wbrun001"]], packs
    assert ("run wbrun001: no checkpoint of it, and its pack resumes at epoch 1: it goes back "
            "to the sweep, to start in a later claim") in said, said
    assert "the pack resumes together" not in said and "Traceback" not in said, said
    runs = {run.run_id: run for run in closed_offline_runs(workdir / "wandb", 2)}
    assert runs["wbrun001"].preempting and runs["wbrun001"].exit_code == 1
    assert not (workdir / "data" / "runs" / "wbrun001" / "checkpoint.pt").exists()
    summary = json.loads((workdir / "data" / "runs" / "wbrun000" / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs_done"] == 2
    assert [row["epoch"] for row in runs["wbrun000"].history if "val/acc" in row] == [2]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_count_bounds_the_runs_a_packed_agent_takes(workdir, monkeypatch, packs):
    proposals = [base(workdir, seed=s, epochs=1) for s in range(5)]
    server = ScriptedServer(proposals, exit_when_done=False)
    server.install(monkeypatch)
    assert run_wandb_sweep("team/study/sw013", count=3, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(),
                           pack=2) == 0
    assert packs == [["wbrun000", "wbrun001"], ["wbrun002"]]
    assert len(server.proposals) == 2  # the rest were never handed out
    assert len(server.agents) == 2  # no more W&B agents than a pack's members


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_pack_auto_measures_the_first_run_of_a_kind_then_fills_its_packs(workdir, monkeypatch,
                                                                          packs, capsys):
    lrs = [0.02 * (s + 1) for s in range(5)]
    proposals = [base(workdir, seed=s, lr=lr) for s, lr in enumerate(lrs)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    assert run_wandb_sweep("team/study/sw014", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(lrs),
                           pack=None) == 0
    err = capsys.readouterr().err
    (said,) = [line for line in err.splitlines() if "--pack auto for" in line]
    size = int(said.split("packs of ")[1].split()[0])
    measured = " ".join(err.split("images/s by size:")[1].split()).rstrip(")")
    sizes = [int(part.split(":")[0]) for part in measured.split(", ")]
    assert sizes[0] == 1 and max(sizes) <= 5  # from a run alone up to the grid's 5 runs
    # every run trained once, in packs of the size it settled on, in the order handed out
    assert [run for pack in packs for run in pack] == [f"wbrun{i:03d}" for i in range(5)]
    assert [len(pack) for pack in packs] == [min(size, 5 - i) for i in range(0, 5, size)]
    # one W&B agent per member of the largest pack
    assert len(server.agents) == min(size, 5)
    runs = closed_offline_runs(workdir / "wandb", 5)
    assert all(run.exit_code == 0 and run.sweep_id == "sw014" for run in runs)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_an_interrupted_pack_preempts_every_member_and_takes_no_more_runs(workdir,
                                                                          monkeypatch, packs):
    proposals = [base(workdir, seed=s, epochs=200) for s in range(4)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    stop = threading.Event()
    beat = server.heartbeat

    def heartbeat(api, agent_id, metrics, run_states):  # SIGTERM once the pack trains
        if any(run_states.values()):
            stop.set()
        return beat(api, agent_id, metrics, run_states)

    monkeypatch.setattr(public_sweeps, "_agent_heartbeat", heartbeat)
    agent = wandb_pack.PackedWandbAgent(wandb.Api(), "sw015", "team", "study", sweep_config(),
                                        2, None, stop.is_set)
    agent.run()
    assert packs == [["wbrun000", "wbrun001"]]
    assert agent.outcomes == ["preempted", "preempted"]
    assert len(server.proposals) == 2  # nothing more was taken
    runs = closed_offline_runs(workdir / "wandb", 2)
    assert all(run.exit_code == 1 for run in runs)  # preempted: W&B hands the run out again


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_deleted_sweep_ends_the_agent_after_its_pack(workdir, monkeypatch, packs, capsys):
    from wandb.sdk.sweeps import SweepNotFoundError

    server = ScriptedServer([base(workdir, seed=s) for s in range(3)], exit_when_done=False)
    server.install(monkeypatch)
    beat = server.heartbeat

    def heartbeat(api, agent_id, metrics, run_states):  # deleted once the runs are out
        if not server.proposals and not any(run_states.values()):
            raise SweepNotFoundError("sweep not found")
        return beat(api, agent_id, metrics, run_states)

    monkeypatch.setattr(public_sweeps, "_agent_heartbeat", heartbeat)
    assert run_wandb_sweep("team/study/sw016", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(),
                           pack=4) == 0
    assert packs == [["wbrun000", "wbrun001", "wbrun002"]]
    assert "W&B sweep sw016 was deleted" in capsys.readouterr().err


def test_the_two_wandb_calls_keep_the_signatures_the_agent_calls_them_with():
    """The scripted server above stands in for these two functions of wandb's own agent: if
    a wandb upgrade changes how they are called, this fails rather than users' sweeps."""
    import inspect

    register = inspect.signature(public_sweeps._register_agent)
    register.bind(object(), "host", sweep_id="s", project="p", entity="e")
    heartbeat = inspect.signature(public_sweeps._agent_heartbeat)
    heartbeat.bind(object(), "agent-id", {}, {"run": True})
    from wandb.sdk.sweeps import SweepNotFoundError  # what a deleted sweep raises

    assert issubclass(SweepNotFoundError, Exception)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_pack_too_large_for_memory_trains_in_packs_that_fit(workdir, monkeypatch, packs):
    """--pack 4 of a model of which one trial holds two members but not three: packs of two
    (the others wait in their slots), not one pack whose memory check fails all four. One
    training image each: every trial stops at its own training-set check before it
    allocates anything, so the test needs no memory."""
    from test_packed_sweeps import _hidden_for_packs_of_two

    hidden = _hidden_for_packs_of_two()
    if hidden is None:
        pytest.skip("this machine's memory holds three of the widest dense models allowed")
    proposals = [base(workdir, hidden=hidden, train_subset=1, epochs=1, device="cpu", seed=s)
                 for s in (1, 2, 3, 4)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    run_wandb_sweep("team/study/sw020", count=None, project=None, interrupted=lambda: False,
                    sweep_config=sweep_config(), pack=4)
    assert packs == [["wbrun000", "wbrun001"], ["wbrun002", "wbrun003"]]


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("pack", [1, 2])
def test_a_run_for_a_device_this_machine_lacks_fails_alone_and_the_agent_goes_on(
        workdir, monkeypatch, packs, capsys, pack):
    """A run that asks for `device: cuda` on a machine without one fails in its own trial,
    with its reason, and the next run trains: sizing a pack to the device's memory (which
    needs the device) is no reason to stop the agent, and a run alone needs no sizing."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has the GPU the run asks for")
    proposals = [base(workdir, device="cuda", epochs=1), base(workdir, seed=2, epochs=1)]
    server = ScriptedServer(proposals)
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw021", count=None, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(), pack=pack)
    assert code == 0, capsys.readouterr().err  # not every run failed
    assert ["wbrun001"] in packs, packs
    assert "device='cuda' is not available" in capsys.readouterr().err

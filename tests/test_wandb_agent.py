"""The online path without a server: our agent on a W&B sweep, one run at a time (no --pack),
registers with W&B's agent calls (wandb.apis.public.sweeps._register_agent / _agent_heartbeat,
the two W&B's own agents make) and trains each run it is handed as its own offline W&B run,
read back. Only the server's answers are scripted: registering the agent and the heartbeat
that hands out runs (tests/test_wandb_loopback.py has a server on loopback instead)."""

from __future__ import annotations

import json

import pytest

from agent.sweep import wandb_pack
from agent.sweep.wandb_agent import run_wandb_sweep
from conftest import closed_offline_runs, script_wandb_server


class ScriptedServer:
    """W&B's server as the agent sees it: one `run` command per proposal, then nothing."""

    def __init__(self, proposals: list[dict]):
        self.commands = [{"type": "run", "run_id": f"wbrun{i:03d}",
                          "args": {k: {"value": v} for k, v in params.items()}}
                         for i, params in enumerate(proposals)]
        self.registered = []

    def install(self, monkeypatch):
        script_wandb_server(monkeypatch, self.register, self.heartbeat)
        monkeypatch.setattr(wandb_pack, "HEARTBEAT_S", 0.1)

    def register(self, api, host, *, sweep_id, project=None, entity=None):
        self.registered.append((sweep_id, project, entity))
        return {"id": "agent001"}

    def heartbeat(self, api, agent_id, metrics, run_states):
        return [self.commands.pop(0)] if self.commands else []


COMMAND = ["${env}", "python", "-m", "agent.train", "--dataset=digits", "--epochs=1",
           "${args_no_boolean_flags}"]


def sweep_config(**parameters) -> dict:
    return {"command": COMMAND, "method": "random",
            "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {name: {"value": value} for name, value in parameters.items()}}


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_our_agent_trains_the_run_a_wandb_sweep_hands_it(workdir, monkeypatch):
    proposal = {"model": "dense", "hidden": 32, "lr": 0.02, "batch_size": 64,
                "batch_norm": False, "augment": False, "train_subset": 512,
                "run_name": "named-by-sweep", "group": "group-by-sweep",
                "run_dir": str(workdir / "sweep_runs"), "log_dir": str(workdir / "sweep_logs"),
                "sinks": ["wandb", "tensorboard"], "data_dir": str(workdir / "data")}
    server = ScriptedServer([proposal])
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw001", count=1, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(**proposal))
    assert code == 0
    assert server.registered == [("sw001", "study", "team")]
    (run,) = closed_offline_runs(workdir / "wandb", 1)
    assert run.run_id == "wbrun000" and run.exit_code == 0
    for key, value in proposal.items():  # the W&B run's config is the proposal
        assert run.config[key] == value, key
    assert run.config["dataset"] == "digits" and run.config["epochs"] == 1  # command's own args
    assert run.name == "named-by-sweep" and run.group == "group-by-sweep"
    # the trial trained with those values, and put its files where the sweep said
    summary = json.loads((workdir / "sweep_runs" / "wbrun000" / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["epochs_done"] == 1
    assert summary["run_name"] == "named-by-sweep" and summary["group"] == "group-by-sweep"
    assert (workdir / "sweep_logs" / "group-by-sweep" / "named-by-sweep").is_dir()
    assert [row["batch_size"] for row in run.history if "val/acc" in row] == [64]
    assert not (workdir / "data" / "runs").exists() and not (workdir / "data" / "logs").exists()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_an_agent_whose_every_run_failed_exits_non_zero(workdir, monkeypatch):
    bad = {"lr": "fast", "data_dir": str(workdir / "data")}  # a W&B sweep made elsewhere
    server = ScriptedServer([bad, bad])
    server.install(monkeypatch)
    code = run_wandb_sweep("team/study/sw002", count=2, project=None,
                           interrupted=lambda: False, sweep_config=sweep_config(**bad))
    assert code == 1

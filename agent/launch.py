"""`./run_sweep.sh TARGET [options]`: start agents on every GPU for a sweep.

TARGET is a sweep YAML (a new local sweep, no W&B server needed), an existing local sweep
(its directory or id, to add agents from another shell), or a W&B sweep id
(`entity/project/id` or a bare id with --project) for agents that pull from W&B's server.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from agent import submit
from agent.errors import UserError, exit_on_user_error
from agent.sweep_store import SWEEPS_DIR, SweepStore, create_store, open_store


def visible_gpus() -> list[str]:
    """GPU indices this process may use (CUDA_VISIBLE_DEVICES, else all torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def agent_slots(gpus: list[str], per_gpu: int, cpu_agents: int) -> list[dict]:
    """One environment per agent: its own CUDA_VISIBLE_DEVICES, or CPU threads shared out."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus for _ in range(per_gpu)]
    threads = max(1, (os.cpu_count() or 1) // cpu_agents)
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}
            for _ in range(cpu_agents)]


def new_local_sweep(yaml_path: str) -> SweepStore:
    from agent.sweep_config import load_sweep_config
    from agent.trial import new_run_id

    config = load_sweep_config(yaml_path)
    sweep_id = new_run_id()
    name = config.get("name") or Path(yaml_path).stem
    store = create_store(SWEEPS_DIR / sweep_id, sweep_id, name, config)
    print(f"Created local sweep {sweep_id} ({name}) in {store.directory}")
    print(f"Add agents from another shell: ./run_sweep.sh {sweep_id}")
    return store


def check_wandb_sweep(target: str, project: str | None) -> None:
    """Before any agent starts: the target must be a W&B sweep we can reach."""
    from agent.sinks.wandb_sink import has_credentials

    nowhere = f"sweep={target!r}: not a YAML file, not a local sweep"
    if target.count("/") != 2 and not ("/" not in target and project):
        raise UserError(f"{nowhere}, and not a W&B sweep path (entity/project/id, or an id "
                        "with --project)")
    if not has_credentials():
        raise UserError(f"{nowhere}, and W&B has no API key here (run `wandb login`, or set "
                        "WANDB_API_KEY) to reach it as a W&B sweep")
    import wandb

    path = target if "/" in target else f"{project}/{target}"
    try:
        wandb.Api().sweep(path)
    except Exception as error:  # unknown sweep, no network: either way one line
        raise UserError(f"sweep={target!r}: W&B could not find it "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:100]})") from None


def start_agents(command: list[str], slots: list[dict]) -> int:
    """Run one agent process per slot; Ctrl-C or SIGTERM is passed on to every agent."""
    agents = [subprocess.Popen(command, env={**os.environ, **slot}) for slot in slots]

    def pass_on(signum, frame):
        for agent in agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, pass_on)
    signal.signal(signal.SIGTERM, pass_on)
    codes = [agent.wait() for agent in agents]
    return max(codes, default=0)


def report_local(store: SweepStore) -> None:
    from agent.status import best_run, render_status

    render_status(store)
    best = best_run(store)
    print(f"Results: sweep store {store.path}, TensorBoard logs in data/logs/"
          f"{store.sweep()['name']}/ (./run_tensorboard.sh), W&B offline runs in wandb/ "
          "(wandb sync wandb/offline-run-*)")
    if best is not None:
        print(f"Best run: {best['id']} {best['metric']}={best['value']:.4f} "
              f"with {best['config']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run_sweep.sh", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="sweeps/x.yaml, a local sweep id or directory, or a "
                        "W&B sweep id")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU indices "
                        "(default: all visible)")
    parser.add_argument("--agents-per-gpu", type=int, default=1)
    parser.add_argument("--agents", type=int, default=1,
                        help="agents on a machine without GPUs (default 1)")
    parser.add_argument("--count", type=int, default=None, help="runs per agent")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT"))
    parser.add_argument("--heartbeat-timeout", type=float, default=None,
                        help="seconds before a silent run counts as crashed")
    submit.add_submit_options(parser)
    args = parser.parse_args(argv)
    if args.agents_per_gpu < 1 or args.agents < 1:
        raise UserError("--agents-per-gpu and --agents must be >= 1")
    if submit.requested(args):  # --pbs/--slurm: job scripts for a scheduler, no agents here
        return submit.submit_from_args(args, argv)

    gpus = args.gpus.split(",") if args.gpus else visible_gpus()
    slots = agent_slots(gpus, args.agents_per_gpu, args.agents)
    agent_cmd = [sys.executable, "-m", "agent.agent"]
    if args.count:
        agent_cmd += ["--count", str(args.count)]
    if args.heartbeat_timeout:
        agent_cmd += ["--heartbeat-timeout", str(args.heartbeat_timeout)]

    target = args.target
    if target.endswith((".yaml", ".yml")):
        store = new_local_sweep(target)
    elif (Path(target) / "sweep.db").exists() or (SWEEPS_DIR / target / "sweep.db").exists():
        store = open_store(target)
    else:
        check_wandb_sweep(target, args.project)
        wandb_cmd = agent_cmd + ["--wandb", target]
        if args.project:
            wandb_cmd += ["--project", args.project]
        print(f"Starting {len(slots)} agent(s) on W&B sweep {target}")
        return start_agents(wandb_cmd, slots)

    print(f"Starting {len(slots)} agent(s) on "
          + (", ".join(f"GPU {s['CUDA_VISIBLE_DEVICES']}" for s in slots) if gpus
             else "the CPU"))
    code = start_agents(agent_cmd + [str(store.directory)], slots)
    report_local(store)
    return code


if __name__ == "__main__":
    raise SystemExit(exit_on_user_error(main))

"""`./run_sweep.sh TARGET [options]`: start agents on every GPU for a sweep.

TARGET is a sweep YAML (a new local sweep, no W&B server needed), an existing local sweep
(its directory or id, to add agents from another shell), or a W&B sweep id
(`entity/project/id` or a bare id with --project) for agents that pull from W&B's server.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

from agent.cluster import submit
from agent.commands import module_command, script
from agent.params import BY_NAME
from agent.sweep.agent_loop import stop_signals
from agent.sweep.controller import (
    HEARTBEAT_S,
    HEARTBEAT_TIMEOUT_S,
    MIN_BEATS_PER_TIMEOUT,
    check_heartbeat,
    crash_outcome,
    repair_ended_agents,
)
from agent.sweep.pack_size import AGENTS_PER_DEVICE, parse_pack
from agent.sweep.store import StoreError, SweepStore
from agent.sweep.target import (
    SweepTarget,
    check_wandb_sweep,
    checked_sweep_file,
    create_local_sweep,
    hint_options,
    print_notes,
    resolve_target,
    sweep_name,
)
from agent.trial.sinks import AGENTS_SHARING_OUTPUT
from util.errors import (
    INTERRUPTED_EXIT_CODE,
    SWEEP_CTRL_C_NOTE,
    USAGE_EXIT_CODE,
    CommandParser,
    UserError,
    brief,
    ctrl_c_ends_at_once,
    exit_command,
    int_option,
    one_line,
    stop_at_next_step,
)


def visible_gpus() -> list[str]:
    """GPU indices this process may use (CUDA_VISIBLE_DEVICES, else all torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"):
        return []  # no NVIDIA or ROCm device node: no GPU, and no need to load torch to see it
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def check_gpus(text: str) -> None:
    """`--gpus` names GPUs as CUDA_VISIBLE_DEVICES does: indices or GPU-/MIG- UUIDs."""
    items = text.split(",")
    if len(items) > MAX_AGENTS or not all(re.fullmatch(r"[0-9]+|(GPU|MIG)-[A-Za-z0-9/-]+",
                                                       item.strip()) for item in items):
        raise UserError(f"--gpus={brief(text)}: expected comma-separated GPU indices "
                        "(0,1) or UUIDs, as CUDA_VISIBLE_DEVICES takes them")


def check_gpus_exist(gpus: list[str]) -> None:
    """UserError unless each GPU named by --gpus is one this machine has: on a machine
    without a GPU, agents on "GPU 0" would train on the CPU while saying otherwise. Where
    CUDA_VISIBLE_DEVICES is set (a batch job's allocation), the GPUs must be among those it
    lists; else indices must be below CUDA's count. UUIDs are left to CUDA."""
    available = visible_gpus()
    named = ",".join(gpus)
    if not available:
        raise UserError(f"--gpus={named}: this machine has no GPU that CUDA sees; leave --gpus "
                        "out to train on the CPU")
    allocated = os.environ.get("CUDA_VISIBLE_DEVICES") is not None
    for gpu in (g.strip() for g in gpus):
        if allocated and gpu not in available:
            raise UserError(f"--gpus={named}: GPU {gpu} is not among CUDA_VISIBLE_DEVICES="
                            f"{','.join(available)}")
        if not allocated and gpu.isdigit() and int(gpu) >= len(available):
            raise UserError(f"--gpus={named}: there is no GPU {gpu}; this machine has "
                            f"{len(available)} (0-{len(available) - 1})")


def trainer_values(config: dict, *names: str) -> list[set | None] | None:
    """The values each parameter `names` can take in the runs of our trainer in the sweep
    `config` (config.possible_values: None for a distribution); None for another program's
    sweep, or a command that cannot be read (its runs say what is wrong)."""
    from agent.sweep.config import possible_values
    from agent.sweep.program import runs_our_trainer

    try:
        if not runs_our_trainer(config):
            return None
        return [possible_values(config, name) for name in names]
    except (UserError, ValueError, TypeError, OSError):
        return None


def check_sweep_devices(where: str, config: dict, gpus: str | None = None) -> None:
    """UserError (one line) when runs of our trainer in the sweep `config` can ask for a
    device the agents started here lack: `device: cuda` (its value, one of its values, or
    the command's --device) on a machine without a GPU, `mps` off Apple silicon. Each such
    run would fail with that reason, and the agent stop after 3 of them. `gpus`: --gpus
    (already checked to exist), else every GPU visible here. A sweep of another program
    is left alone: its parameters mean what that program makes of them."""
    (wanted,) = trainer_values(config, "device") or [None]
    if not wanted:
        return
    place = "parameters.device" if "device" in (config.get("parameters") or {}) else \
        "command"
    if "cuda" in wanted and not gpus and not visible_gpus():
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        have = (f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU (CPU only)"
                if hidden is not None else "this machine has no GPU that CUDA sees (CPU only)")
        raise UserError(f"{where}: {place}: device=cuda needs a GPU, and {have}: use auto "
                        "(a GPU where there is one, else the CPU) or cpu")
    if "mps" in wanted:
        import torch

        if not torch.backends.mps.is_available():
            count = len(gpus.split(",")) if gpus else len(visible_gpus())
            have = f"{count} CUDA GPU(s)" if count else "CPU only"
            raise UserError(f"{where}: {place}: device=mps needs Apple silicon's GPU (MPS), "
                            f"and this machine has none ({have}): use auto or cpu")


def prepare_sweep_data(where: str, config: dict) -> list[str]:
    """Each dataset the runs of our trainer in the sweep `config` read (every `dataset` value
    with its `data_dir` and `dataset_dir`), found, checked and cached here once, before a
    sweep is made or an agent starts (util/datasets.py: the cache, then the files, then a
    download). A set missing or damaged, or a download that fails, is one UserError line
    here, where otherwise each run would fail with it (the agent stopping after 3, a sweep of
    failed runs left); and agents started together read the cache rather than each
    downloading into one folder. Sets already cached, and scikit-learn's digits (it comes
    with the package), are not read. Returns the names
    prepared. Nothing is checked where a distribution draws one of these parameters, or for
    another program's sweep."""
    from util.datasets import is_cached, load_decoded

    prepared = []
    for name, data_dir, dataset_dir in sweep_datasets(config):
        if name == "digits" or is_cached(name, data_dir):
            continue  # digits comes with scikit-learn: nothing to find or download
        existed = Path(data_dir).exists()
        try:
            load_decoded(name, data_dir, dataset_dir)
        except UserError as error:
            if not existed:  # made by the failed download: nothing is left half-written
                shutil.rmtree(data_dir, ignore_errors=True)
            raise UserError(f"{where}: {error}") from None
        prepared.append(name)
    return prepared


def sweep_datasets(config: dict) -> list[tuple[str, str, str]]:
    """(dataset, data_dir, dataset_dir) of every combination the runs of our trainer in the
    sweep `config` can take; none where a distribution draws one of them, or for another
    program's sweep."""
    from itertools import product

    choices = trainer_values(config, "dataset", "data_dir", "dataset_dir")
    if choices is None or any(values is None for values in choices):
        return []
    return list(product(*(sorted(map(str, v)) for v in choices)))


def sweep_data_notes(where: str, config: dict) -> list[str]:
    """What prepare_sweep_data would do for the sweep `config`, done without writing or
    fetching anything (a dry run): the files of each set not cached are found and checked
    (UserError, one line, as there); a note for each set it would download."""
    from util.datasets import found_without_download

    notes = []
    for name, data_dir, dataset_dir in sweep_datasets(config):
        try:
            if not found_without_download(name, data_dir, dataset_dir):
                notes.append(f"note: dataset={name!r}: no files in data_dir={data_dir!r}"
                             + (f" or dataset_dir={dataset_dir!r}" if dataset_dir else "")
                             + f": a launch downloads them into {data_dir!r} first")
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
    return notes


def check_sweep_folders(where: str, config: dict) -> None:
    """UserError (one line) when a folder the runs of our trainer in the sweep `config` write
    to cannot be made, or (run_dir, log_dir) exists but takes no new entry: each `data_dir`
    (the decoded cache), `run_dir` (checkpoints) and, where
    the runs can log to TensorBoard, `log_dir` the sweep gives (or the default), checked as
    the trial's pre-flight checks it (agent/trial/preflight.py). Each run would fail with that
    reason, a sweep of failed runs left; digits, which prepare_sweep_data leaves alone, too.
    Nothing is checked where a distribution draws one of these, or for another program."""
    from agent.trial.preflight import WRITTEN_FOLDERS, folder_problem

    choices = trainer_values(config, "data_dir", "run_dir", "log_dir", "sinks")
    if choices is None:
        return
    *folders, sinks = choices
    logs = sinks is None or any(value is None or "tensorboard" in value for value in sinks)
    for name, values in zip(("data_dir", "run_dir", "log_dir"), folders):
        if values is None or (name == "log_dir" and not logs):
            continue
        for value in sorted(str(BY_NAME[name].default if v is None else v) for v in values):
            problem = folder_problem(Path(value or "."), written=name in WRITTEN_FOLDERS)
            if problem:
                raise UserError(f"{where}: {name}={value!r}: {problem}")


def check_runnable(where: str, config: dict, gpus: str | None,
                   dry_run: bool = False) -> list[str]:
    """What the agents started here need of the sweep `config` before one starts: the
    devices its runs ask for, the folders they write to and the data they read
    (check_sweep_devices, check_sweep_folders, prepare_sweep_data). UserError, one line.
    `dry_run`: the data is checked, not cached or downloaded; returns the notes on what a
    launch would download (sweep_data_notes), else []."""
    check_sweep_devices(where, config, gpus)
    check_sweep_folders(where, config)
    if dry_run:
        return sweep_data_notes(where, config)
    prepare_sweep_data(where, config)
    return []


def agent_slots(gpus: list[str], per_gpu: int, cpu_agents: int) -> list[dict]:
    """One environment per agent: its own CUDA_VISIBLE_DEVICES, or CPU threads shared out,
    and how many agents share its device (their packs are sized to a share of its memory)."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu, AGENTS_PER_DEVICE: str(per_gpu)}
                for gpu in gpus for _ in range(per_gpu)]
    threads = max(1, (os.cpu_count() or 1) // cpu_agents)
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads),
             AGENTS_PER_DEVICE: str(cpu_agents)} for _ in range(cpu_agents)]


# How the agents start: with SIGINT ignored (an ignored signal stays ignored across exec) until
# their own handlers are in. A Ctrl-C reaches them from the launcher, passed on as SIGTERM;
# the terminal's own SIGINT to the whole group would otherwise raise KeyboardInterrupt
# wherever an agent was loading its modules, inside numpy's import a traceback of an
# ImportError and exit 1.
IGNORING_CTRL_C = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh"]


def start_agents(command: list[str], slots: list[dict],
                 store: SweepStore | None = None) -> int:
    """Run one agent process per slot; Ctrl-C, SIGTERM or SIGHUP (the terminal closed; not
    under nohup) is passed on to every agent as SIGTERM. After one, a Ctrl-C ends the launch
    at once (stop_at_next_step): this process and, the terminal's Ctrl-C reaching the whole
    group, every agent (theirs end them at once too), the runs they trained left `running`
    for the next agent of this host to repair at its start (AgentLock). Once all have
    exited, runs of `store` they left running (an agent killed mid-trial) are marked crashed
    and re-queued at once, not after the heartbeat timeout. Agents that share this terminal
    are told so (their epoch lines name their run). The exit code: launcher_exit_code."""
    agents: list[subprocess.Popen] = []
    received: list[int] = []

    def pass_on(signum):
        for agent in agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)

    # In place before the first agent starts: a Ctrl-C as they start is passed on too, not
    # a KeyboardInterrupt here that would leave them running unwatched
    stop_at_next_step(received, stop_signals(), note=SWEEP_CTRL_C_NOTE, also=pass_on)
    shared = {AGENTS_SHARING_OUTPUT: str(len(slots))} if len(slots) > 1 else {}
    for slot in slots:
        if received:
            break  # no more agents once stopped
        agents.append(subprocess.Popen(IGNORING_CTRL_C + command,
                                       env={**os.environ, **slot, **shared}))
        if received:  # the signal came while this one started: it was not passed on to it
            agents[-1].send_signal(signal.SIGTERM)
    codes = [agent.wait() for agent in agents]
    if store is not None:
        repair_left_runs(store, [agent.pid for agent in agents])
    return launcher_exit_code([agent.pid for agent in agents], codes,
                              interrupted=signal.SIGINT in received,
                              stopped=bool(set(received) & {signal.SIGTERM, signal.SIGHUP}))


def repair_left_runs(store: SweepStore, pids: list[int]) -> None:
    """Runs of the agents `pids` (of this host, all ended) still `running` in the store:
    crashed and re-queued now, one line each."""
    host = socket.gethostname()
    try:
        ended = repair_ended_agents(store, {f"{host}:{pid}" for pid in pids})
    except StoreError:  # a full disk, say: the agent's own line said why and that its runs
        return  # stay running, which the next agent finds silent and repairs (a 2nd line)
    for run_id in ended:
        outcome = crash_outcome(store, [run_id])
        print(f"run {run_id}: its agent ended mid-trial; marked crashed, "
              + (f"{outcome} by the next agent" if outcome.startswith("repeated") else outcome),
              file=sys.stderr)


def runs_here(slots: list[dict], gpus: list[str]) -> bool:
    """Whether the one agent of this launch can train in the launcher's own process: one
    slot on the devices this process already sees (the CPU alone, or the one GPU visible).
    A second interpreter would import torch, the sweep engine (scipy) and wandb again
    (~3 s on a laptop's CPU) before its first trial."""
    if len(slots) != 1:
        return False
    return not gpus or visible_gpus() == [slots[0]["CUDA_VISIBLE_DEVICES"]]


def run_agent_here(agent_argv: list[str], slot: dict, store: SweepStore | None = None) -> int:
    """The agent of `agent_argv` (agent_loop's options) in this process, with the slot's
    environment; its exit code (2 and one line for a UserError, as its own process gives;
    130 after a Ctrl-C, as start_agents gives). It handles SIGTERM and Ctrl-C itself, as a
    separate agent does; the launcher's own handlers are put back once it returns, but for
    Ctrl-C once one of them came: the next one ends the launcher at once."""
    os.environ.update(slot)
    if "OMP_NUM_THREADS" in slot and "torch" in sys.modules:  # read at torch's import only
        sys.modules["torch"].set_num_threads(int(slot["OMP_NUM_THREADS"]))
    from agent.sweep import agent_loop

    handlers = {s: signal.getsignal(s) for s in stop_signals()}
    try:
        return agent_loop.main(agent_argv)  # 130 after a Ctrl-C, as its own process gives
    except KeyboardInterrupt:  # a Ctrl-C before the agent's own handlers were in: no run
        return INTERRUPTED_EXIT_CODE  # was claimed yet
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except Exception:  # as an agent process dies of it: its traceback, exit 1, then the table
        traceback.print_exc()
        return 1
    finally:
        stopped = ctrl_c_ends_at_once()
        for signum, handler in handlers.items():
            if not (stopped and signum == signal.SIGINT):
                signal.signal(signum, handler)
        if store is not None:
            repair_left_runs(store, [os.getpid()])


def launcher_exit_code(pids: list[int], codes: list[int], interrupted: bool = False,
                       stopped: bool = False) -> int:
    """The agents' worst exit code; an agent killed by signal N (Popen's code -N) gives
    128 + N, as a shell reports it, with one line on stderr per agent that died so.
    `interrupted`: the launcher had a Ctrl-C, so the code is at least 130 (as for a Ctrl-C
    at any other moment), and an agent killed by it (SIGINT) or by the SIGTERM passed on for
    it is not named: that agent died before its own handlers were in (its modules loading),
    with no run claimed, and its end is the Ctrl-C's, nothing else. `stopped`: the launcher
    had a SIGTERM or SIGHUP (a scheduler's walltime or preemption signals every process of
    the job, `timeout` its process group): an agent that one killed so is likewise the
    stop's, not named, and the launch ends with 0 as a preemption does. An agent that a
    SIGTERM killed while the launcher had none (sent to that agent alone) is still named."""
    worst = INTERRUPTED_EXIT_CODE if interrupted else 0
    for pid, code in zip(pids, codes):
        if code < 0 and interrupted and -code in (signal.SIGINT, signal.SIGTERM):
            continue
        if code < 0 and stopped and -code in (signal.SIGTERM, signal.SIGHUP):
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            print(f"agent {pid} was killed by {name}", file=sys.stderr)
            code = 128 - code
        worst = max(worst, code)
    return worst


class _Closed(Exception):
    """A Ctrl-C, SIGTERM or SIGHUP while the closing lines print."""


def report_local(store: SweepStore, options: str = "") -> None:
    """The sweep's table and the next commands. Every agent has ended and the store holds
    everything, so a Ctrl-C, SIGTERM or SIGHUP now (a batch job's walltime as the sweep
    ends, a terminal closing) cuts the lines short without a traceback, and the launcher
    ends with its agents' code, not as killed by the signal; but a Ctrl-C after the launch
    was stopped (the user's second) ends it at once, saying nothing more (stop_at_next_step)."""
    from agent.sweep.status import closing_lines, render_status

    def closed(signum, frame):
        raise _Closed

    handlers = {s: signal.signal(s, closed) for s in stop_signals()
                if not (s == signal.SIGINT and ctrl_c_ends_at_once())}
    try:
        render_status(store, limit=10)
        print("\n".join(closing_lines(store, options)))
    except _Closed:
        print(f"\n(stopped; the sweep is saved: {module_command('agent.status')} "
              f"{store.sweep().id})", file=sys.stderr)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def agent_options(args: argparse.Namespace) -> str:
    """The options that shape this launch's agents, as a command-line tail (" --pack 4"):
    the hints to add agents or to go on with a sweep repeat them, so that a sweep started
    packed goes on packed."""
    tail = ""
    if args.pack != "1":
        tail += f" --pack {args.pack}"
    if args.project:  # agents added without it would log their runs to another project
        tail += f" --project {shlex.quote(args.project)}"
    if args.gpus:
        tail += f" --gpus {args.gpus}"
    if args.agents_per_gpu != 1:
        tail += f" --agents-per-gpu {args.agents_per_gpu}"
    if args.agents != 1:
        tail += f" --agents {args.agents}"
    for option, value in (("--heartbeat", args.heartbeat),
                          ("--heartbeat-timeout", args.heartbeat_timeout)):
        if value is not None:
            tail += f" {option} {value:.15g}"
    return tail


MAX_AGENTS = 64  # agents of one launcher (per GPU, or on the CPU)
MAX_COUNT = 10**9  # runs per agent: any number a sweep can have


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    """The launcher's options, every one checked (UserError, one line): the command's one
    validation edge before anything is read, created or started."""
    parser = CommandParser(prog="./run_sweep.sh", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="sweeps/x.yaml, a local sweep id or directory, or a "
                        "W&B sweep id")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU indices "
                        "(default: all visible)")
    parser.add_argument("--agents-per-gpu", type=int_option(1, MAX_AGENTS), default=1)
    parser.add_argument("--agents", type=int_option(1, MAX_AGENTS), default=1,
                        help="agents on a machine without GPUs (default 1)")
    parser.add_argument("--count", type=int_option(1, MAX_COUNT), default=None,
                        help="runs per agent")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT"),
                        help="W&B project: of a bare W&B sweep id, and where a local sweep's "
                        "runs go (default: WANDB_PROJECT, else the sweep's `project`, else "
                        "hp-study)")
    parser.add_argument("--heartbeat", type=float, default=None,
                        help=f"seconds between an agent's heartbeats (default {HEARTBEAT_S:g})")
    parser.add_argument("--heartbeat-timeout", type=float, default=None,
                        help="seconds before a silent run counts as crashed (default "
                        f"{HEARTBEAT_TIMEOUT_S:g}; at least {MIN_BEATS_PER_TIMEOUT} heartbeats)")
    parser.add_argument("--pack", default="1", help="runs each agent trains together as one "
                        "packed model: an integer, or auto (as many as still "
                        "raise throughput)")
    submit.add_submit_options(parser)
    args = parser.parse_args(argv)
    parse_pack(args.pack)  # one line, exit 2, for a --pack that is neither auto nor K
    if args.gpus is not None:
        check_gpus(args.gpus)
    if args.project:  # WANDB_PROJECT= (empty) in the environment: the default
        check_project(args.project)
    check_heartbeat(HEARTBEAT_S if args.heartbeat is None else args.heartbeat,
                    HEARTBEAT_TIMEOUT_S if args.heartbeat_timeout is None
                    else args.heartbeat_timeout)
    return args


def check_project(project: str, local: bool = False) -> None:
    """A W&B project name W&B takes (UserError, one line), before a sweep is made: W&B
    refuses a bad one only when each run starts, so every run of the sweep would fail. A
    "/" only passes before a bare W&B sweep id (`--project entity/project`). The line names
    WANDB_PROJECT when the name is the environment's (--project's default)."""
    from agent.sweep.program import PROJECT_RULE, is_project_name

    if not is_project_name(project, slash=not local):
        given = "--project" if project != os.environ.get("WANDB_PROJECT") else "WANDB_PROJECT"
        raise UserError(f"{given}={brief(project)}: not a W&B project name "
                        f"({PROJECT_RULE})")


def pack_tip(args: argparse.Namespace, gpus: list[str], store: SweepStore) -> str | None:
    """A line pointing to --pack auto when agents start unpacked on GPUs for a sweep our
    trainer runs: one small run leaves most of a GPU idle, and packing is off by default
    (results are those of runs trained alone, bit for bit only without dropout and
    augmentation)."""
    from agent.sweep.program import runs_our_trainer

    if not gpus or args.pack != "1" or not runs_our_trainer(store.sweep().config):
        return None
    return ("Tip: --pack auto trains compatible runs of this sweep together as one fused "
            "model, as many as raise throughput (README: Packed trials)")


def say_unset_variables(sweep_config: dict) -> None:
    """The notes on the command's `${envvar:NAME}` whose variable is not set in this shell,
    which the agents started from it inherit (program.unset_variable_notes): each run gets
    the name itself there, as under W&B's agent."""
    from agent.sweep.program import unset_variable_notes

    for note in unset_variable_notes(sweep_config):
        print(textwrap.fill(note, 80, subsequent_indent="  ", break_on_hyphens=False))


AGENT_PROGRAM = [sys.executable, "-m", "agent.sweep.agent_loop"]


def agent_argv(args: argparse.Namespace) -> list[str]:
    """The agent's options (agent_loop's command line after its program), passing on the
    launcher's options it shares."""
    command = []
    if args.count is not None:
        command += ["--count", str(args.count)]
    if args.pack != "1":
        command += ["--pack", args.pack]
    for option, value in (("--heartbeat", args.heartbeat),
                          ("--heartbeat-timeout", args.heartbeat_timeout)):
        if value is not None:
            command += [option, repr(value)]
    return command


def dry_run(args: argparse.Namespace, target: SweepTarget, options: str) -> int:
    """`./run_sweep.sh x.yaml --dry-run`: every check and note of a launch (the file, the
    devices, folders and data its runs need), then what the sweep would run
    (preview.sweep_lines) and the command that launches it; no store, folder, data cache or
    W&B file is made, no agent started."""
    from agent.sweep.preview import sweep_lines

    where = str(target.path)
    config, notes, options = checked_sweep_file(
        target.path, options, check=lambda config: check_runnable(where, config, args.gpus,
                                                                  dry_run=True))
    print_notes(notes)
    gpus = args.gpus.split(",") if args.gpus else visible_gpus()
    slots = agent_slots(gpus, args.agents_per_gpu, args.agents)
    agents = (f"{len(slots)} on " + (", ".join(f"GPU {s['CUDA_VISIBLE_DEVICES']}"
                                               for s in slots) if gpus else "the CPU"))
    print("\n".join(sweep_lines(target.path, config, sweep_name(config, target.path),
                                agents)))
    print(f"Launch it: {script('run_sweep.sh')} {shlex.quote(target.text)}{options}")
    return 0


def check_dry_run_target(target: SweepTarget) -> None:
    """--dry-run without --pbs/--slurm checks a sweep file; a sweep that exists already
    has nothing to create (UserError, one line naming what shows it)."""
    if target.kind == "yaml":
        return
    shows = (f"{module_command('agent.status')} {target.path.name} shows it"
             if target.kind == "local" else "W&B's page of the sweep shows it")
    raise UserError(f"--dry-run: without --pbs N or --slurm N it checks a sweep YAML "
                    f"(sweeps/x.yaml) without creating the sweep; {target.text!r} is an "
                    f"existing {'local' if target.kind == 'local' else 'W&B'} sweep ({shows})")


def main(argv: list[str] | None = None) -> int:
    args = parse_options(argv)
    if submit.requested(args):  # --pbs/--slurm: job scripts for a scheduler, no agents here
        return submit.submit_from_args(args, argv)
    target = resolve_target(args.target, args.project)
    if args.dry_run:
        check_dry_run_target(target)
    if target.kind == "wandb":
        config = check_wandb_sweep(target)
        check_runnable(f"sweep {target.text}", config, args.gpus)
        say_unset_variables(config)
    # The sweep is checked (and made) before the GPUs are counted: that imports torch, which
    # a bad sweep file need not wait for.
    if args.gpus:  # before a sweep is made for agents that could not start
        check_gpus_exist(args.gpus.split(","))
    if args.project and target.kind != "wandb":  # the agents' runs go there (env first)
        check_project(args.project, local=True)
        os.environ["WANDB_PROJECT"] = args.project
    options = agent_options(args)  # repeated by the hints to add agents and to go on
    # In a batch job, the options it was submitted with (templates/environment.sh): its
    # hint to go on submits another job rather than start agents on the login node.
    options += os.environ.get("SWEEP_JOB_OPTIONS", "")
    if args.dry_run:
        return dry_run(args, target, options)
    store = None
    if target.kind == "yaml":  # checked, devices and data too, before the store is made
        store = create_local_sweep(target.path, options, check=lambda config:
                                   check_runnable(str(target.path), config, args.gpus))
    elif target.kind == "local":
        store = SweepStore(target.store_path)
        check_runnable(f"sweep {store.sweep().id}", store.sweep().config, args.gpus)
        say_unset_variables(store.sweep().config)  # a new sweep's notes said it
    gpus = args.gpus.split(",") if args.gpus else visible_gpus()
    slots = agent_slots(gpus, args.agents_per_gpu, args.agents)
    if store is None:
        print(f"Starting {len(slots)} agent(s) on W&B sweep {target.text}")
        return start_agents(AGENT_PROGRAM + agent_argv(args) + ["--wandb", target.wandb_path],
                            slots)
    print(f"Starting {len(slots)} agent(s) on "
          + (", ".join(f"GPU {s['CUDA_VISIBLE_DEVICES']}" for s in slots) if gpus
             else "the CPU"))
    tip = pack_tip(args, gpus, store)
    if tip:
        print(tip)
    argv = agent_argv(args) + [str(store.directory)]
    code = run_agent_here(argv, slots[0], store) if runs_here(slots, gpus) else \
        start_agents(AGENT_PROGRAM + argv, slots, store)
    report_local(store, hint_options(options, store.sweep().config))
    return code


if __name__ == "__main__":
    exit_command(main)  # after a Ctrl-C: killed by SIGINT, its closing lines out

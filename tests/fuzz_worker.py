"""The fuzzer's worker process: runs generated cases through each command's validation edge
in this one process, each case bounded in time and memory, one JSON line back per case.

Started by tests/test_fuzz.py in a scratch directory (its own HOME, no PATH, W&B offline),
never by hand. A case is {"entry", "argv", "files"}; the answer is {"outcome": accepted,
refused, help, refused_before_training, or a failure (traceback, timeout, memory,
accepted_then_refused); "message"; "seconds"; "peak_mb": the process's peak resident memory
during the case; "grew_mb": that peak less what was resident when the case began; "created":
paths the case left behind}. What an entry point accepts is then taken on the way an agent
goes on with it: the first configuration of an accepted sweep must pass the trial's
validation, and either fit this machine or be refused before training
(agent/trial/preflight.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

CASE_LIMIT_S = 10.0
ADDRESS_SPACE_MARGIN = 2 << 30  # a runaway allocation fails here instead of eating the host
FIXTURE_SWEEP = "done"  # a finished local sweep every command can be pointed at


class CaseTimeout(BaseException):
    """The case ran past CASE_LIMIT_S (raised by SIGALRM between two bytecodes)."""


class Refused(Exception):
    """The entry point refused the case the way its command line would: one UserError line."""


def _alarm(signum, frame):
    raise CaseTimeout()


def memory_mb(field: str) -> float:
    """VmHWM (peak resident memory) or VmRSS (resident now) of this process, in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\s+(\d+)", status).group(1)) / 1024


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def snapshot(root: Path) -> set[str]:
    """Every path under `root` but the cases' inputs and SQLite's own -wal/-shm files."""
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if path.relative_to(root).parts[0] != "inputs"
            and not path.name.endswith(("-wal", "-shm"))}


# --- the fixture: a finished local sweep -------------------------------------------------------

def make_fixture(root: Path) -> None:
    """data/sweeps/done: a grid of two digits runs, both finished with a history and summary,
    written through the store's own API as an agent writes it."""
    from agent.sweep.controller import claim
    from agent.sweep.store import SWEEPS_DIR, SweepStore, create_store

    config = {"program": "agent/train.py", "method": "grid",
              "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "epochs": {"value": 1}, "lr": {"values": [0.01, 0.1]}}}
    store = create_store(root / SWEEPS_DIR / FIXTURE_SWEEP, FIXTURE_SWEEP, "done", config)
    for lr in (0.01, 0.1):
        (run,) = claim(store, "fixture:1").runs
        row = {"epoch": 1, "train/loss": 1.0, "val/acc": 0.5 + lr, "val/loss": 1.0}
        store.record_epoch(run.run_id, "fixture:1", 1, row)
        store.finish(run.run_id, "fixture:1", "finished",
                     {**row, "test/acc": 0.5 + lr, "run_id": run.run_id, "model": "dense",
                      "optimizer": "sgd", "dataset": "digits"})
    assert claim(store, "fixture:1").kind == "done"
    store.close()
    # data/sweeps/odd: another program's sweep whose names and values are hostile text (rich
    # markup, an escape character), with a run running, one finished, one failed
    odd = {"program": "other.py", "method": "grid", "command": ["python", "other.py", "${args}"],
           "metric": {"name": "[/m]", "goal": "maximize"},
           "parameters": {"p": {"values": ["[/v]", 3, 2.5]}, "epochs": {"value": "abc"}}}
    store = create_store(root / SWEEPS_DIR / "odd", "odd", "[/x]\x1b odd", odd)
    for end in ("finished", "failed", None):
        (run,) = claim(store, "fixture:2").runs
        store.record_epoch(run.run_id, "fixture:2", 1, {"[/m]": 1.0, "epoch": 1})
        if end:
            store.finish(run.run_id, "fixture:2", end, {"[/m]": 0.5, "model": "[/y]"},
                         error="[/e] failed" if end == "failed" else None)
    store.close()
    # data/sweeps/cut: a store whose creation was cut short (its schema, no sweep)
    (root / SWEEPS_DIR / "cut").mkdir()
    SweepStore(root / SWEEPS_DIR / "cut" / "sweep.db", create=True).close()


# --- each entry point's validation edge ------------------------------------------------------

def trial_config_of(sweep: dict, name: str) -> dict | None:
    """The first configuration an agent would train from this accepted sweep, validated, as
    LocalAgent.trial_config makes it; None when the runs are another program's."""
    from agent.params import validate
    from agent.sweep.engine import proposed_params
    from agent.sweep.program import build_run, runs_our_trainer, trial_values

    params = proposed_params(sweep, [])
    if params is None or not runs_our_trainer(sweep):
        return None
    run = build_run(sweep, params, sweep_id="fuzzswp", run_id="fuzzrun1", wandb_dir="inputs")
    config = {**trial_values(run), "run_id": run.run_id}
    config["group"] = config.get("group") or name
    return validate(config)


def sweep_entry(case: dict, paths: dict) -> dict | None:
    from agent.sweep.config import load_sweep_config
    from agent.sweep.target import sweep_name

    path = paths.get("sweep.yaml") or case["argv"][0]
    notes: list[str] = []
    try:
        sweep = load_sweep_config(path, notes)
    except _user_error() as error:
        raise Refused(str(error)) from None
    try:
        return trial_config_of(sweep, sweep_name(sweep, path))
    except _user_error():
        # a first run that drew a value the trial refuses, as a note at creation said one
        # may (its probability below OUTSIDE_LIMIT): that run fails alone, as on W&B
        if any("such a run fails at its start" in note for note in notes):
            return None
        raise


def train_entry(case: dict, paths: dict) -> dict | None:
    from agent.train import run_config

    if any(arg in ("-h", "--help") for arg in case["argv"]):
        return "help"
    try:
        return run_config(case["argv"], environ={})
    except _user_error() as error:
        raise Refused(str(error)) from None


def launch_entry(case: dict, paths: dict) -> None:
    from agent.cluster import submit
    from agent.launch import parse_options
    from agent.sweep.config import load_sweep_config
    from agent.sweep.store import SweepStore
    from agent.sweep.target import check_wandb_sweep, resolve_target

    try:
        args = parse_options(case["argv"])
        if submit.requested(args):  # no qsub/sbatch on this PATH: nothing is submitted
            submit.submit_from_args(args, case["argv"])
            return None
        if args.dry_run:  # the launcher's own dry run: every check, nothing made or started
            from agent.launch import main

            main(case["argv"])
            return None
        target = resolve_target(args.target, args.project)
        if target.kind == "yaml":
            load_sweep_config(target.path)
        elif target.kind == "local":
            SweepStore(target.store_path).close()
        else:
            check_wandb_sweep(target)  # no credentials here: one line
    except _user_error() as error:
        raise Refused(str(error)) from None
    return None


def agent_entry(case: dict, paths: dict) -> None:
    from agent.sweep.agent_loop import parse_options
    from agent.sweep.target import SweepTarget, check_wandb_sweep, open_store

    try:
        args = parse_options(case["argv"])
        if args.wandb:
            check_wandb_sweep(SweepTarget("wandb", args.sweep, wandb_path=args.sweep))
        else:
            open_store(args.sweep).close()
    except _user_error() as error:
        raise Refused(str(error)) from None
    return None


def status_entry(case: dict, paths: dict) -> None:
    from agent.sweep.status import main

    try:
        main(case["argv"])
    except _user_error() as error:
        raise Refused(str(error)) from None
    return None


def report_entry(case: dict, paths: dict) -> None:
    from agent.report.document import checked  # every check `main` makes before writing

    try:
        checked(case["argv"])
    except _user_error() as error:
        raise Refused(str(error)) from None
    return None


def repeat_entry(case: dict, paths: dict) -> None:
    from agent.report.repeat import planned  # every check `main` makes before writing

    try:
        planned(case["argv"])
    except _user_error() as error:
        raise Refused(str(error)) from None
    return None


ENTRIES = {"sweep": sweep_entry, "train": train_entry, "launch": launch_entry,
           "agent": agent_entry, "status": status_entry, "report": report_entry,
           "repeat": repeat_entry}


def _user_error():
    from util.errors import UserError

    return UserError


def check_trainable(config) -> str | None:
    """None when the configuration fits this machine's CPU, else the trial's one-line
    refusal (a refusal before training, which the oracle allows)."""
    import torch

    from agent.trial.preflight import check_compilable, check_fits

    try:
        check_fits([config], torch.device("cpu"))
        check_compilable(config, torch.device("cpu"))
    except _user_error() as error:
        return str(error)
    return None


# --- one case --------------------------------------------------------------------------------

def write_inputs(case: dict, folder: Path) -> dict[str, str]:
    """The case's files under `folder`: plain bytes, or a FIFO, a directory, a symlink."""
    folder.mkdir(parents=True)
    paths = {}
    for name, spec in case.get("files", {}).items():
        path = folder / name
        kind = spec.get("kind", "bytes")
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "symlink":
            path.symlink_to(spec["to"])
        else:
            path.write_bytes(base64.b64decode(spec["data"]))
        paths[name] = str(path)
    return paths


def run_case(case: dict, root: Path, number: int) -> dict:
    folder = root / "inputs" / str(number)
    paths = write_inputs(case, folder)
    case = {**case, "argv": [_expand(arg, paths) for arg in case.get("argv", [])]}
    before = snapshot(root)
    result = {"outcome": "accepted", "stage": "entry", "message": ""}
    reset_peak()
    resident = memory_mb("VmRSS")
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
    try:
        accepted = ENTRIES[case["entry"]](case, paths)
        if accepted == "help":
            result["outcome"] = "help"
        elif accepted is not None:  # a trial configuration: can it train here?
            result["stage"] = "preflight"
            refusal = check_trainable(accepted)
            if refusal is not None:
                result.update(outcome="refused_before_training", message=refusal)
    except Refused as refusal:
        result.update(outcome="refused", message=str(refusal))
    except _user_error() as error:  # accepted, then refused on the way to training
        result.update(outcome="accepted_then_refused", message=str(error))
    except SystemExit as stop:  # argparse's --help: the help text, exit code 0
        result.update(outcome="help" if stop.code in (0, None) else f"exit {stop.code}")
    except CaseTimeout:
        result.update(outcome="timeout", message=f"over {CASE_LIMIT_S:g} s")
    except MemoryError:
        result.update(outcome="memory", message=traceback.format_exc()[-4000:])
    except BaseException:  # noqa: BLE001  a traceback the user would have seen
        result.update(outcome="traceback", message=traceback.format_exc()[-4000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["seconds"] = time.perf_counter() - started
    result["peak_mb"] = memory_mb("VmHWM")
    result["grew_mb"] = result["peak_mb"] - resident  # what the case itself took
    result["created"] = sorted(snapshot(root) - before)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _expand(arg: str, paths: dict) -> str:
    """`{file:NAME}` in an argument becomes the path of the case's file NAME."""
    return re.sub(r"\{file:([^}]*)\}", lambda m: paths.get(m.group(1), m.group(0)), arg)


def main() -> None:
    root = Path.cwd()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # what the commands print goes nowhere; answers go to `protocol`
    errors: list[str] = []
    threading.excepthook = lambda hook: errors.append(
        "".join(traceback.format_exception(hook.exc_type, hook.exc_value, hook.exc_traceback)))
    signal.signal(signal.SIGALRM, _alarm)
    make_fixture(root)
    import torch  # noqa: F401  the trial's pre-flight check needs it: load it before the limit

    import agent.launch  # noqa: F401
    import agent.report.document  # noqa: F401
    import agent.sweep.config  # noqa: F401
    import agent.train  # noqa: F401

    size = int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    limit = size * 1024 + ADDRESS_SPACE_MARGIN
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    protocol.write(json.dumps({"ready": True}) + "\n")
    for number, line in enumerate(sys.stdin):
        result = run_case(json.loads(line), root, number)
        if errors:  # an exception in a thread is a traceback too
            result.update(outcome="traceback", message=errors.pop()[-4000:])
        protocol.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

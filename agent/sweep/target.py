"""What a user means by a sweep on the command line, decided in one place.

Every command that takes a sweep (`run_sweep.sh`, `--pbs`/`--slurm`, `agent.status`,
`agent.report`, `agent.repeat`) resolves it here: a sweep YAML file (a new local sweep), an
existing local sweep (its id, directory or sweep.db), or a W&B sweep (`entity/project/id`, or
a bare id with a project). No torch is imported.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.commands import script, whole, wrapped
from agent.sweep.store import STORE_NAME, SWEEPS_DIR, SweepStore, store_paths
from util.errors import UserError, brief, one_line, without_api_key

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SweepTarget:
    kind: str  # "yaml", "local" or "wandb"
    text: str  # as the user wrote it
    path: Path | None = None  # the YAML file, or the local sweep's directory
    wandb_path: str | None = None  # entity/project/id or project/id

    @property
    def store_path(self) -> Path:
        return self.path / STORE_NAME


def local_sweep_dir(text: str) -> Path | None:
    """The directory of an existing local sweep named by `text` (id, directory or sweep.db)."""
    for candidate in (Path(text), Path(text) / STORE_NAME, SWEEPS_DIR / text / STORE_NAME):
        try:
            if candidate.name == STORE_NAME and candidate.is_file():
                return candidate.parent
        except (OSError, ValueError):  # a name too long, a NUL: no sweep of that name
            continue
    return None


def resolve_target(text: str, project: str | None = None, allow: tuple[str, ...] =
                   ("yaml", "local", "wandb")) -> SweepTarget:
    """The sweep `text` names; UserError (one line) when it names none of the kinds allowed.

    A W&B target is only checked for its form here; `check_wandb_sweep` asks the server.
    """
    if "yaml" in allow and text.lower().endswith(YAML_SUFFIXES):  # Sweep.YAML too
        return SweepTarget("yaml", text, Path(text))
    directory = local_sweep_dir(text) if "local" in allow else None
    if directory is not None:
        return SweepTarget("local", text, directory)
    on_disk = _on_disk(text)
    if "local" in allow and (on_disk or text.startswith(("/", ".", "~"))):
        # a path on this machine (no W&B path starts so): name what is missing in it
        what = on_disk or "a path that does not exist"
        raise UserError(f"sweep={text!r}: {what}, not a local sweep (a local sweep is "
                        f"data/sweeps/<id>, holding {STORE_NAME})"
                        + ("" if "yaml" not in allow else
                           f"; a sweep YAML ends in {' or '.join(YAML_SUFFIXES)}"))
    if "wandb" in allow:
        if text.count("/") == 2:
            return SweepTarget("wandb", text, wandb_path=text)
        if "/" not in text and project:
            return SweepTarget("wandb", text, wandb_path=f"{project}/{text}")
    kinds = {"yaml": "a sweep YAML file", "local": "a local sweep (id or directory)",
             "wandb": "a W&B sweep path (entity/project/id, or an id with --project)"}
    raise UserError(f"sweep={text!r}: not " + ", nor ".join(kinds[k] for k in allow)
                    + (f" (no {STORE_NAME} in {text!r} or {str(SWEEPS_DIR / text)!r})"
                       if "local" in allow else ""))


def _on_disk(text: str) -> str | None:
    """'a directory' or 'a file' when `text` names one here, else None (also for a name
    the file system cannot even look up: too long, a NUL in it)."""
    try:
        path = Path(text)
        return "a directory" if path.is_dir() else "a file" if path.exists() else None
    except (OSError, ValueError):
        return None


def open_store(text: str, read_only: bool = False) -> SweepStore:
    """An existing local sweep's store, named by its id, directory or sweep.db (`read_only`:
    for reading only, SweepStore's)."""
    return SweepStore(resolve_target(text, allow=("local",)).store_path, read_only=read_only)


def check_wandb_sweep(target: SweepTarget) -> dict:
    """Before any agent starts or job is submitted: the W&B sweep must be reachable. Returns
    its config as W&B's server holds it (the YAML given to `wandb sweep`, unfilled)."""
    from agent.trial.sinks.wandb_sink import has_credentials

    if not has_credentials():
        raise UserError(f"sweep={target.text!r}: not a YAML file nor a local sweep, and W&B "
                        "has no API key here (run `wandb login`, or set WANDB_API_KEY) to "
                        "reach it as a W&B sweep")
    import wandb

    try:
        config = wandb.Api().sweep(target.wandb_path).config
    except Exception as error:  # a refused key, an unknown sweep, no network: one line
        text = without_api_key(one_line(error))
        away = any(sign in text for sign in ("Failed to execute API request", "Max retries",
                                             "Connection", "timed out", "Name or service",
                                             "did not respond in time"))
        # wandb 0.31 raises CommError for an unknown sweep too, naming it
        unreachable = "Could not find sweep" not in text and (
            isinstance(error, wandb.errors.CommError) or away)
        what = "W&B could not be reached to look it up" if unreachable else \
            "W&B could not find it"
        # wandb.Api() raises AuthenticationError for a server it cannot reach, too
        if isinstance(error, wandb.errors.AuthenticationError) and not away:
            what = ("W&B refused the API key (check WANDB_API_KEY, or run `wandb login` "
                    "again)")
        shown = text if len(text) <= 160 else text[:159] + "…"
        raise UserError(f"sweep={target.text!r}: {what} ({type(error).__name__}: "
                        f"{shown})") from None
    return dict(config or {})


def sweep_name(config: dict, yaml_path: str | Path) -> str:
    """The sweep's `name`, else its file's name without .yaml, made a valid run group
    (printable, at most MAX_NAME characters: a file name may be neither)."""
    from agent.params import MAX_NAME

    text = config.get("name") or Path(yaml_path).stem
    text = " ".join(text.split())  # a `name: |` block's newline, tabs: one space
    cleaned = "".join(c if c.isprintable() else "_" for c in text)
    return cleaned[:MAX_NAME] or "sweep"


def sweep_notes(yaml_path: str | Path) -> list[str]:
    """The notes creating a local sweep from `yaml_path` prints (what the file leaves unsaid
    or unused), for a dry run that creates none. UserError for a bad file."""
    from agent.sweep.config import creation_notes, load_sweep_config

    notes: list[str] = []
    config = load_sweep_config(yaml_path, notes)
    check_sweep_project(str(yaml_path), config)
    return notes + creation_notes(config)


def checked_sweep_file(yaml_path: str | Path, options: str = "",
                       check: Callable[[dict], list[str] | None] | None = None
                       ) -> tuple[dict, list[str], str]:
    """Everything creating a local sweep from `yaml_path` checks and says, with nothing
    created: (the validated config, the notes to print, the hint's `options`). `check`,
    given the validated config, raises UserError for what the caller cannot run (the
    launcher: a device this machine lacks) and may return notes of its own."""
    from agent.sweep.config import creation_notes, load_sweep_config

    notes: list[str] = []
    config = load_sweep_config(yaml_path, notes)
    check_sweep_project(str(yaml_path), config)
    own = (check(config) or []) if check is not None else []
    options = hint_options(options, config)
    earlier = unfinished_twin(config, options)
    return config, notes + creation_notes(config) + own + ([earlier] if earlier else []), \
        options


def check_sweep_project(where: str, config: dict) -> None:
    """The sweep's `project`, where its runs go unless WANDB_PROJECT (which --project sets)
    names another (program.local_run_environment; `wandb sweep` alike), must be a name W&B
    takes: wandb.init refuses any other as each run starts, so every run would fail, each
    with a line that blames the key or the network. UserError, one line."""
    from agent.sweep.program import PROJECT_RULE, is_project_name

    project = config.get("project")
    if not project or os.environ.get("WANDB_PROJECT") or is_project_name(project):
        return
    raise UserError(f"{where}: project: {brief(project)} is not a W&B project name "
                    f"({PROJECT_RULE}): wandb.init refuses it as each run starts, so every "
                    "run would fail; WANDB_PROJECT or --project, where set, is used instead")


def print_notes(notes: list[str]) -> None:
    """Each note wrapped to 80 columns, its lines after the first indented (commands.wrapped)."""
    for note in notes:
        print(wrapped(note))


def create_local_sweep(yaml_path: str | Path, options: str = "", announce: bool = True,
                       check: Callable[[dict], list[str] | None] | None = None):
    """A new local sweep from a sweep YAML (checked first: a bad file creates nothing);
    `options` (" --pack 4") go into the hint to add agents; `announce` False leaves the
    two lines to the caller (batch jobs print them once the jobs are submitted); `check`:
    see checked_sweep_file."""
    from agent.ids import new_run_id
    from agent.sweep.store import create_store

    config, notes, options = checked_sweep_file(yaml_path, options, check)
    sweep_id = new_run_id()
    name = sweep_name(config, yaml_path)
    store = create_store(SWEEPS_DIR / sweep_id, sweep_id, name, config)
    print_notes(notes)
    if announce:
        print(f"Created local sweep {sweep_id} ({name}) in {store.directory}")
        print(f"Add agents from another shell: {script('run_sweep.sh')} {sweep_id}{options}")
    return store


def unfinished_twin(config: dict, options: str = "") -> str | None:
    """A note naming the newest local sweep of the same config (data/sweeps) that still has
    runs to end, and how to go on with it: running the YAML again makes a new sweep (as
    `wandb sweep` does), which after an interruption is rarely what was meant. A sweep
    whose run reached metric.target has ended once no run waits (W&B makes no new run)."""
    from agent.sweep.engine import target_reached
    from agent.sweep.status import sweep_progress

    wanted = json.dumps(config, sort_keys=True)
    found = []
    for path in store_paths(SWEEPS_DIR):
        try:
            store = SweepStore(path, read_only=True)
        except (UserError, OSError):
            continue
        try:
            sweep = store.sweep()
            if json.dumps(sweep.config, sort_keys=True) != wanted:
                continue
            runs = store.runs()
        except (UserError, OSError, sqlite3.Error):
            continue
        finally:
            store.close()
        progress = sweep_progress(runs, sweep.config, [])
        waiting = any(r.state in ("pending", "preempted", "running") for r in runs)
        # a run reached metric.target: no new run comes (W&B's server), those waiting go on
        if waiting or (progress["total"] is not None and progress["done"] < progress["total"]
                       and not target_reached(sweep.config, runs)):
            found.append((sweep.created, sweep.id, progress))
    if not found:
        return None
    _, sweep_id, progress = max(found)
    counts = (f"{progress['done']} of {progress['total']} runs ended"
              if progress["total"] is not None else f"{progress['done']} runs ended")
    return (f"note: sweep {sweep_id}, made earlier from the same config, is not finished "
            f"({counts}); to go on with it instead: "
            # wrapped as a whole (print_notes), to copy from one line
            + whole(f"{script('run_sweep.sh')} {sweep_id}{options}"))


def hint_options(options: str, config: dict) -> str:
    """The launch options a hint repeats (" --pack 4 --gpus 0"), less `--pack` for a sweep
    whose command runs another program (its runs are never packed)."""
    from agent.sweep.program import runs_our_trainer

    if runs_our_trainer(config):
        return options
    return re.sub(r" --pack \S+", "", options)

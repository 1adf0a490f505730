"""A sweep run as `wandb agent` starts it: the argv from the sweep's `command`/`program` through
wandb's own builder, the environment and the parameter file W&B's agent gives the run; and, for
a local sweep whose command is not our trainer, that argv run as a subprocess whose metric is
read from the run's own W&B offline history while it runs (so hyperband works for any script).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from util.errors import UserError, programs_ended_with_this_process

# The macros W&B's agent fills in itself in Agent._command_run (wandb/wandb_agent.py), on top of
# create_sweep_command_args: no function of wandb's returns them, so they are written here and
# tests/test_wandb_macros.py checks them against that method.
AGENT_ADDED_MACROS = ("interpreter", "program", "args_json_file", "env")
# The environment W&B's agent sets for each run (wandb.env.SWEEP_ID, RUN_ID, SWEEP_PARAM_PATH).
RUN_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
# Macros wandb expands, but not into the --key=value arguments of a run: ${args_dict} becomes the
# parameter names alone (its dict is spliced into the argv), so the values never reach the run.
REFUSED_MACROS = {"args_dict": "it expands to the parameter names without their values "
                  "(wandb splices the dict into the argv); use ${args_json}"}
TRAINER_MODULE = "agent.train"
TRAINER_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
INTERPRETER = re.compile(r"python(\d+(\.\d+)?)?(\.exe)?")
# What util/with_venv.sh changes for our own code, and keeps as the caller had it under
# SWEEP_CALLER_<name>: another program's runs get the caller's values back where the caller
# had an environment activated (caller_environment).
CALLER_VARIABLES = ("PATH", "PYTHONPATH", "VIRTUAL_ENV")
KILL_DELAY_S = 30.0  # W&B's agent: SIGTERM, then SIGKILL 30 s later (Agent.KILL_DELAY)
POLL_S = 0.5
# wandb flushes an offline run's .wandb file every 15 s by default; a reader deciding hyperband
# stops needs each epoch's row when it is logged (wandb setting x_transaction_log_flush_interval).
FLUSH_VARIABLE = ("WANDB__TRANSACTION_LOG_FLUSH_INTERVAL", "0.5")


class _DocumentedMacros:
    """W&B's command macros where wandb cannot be imported: the GPU machine the benchmarks run
    on has the sweep engine but not wandb, and a local agent builds every run's command, so
    without this none could start there. Written from W&B's documentation of the sweep
    `command` key (docs.wandb.ai, "Sweep configuration options", command macros: `${args}` is
    `--name=value` per parameter, `${args_no_hyphens}` `name=value`,
    `${args_no_boolean_flags}` `--name` for a true boolean and nothing for a false one,
    `${args_json}` one JSON text, `${envvar:NAME}` the variable's value) and the other forms
    wandb's builder offers (`--name value`, Hydra's `+name=value` and `++name=value`, the
    dict). The same three names as wandb.sdk.launch.sweeps.utils; tests/test_wandb_macros.py
    checks every macro against wandb's own builder on generated parameters."""

    DEFAULT_SWEEP_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
    SWEEP_COMMAND_ENV_VAR_REGEX = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")

    @classmethod
    def create_sweep_command(cls, command: list | None = None) -> list:
        """The command (the default one if empty), each `${envvar:NAME}` in a text token
        replaced by $NAME, or by NAME where it is not set."""
        def variable(match: re.Match) -> str:
            return os.environ.get(match.group(1), match.group(1))

        return [cls.SWEEP_COMMAND_ENV_VAR_REGEX.sub(variable, token)
                if isinstance(token, str) else token
                for token in (command or cls.DEFAULT_SWEEP_COMMAND)]

    @staticmethod
    def create_sweep_command_args(command: dict) -> dict[str, Any]:
        """Each macro's list for {"args": {name: {"value": value}}}; ValueError without
        "args" or a parameter without "value"."""
        if "args" not in command:
            raise ValueError(f'No "args" found in command: {command}')
        values = {}
        for name, spec in command["args"].items():
            if "value" not in spec:
                raise ValueError(f'No "value" found for command["args"]["{name}"]')
            values[name] = spec["value"]
        pairs = [f"{name}={value}" for name, value in values.items()]
        return {
            "args": ["--" + pair for pair in pairs],
            "args_no_equals": [text for name, value in values.items()
                               for text in (f"--{name}", str(value))],
            "args_no_hyphens": pairs,
            "args_no_boolean_flags": [
                f"--{name}" if isinstance(value, bool) else f"--{pair}"
                for (name, value), pair in zip(values.items(), pairs)
                if not (isinstance(value, bool) and not value)],
            "args_json": [json.dumps(values)],
            "args_dict": values,
            "args_append_hydra": ["+" + pair for pair in pairs],
            "args_override_hydra": ["++" + pair for pair in pairs],
        }


def sweep_utils():
    """wandb.sdk.launch.sweeps.utils, or _DocumentedMacros (the same names) without wandb."""
    try:
        from wandb.sdk.launch.sweeps import utils
    except ImportError:
        return _DocumentedMacros
    return utils


def known_macros() -> set[str]:
    """Every ${macro} W&B's agent expands (wandb's builder's keys plus those its agent adds)."""
    return set(sweep_utils().create_sweep_command_args({"args": {}})) | set(AGENT_ADDED_MACROS)


def command_of(sweep_config: dict) -> list | None:
    """The sweep's command; wandb's default when it names only a program; None with neither
    (a sweep for `wandb.agent(function=...)`: our trainer is called with the config)."""
    command = sweep_config.get("command")
    if command:
        return list(command)
    return list(sweep_utils().DEFAULT_SWEEP_COMMAND) if sweep_config.get("program") else None


@dataclass
class RunCommand:
    """How one run of a sweep is started, as W&B's agent would start it."""

    run_id: str
    params: dict  # the run's parameters {name: value}
    argv: list[str] | None  # None: no command (our trainer, called in-process)
    env: dict[str, str]  # what W&B's agent adds to the run's environment
    param_path: Path  # the run's parameter file (WANDB_SWEEP_PARAM_PATH)
    json_path: Path | None  # the ${args_json_file} file, when the command uses it
    json_text: str = ""
    trainer_args: list[str] | None = field(default=None)  # argv's arguments to our trainer


def build_run(sweep_config: dict, params: dict, *, sweep_id: str, run_id: str,
              wandb_dir: str | os.PathLike) -> RunCommand:
    """The argv, environment and files of one run, exactly as `wandb agent` builds them.

    The argv comes from wandb's create_sweep_command (${envvar:NAME}) and
    create_sweep_command_args (the argument macros), expanded the way Agent._command_run does:
    a token that is one whole ${macro} is replaced by that macro's list (unknown macros by
    nothing), every other token is kept as text. Nothing is written (see write_run_files).
    """
    builder = sweep_utils()
    base = Path(wandb_dir) / "wandb" / f"sweep-{sweep_id}"
    command = command_of(sweep_config)
    run = RunCommand(run_id=run_id, params=dict(params), argv=None,
                     env={"WANDB_SWEEP_ID": sweep_id, "WANDB_RUN_ID": run_id,
                          "WANDB_SWEEP_PARAM_PATH": str(base / f"config-{run_id}.yaml")},
                     param_path=base / f"config-{run_id}.yaml", json_path=None)
    macros = builder.create_sweep_command_args(
        {"args": {name: {"value": value} for name, value in params.items()}})
    run.json_text = macros["args_json"][0]
    if command is None:
        run.trainer_args = []
        return run
    expanded = [str(token) for token in builder.create_sweep_command(list(command))]
    json_path = base / f"config-{run_id}.json"
    macros.update(interpreter=["python"], program=[sweep_config.get("program")],
                  args_json_file=[str(json_path)], env=["/usr/bin/env"])
    argv: list[str] = []
    for token in expanded:
        if token.startswith("${") and token.endswith("}"):
            argv += list(macros.get(token[2:-1]) or [])
        else:
            argv.append(token)
    run.argv = [str(token) for token in argv]
    run.json_path = json_path if "${args_json_file}" in expanded else None
    run.trainer_args = trainer_args(run.argv)
    return run


def write_run_files(run: RunCommand) -> None:
    """The parameter file (and the ${args_json_file} file) W&B's agent writes before a run."""
    from wandb.sdk.lib import config_util

    config_util.save_config_file_from_dict(
        str(run.param_path), {name: {"value": value} for name, value in run.params.items()})
    if run.json_path is not None:
        run.json_path.write_text(run.json_text)


def trainer_args(argv: list[str]) -> list[str] | None:
    """The arguments `argv` gives our trainer, or None when it runs anything else.

    Recognised: [/usr/bin/env] python[3[.x]] [-u] (-m agent.train | <path to agent/train.py>)
    ARGS. Anything else (other programs, environment assignments, wrappers) is not ours.
    """
    tokens = list(argv)
    if tokens and os.path.basename(tokens[0]) == "env":
        tokens = tokens[1:]
    if not tokens or not INTERPRETER.fullmatch(os.path.basename(tokens[0])):
        return None
    tokens = tokens[1:]
    while tokens and tokens[0] in ("-u", "-B"):  # unbuffered / no .pyc: same program
        tokens = tokens[1:]
    if tokens[:2] == ["-m", TRAINER_MODULE]:
        return tokens[2:]
    if tokens and tokens[0].endswith(".py") and _is_trainer_script(tokens[0]):
        return tokens[1:]
    return None


def _is_trainer_script(path: str) -> bool:
    """`path` is agent/train.py: from here, or, when nothing by that name is here, from the
    repository root (batch jobs start agents in scratch directories; the trial runs in-process
    there, so the file is never opened)."""
    candidate = Path(path)
    if candidate.resolve() == TRAINER_SCRIPT:
        return True
    return not candidate.is_absolute() and not os.path.exists(candidate) and \
        (TRAINER_SCRIPT.parents[1] / candidate).resolve() == TRAINER_SCRIPT


def runs_our_trainer(sweep_config: dict) -> bool:
    """True when the sweep's runs are our trainer (in-process locally, `wandb.agent` online)."""
    run = build_run(sweep_config, {}, sweep_id="check", run_id="check", wandb_dir=".")
    return run.trainer_args is not None


def trial_values(run: RunCommand) -> dict[str, Any]:
    """The raw config our trainer receives for `run`: its command-line arguments, completed by
    the run's parameters as wandb.config holds them (so a false boolean that
    ${args_no_boolean_flags} leaves out is still false). Raises UserError."""
    from agent.params import parse_args

    if run.trainer_args is None:
        raise ValueError(f"run {run.run_id} does not run our trainer")
    args = list(run.trainer_args)
    if run.json_path is not None and not run.json_path.exists():
        write_run_files(run)
    return {**parse_args(args), **run.params}


def values_for(sweep_config: dict, params: dict) -> dict[str, Any]:
    """trial_values of a run of the sweep with `params`, its command's fixed arguments
    included, without a run: the files its command may read (${args_json_file}) are written
    to a scratch folder and removed. ValueError for another program's command; UserError for
    arguments our trainer refuses."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="command-") as scratch:
        return trial_values(build_run(sweep_config, params, sweep_id="scratch",
                                      run_id="scratch", wandb_dir=scratch))


def command_values(sweep_config: dict) -> dict[str, Any]:
    """The raw values every run of the sweep gets from its command's fixed arguments
    (`--epochs=1` beside ${args}, also with ${args_json_file}), before its own parameters
    override them; {} for another program's command, or one that cannot be read."""
    from util.errors import UserError

    try:
        return values_for(sweep_config, {})
    except (UserError, ValueError, TypeError, OSError):
        return {}


# What wandb.init refuses in a project name (wandb_settings.validate_project raises UsageError),
# so a run sent there fails at its start; "/" passes only on our command line, before a bare
# W&B sweep id (--project entity/project), never as a project runs go to.
PROJECT_FORBIDDEN = "\\#?%:"
PROJECT_RULE = "1 to 128 printable characters, none of / \\ # ? % :"


def is_project_name(project: str, slash: bool = False) -> bool:
    """Whether W&B takes `project` as a project name (PROJECT_RULE); `slash`: a "/" passes
    (entity/project before a bare W&B sweep id)."""
    return bool(project.strip()) and len(project) <= 128 and not any(
        c in PROJECT_FORBIDDEN or (c == "/" and not slash) or not c.isprintable()
        for c in project)


def local_run_environment(sweep_config: dict) -> None:
    """A local sweep's agent ignores W&B's agent environment (a WANDB_SWEEP_ID left in the
    shell) and sends its runs to the sweep's project/entity unless WANDB_PROJECT/WANDB_ENTITY
    say otherwise (`wandb sweep` gives the environment the same precedence)."""
    for name in RUN_VARIABLES:
        os.environ.pop(name, None)
    known_macros()  # loads wandb's command builder now, not inside the first claim's transaction
    for key in ("project", "entity"):
        if sweep_config.get(key) and not os.environ.get(f"WANDB_{key.upper()}"):
            os.environ[f"WANDB_{key.upper()}"] = str(sweep_config[key])


# --- a program that is not our trainer, run as W&B's agent runs it ----------------------------

class RunFailed(Exception):
    """A program run exited with an error (its message is the one line the store keeps)."""


@dataclass
class ProgramResult:
    state: str  # finished, stopped, failed or preempted
    summary: dict
    error: str | None = None


def run_file(wandb_dir: str | os.PathLike, run_id: str) -> Path | None:
    """The run's offline .wandb file, once wandb has created it."""
    found = sorted(Path(wandb_dir, "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    return found[-1] if found else None


def run_program(run: RunCommand, wandb_dir: str | os.PathLike, metric: str | None,
                on_row: Callable[[int, dict], bool], interrupted: Callable[[], bool]
                ) -> ProgramResult:
    """Run `run.argv` as W&B's agent runs a program (own process group, stdin closed, the run's
    variables set), with W&B offline. Each new history row holding `metric` is passed to
    on_row(n, row), n counting from 1; True from it stops the run (SIGTERM, SIGKILL 30 s later,
    as W&B's agent stops a run). interrupted() True ends it as preempted. A Ctrl-C that ends
    this process at once (util.errors.stop_at_next_step) kills the program's group with it:
    a terminal's Ctrl-C does not reach it, and it would run on."""
    write_run_files(run)
    env = {name: value for name, value in caller_environment(os.environ).items()
           if name not in RUN_VARIABLES}
    env.update(run.env, WANDB_MODE="offline", WANDB_DIR=str(Path(wandb_dir).resolve()))
    env.setdefault(*FLUSH_VARIABLE)
    try:
        process = subprocess.Popen(run.argv, env=env, stdin=subprocess.PIPE, process_group=0)
    except OSError as error:
        return ProgramResult("failed", {}, f"cannot start {run.argv[0]!r}: {error.strerror}")
    process.stdin.close()
    reader = _HistoryReader(wandb_dir, run.run_id, metric)
    ending, signalled_at = None, None
    with programs_ended_with_this_process(process.pid):  # by a Ctrl-C that ends the agent
        while process.poll() is None:
            time.sleep(POLL_S)
            if ending is None:
                for number, row in reader.new_rows():
                    if on_row(number, row):
                        ending = "stopped"
                        break
                if ending is None and interrupted():
                    ending = "preempted"
                if ending is not None:
                    process.send_signal(signal.SIGTERM)
                    signalled_at = time.monotonic()
            elif time.monotonic() - signalled_at > KILL_DELAY_S:
                process.kill()
        code = process.wait()
    if ending is None:
        for number, row in reader.new_rows(wait_for_exit=code == 0):
            on_row(number, row)
    summary = {**reader.last_row, **reader.summary}
    if ending is not None:
        return ProgramResult(ending, summary)
    if code == 0:
        return ProgramResult("finished", summary)
    # quoted as a shell would: an item holding a space (`python3.8 train.py`) is one word
    return ProgramResult("failed", summary, f"{shlex.join(run.argv[:4])} ... exited with code "
                                            f"{code}")


def caller_environment(environ) -> dict[str, str]:
    """`environ` with PATH, PYTHONPATH and VIRTUAL_ENV as the shell that ran ./run_sweep.sh
    had them (util/with_venv.sh keeps them as SWEEP_CALLER_<name>; an empty one was unset),
    where that shell had an environment activated (a virtualenv's VIRTUAL_ENV, conda's
    CONDA_PREFIX) whose `python` has wandb: `wandb agent` started from that shell runs
    `${interpreter}` (python) and the program there, with the program's own packages.
    Otherwise the runs keep this project's venv first on the PATH: its `python` exists (many
    systems have only `python3`) and holds torch, torchvision, wandb and numpy, which a
    sweep's program logs its metric with (conda's base environment, which its installer
    activates in every shell, often has no wandb; a note says so, once). Unchanged where no
    SWEEP_CALLER_PATH says what the caller had."""
    env = dict(environ)
    if "SWEEP_CALLER_PATH" not in env:
        return env
    saved = {name: env.pop(f"SWEEP_CALLER_{name}", "") for name in CALLER_VARIABLES}
    if not (saved["VIRTUAL_ENV"] or env.get("CONDA_PREFIX")):
        return env
    callers = dict(env)
    for name, value in saved.items():
        if value:
            callers[name] = value
        else:
            callers.pop(name, None)
    return callers if _python_has_wandb(callers) else env


_HAS_WANDB: dict[tuple[str, str], bool] = {}


def _python_has_wandb(env: dict[str, str]) -> bool:
    """Whether the `python` that `env`'s PATH finds can import wandb (looked up, not
    imported: ~50 ms), asked once per python and PYTHONPATH; a note on stderr the first
    time it cannot (or there is no `python`)."""
    import shutil

    python = shutil.which("python", path=env.get("PATH", ""))
    key = (str(python), env.get("PYTHONPATH", ""))
    if key not in _HAS_WANDB:
        # a folder named wandb (offline runs, here in the working directory) is found as a
        # namespace package, without an origin: only wandb itself has one
        probe = ("import importlib.util, sys; spec = importlib.util.find_spec('wandb'); "
                 "sys.exit(spec is None or spec.origin is None)")
        try:
            found = python is not None and subprocess.run(
                [python, "-c", probe], env=env, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            found = False
        _HAS_WANDB[key] = found
        if not found:
            where = f"the python of your environment ({python}) has no wandb" if python \
                else "your environment has no `python`"
            print(f"note: {where}: the runs of the sweep's program use this project's "
                  f"({sys.executable}); install wandb there to run them with yours",
                  file=sys.stderr)
    return _HAS_WANDB[key]


class _HistoryReader:
    """New rows of a running run's W&B offline history that hold the sweep's metric."""

    def __init__(self, wandb_dir, run_id: str, metric: str | None):
        self.wandb_dir, self.run_id, self.metric = wandb_dir, run_id, metric
        self.seen, self.size = 0, -1
        self.summary: dict = {}
        self.last_row: dict = {}

    def new_rows(self, wait_for_exit: bool = False, timeout: float = 15.0):
        from util.wandb_offline import read_run

        deadline = time.monotonic() + (timeout if wait_for_exit else 0)
        while True:
            path = run_file(self.wandb_dir, self.run_id)
            offline = None
            if path is not None and path.stat().st_size != self.size:
                self.size = path.stat().st_size
                try:
                    offline = read_run(path)
                except ValueError:  # a chunk half-written: read it at the next poll
                    self.size = -1
            if offline is not None:
                history = [flat_keys(row) for row in offline.history]
                rows = [row for row in history if self.metric is None or
                        self.metric in row]
                self.summary = flat_keys(offline.summary)
                if rows:
                    self.last_row = rows[-1]
                for row in rows[self.seen:]:
                    self.seen += 1
                    yield self.seen, row
                if offline.exit_code is not None:
                    return
            if time.monotonic() >= deadline:
                return
            time.sleep(POLL_S)


def flat_keys(row: dict) -> dict:
    """`row` with each nested dict's values also under their dotted path: W&B's history and
    summary name `wandb.log({"val": {"loss": x}})` `val.loss`, the name a sweep's metric
    gives it."""
    flat = dict(row)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        else:
            flat.setdefault(prefix, value)

    for key, value in row.items():
        if isinstance(value, dict) and not str(key).startswith("_"):
            walk(str(key), value)
    return flat


def describe(run: RunCommand) -> str:
    """The argv as one line, for messages."""
    if run.argv is None:
        return f"{sys.executable} (in-process trial)"
    return " ".join(f"'{token}'" if " " in token else token for token in run.argv)


def unset_variable_notes(sweep_config: dict, environ: dict | None = None) -> list[str]:
    """A note for each `${envvar:NAME}` in the sweep's command whose variable `environ` (this
    process's environment) does not set: W&B's agent puts the name itself in its place
    (wandb's create_sweep_command: os.environ.get(NAME, NAME)), and so does ours, so every
    run gets that same literal text (`--run_name=${envvar:USER}` is run_name=USER in each)."""
    environ = os.environ if environ is None else environ
    regex = sweep_utils().SWEEP_COMMAND_ENV_VAR_REGEX
    notes = []
    for index, token in enumerate(sweep_config.get("command") or []):
        if not isinstance(token, str):
            continue
        for name in dict.fromkeys(m.group(1) for m in regex.finditer(token)):
            if name in environ:
                continue
            expanded = regex.sub(lambda m: environ.get(m.group(1), m.group(1)), token)
            notes.append(f"note: command[{index}]: {token}: {name or 'the empty name'} is not "
                         f"set here, so every run gets the same literal text in its place, "
                         f"{expanded!r}, as W&B's agent would pass it (set {name} to change "
                         "it)")
    return notes


def check_program_command(sweep_config: dict) -> None:
    """Macros in `command` that W&B's agent would not turn into the run's arguments: one line."""
    command = sweep_config.get("command")
    if not command:
        return
    SWEEP_COMMAND_ENV_VAR_REGEX = sweep_utils().SWEEP_COMMAND_ENV_VAR_REGEX  # noqa: N806

    known = known_macros()
    # ${envvar:NAME} is no key of wandb's builder, but its create_sweep_command expands it
    usable = ", ".join("${" + name + "}" for name in sorted(known - set(REFUSED_MACROS))) \
        + ", ${envvar:NAME} (the environment variable NAME: capitals, digits, _)"
    for index, token in enumerate(command):
        text = str(token)
        if not (text.startswith("${") and text.endswith("}")) \
                or SWEEP_COMMAND_ENV_VAR_REGEX.fullmatch(text):
            continue  # ${envvar:NAME}: the variable's value (wandb's create_sweep_command)
        name = text[2:-1]
        if name in REFUSED_MACROS:
            raise UserError(f"command[{index}]: {text} is refused: {REFUSED_MACROS[name]}")
        if name not in known:
            raise UserError(f"command[{index}]: {text} is not a macro W&B's agent knows (it "
                            f"would expand to nothing): known are {usable}")
        if name == "program" and not sweep_config.get("program"):
            raise UserError(f"command[{index}]: ${{program}} needs a top-level `program` "
                            "(the script to run)")

"""Every command macro W&B's agent knows, checked against W&B's own agent code: the argv,
environment and parameter file our local sweeps build equal what wandb's Agent._command_run
starts, and our trainer reads each macro's output as the run's proposal. The macro list is read
from wandb (create_sweep_command_args and the assignments in Agent._command_run)."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import warnings

import pytest
import yaml

from agent.params import parse_args, validate
from agent.sweep import program
from agent.sweep.config import load_sweep_config
from agent.sweep.engine import proposed_params
from agent.train import run_config
from conftest import ROOT, closed_offline_runs, subprocess_env
from util.errors import UserError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from wandb import wandb_agent
    from wandb.sdk.launch.sweeps import utils as sweep_utils

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def wandb_macros() -> set[str]:
    """Every ${macro} wandb's CLI agent expands, read from its code."""
    builder = set(sweep_utils.create_sweep_command_args({"args": {}}))
    source = inspect.getsource(wandb_agent.Agent._command_run)
    added = set(re.findall(r'sweep_vars\["(\w+)"\]\s*=', source))
    return builder | added


MACROS = sorted(wandb_macros())
ARGUMENT_MACROS = [m for m in MACROS if m.startswith("args") and m not in program.REFUSED_MACROS]
# Values that exercise every way a macro writes one: false booleans (left out by
# ${args_no_boolean_flags}, with a default of True for batch_norm), a null, a list, text.
EDGE_VALUES = {"batch_norm": False, "nesterov": False, "run_name": None,
               "channels": [16, 32], "schedule": "cosine"}


def test_the_macro_list_is_wandbs_and_ours_knows_every_one():
    assert {"args", "args_no_hyphens", "args_json", "args_json_file", "args_no_boolean_flags",
            "env", "interpreter", "program"} <= set(MACROS)
    assert program.known_macros() == set(MACROS)
    assert set(program.AGENT_ADDED_MACROS) == wandb_macros() - set(
        sweep_utils.create_sweep_command_args({"args": {}}))


def wandb_agent_start(monkeypatch, tmp_path, sweep_config: dict, params: dict,
                      run_id: str = "run00001", sweep_id: str = "sweep001"):
    """What W&B's own agent starts for one run (argv, environment, parameter file), with its
    AgentProcess replaced by a recorder: no server and no process needed."""
    started = []

    class Recorder:
        def __init__(self, env=None, command=None, function=None, **kwargs):
            started.append((command, env))

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets these; undone
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("WANDB_SWEEP_ID", sweep_id)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id=sweep_id)
    agent._sweep_command = list(sweep_config.get("command") or [])  # as Agent.run reads it
    agent._command_run({"type": "run", "run_id": run_id, "program": sweep_config.get("program"),
                        "args": {name: {"value": value} for name, value in params.items()}})
    (argv, env), = started
    return argv, env


def sweep_with(macro: str, base: dict) -> dict:
    return {**base, "program": "agent/train.py",
            "command": ["${env}", "${interpreter}", "${program}", "${" + macro + "}"]}


def proposal_of(path) -> dict:
    config = load_sweep_config(path)
    return {**proposed_params(config, []), **EDGE_VALUES}


@pytest.mark.parametrize("macro", MACROS)
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_our_run_is_the_one_wandbs_agent_starts(monkeypatch, tmp_path, path, macro):
    monkeypatch.chdir(ROOT)  # where W&B's agent finds program: agent/train.py
    base = yaml.safe_load(path.read_text())
    sweep = sweep_with(macro, base) if macro.startswith("args") else base
    params = proposal_of(path)
    argv, env = wandb_agent_start(monkeypatch, tmp_path, sweep, params)
    ours = program.build_run(sweep, params, sweep_id="sweep001", run_id="run00001",
                             wandb_dir=tmp_path)
    assert ours.argv == argv
    for name, value in ours.env.items():
        assert env[name] == value
    written = (tmp_path / "wandb" / "sweep-sweep001" / "config-run00001.yaml").read_text()
    program.write_run_files(ours)
    assert ours.param_path.read_text() == written
    assert ours.trainer_args is not None  # our trainer, in-process for a local sweep


@pytest.mark.parametrize("macro", ARGUMENT_MACROS)
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_our_trainer_reads_every_macro_as_the_proposal(monkeypatch, tmp_path, path, macro):
    monkeypatch.chdir(ROOT)
    sweep = sweep_with(macro, yaml.safe_load(path.read_text()))
    params = proposal_of(path)
    argv, env = wandb_agent_start(monkeypatch, tmp_path, sweep, params)  # writes its files
    arguments = program.trainer_args(argv)
    expected = validate(params)
    config = run_config(arguments, env)  # what `python agent/train.py ...` trains
    assert {k: config[k] for k in params} == {k: expected[k] for k in params}
    from_argv = validate(parse_args(arguments))  # the arguments alone agree where they speak
    written = [k for k in params if macro != "args_no_boolean_flags" or params[k] is not False]
    assert {k: from_argv[k] for k in written} == {k: expected[k] for k in written}


@pytest.mark.parametrize("token, words", [
    ("${args_dict}", ["${args_dict}", "names without their values", "${args_json}"]),
    ("${project}", ["${project}", "not a macro", "${args}", "${envvar:NAME}"]),
    ("${arg}", ["${arg}", "not a macro"]),
])
def test_a_macro_wandb_would_expand_to_nothing_or_to_names_is_refused(tmp_path, token, words):
    path = tmp_path / "sweep.yaml"
    path.write_text("command:\n  - ${env}\n  - python\n  - -m\n  - agent.train\n  - " + token
                    + "\nmethod: grid\nparameters:\n  lr: {values: [0.1]}\n")
    with pytest.raises(UserError) as caught:
        load_sweep_config(path)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.e2e
def test_program_runs_as_a_script_from_the_repository():
    env = {k: v for k, v in subprocess_env().items() if k != "PYTHONPATH"}
    result = subprocess.run(["python", "agent/train.py", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--lr" in result.stdout
    bad = subprocess.run(["python", "agent/train.py", "--lr=fast"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: lr='fast'")


def quick(params: dict, tmp_path) -> dict:
    """The proposal, made quick to train here: digits, one epoch, files under tmp_path."""
    return {**params, "dataset": "digits", "epochs": 1, "train_subset": 512,
            "data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "runs"),
            "log_dir": str(tmp_path / "logs"), "num_threads": 1}


E2E_CASES = ([("quickstart.yaml", macro) for macro in ARGUMENT_MACROS]
             + [(path.name, None) for path in SWEEP_FILES])


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, macro", E2E_CASES)
def test_wandb_agents_run_trains_the_proposal_offline(monkeypatch, tmp_path, name, macro):
    """The argv and environment W&B's agent builds, run as it runs them (offline): the W&B run's
    config is the proposal and the trial trained with those values."""
    monkeypatch.chdir(ROOT)
    path = ROOT / "sweeps" / name
    base = yaml.safe_load(path.read_text())
    sweep = sweep_with(macro, base) if macro else base
    params = quick(proposal_of(path), tmp_path)
    argv, env = wandb_agent_start(monkeypatch, tmp_path, sweep, params)
    env = {**subprocess_env(), **{k: env[k] for k in program.RUN_VARIABLES},
           "WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline"}
    env.pop("PYTHONPATH")  # as W&B's agent would start it: nothing but the command
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=280, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = closed_offline_runs(tmp_path / "wandb", 1)
    expected = validate(params)
    assert run.run_id == "run00001" and run.exit_code == 0
    for key in params:  # the sweep's values, as W&B's server would show them
        assert run.config[key] == params[key], key
    epochs = [row for row in run.history if "val/acc" in row]
    assert [row["epoch"] for row in epochs] == [1]
    assert epochs[0]["batch_size"] == expected["batch_size"]
    assert run.summary["epochs_done"] == 1 and run.summary["dataset"] == "digits"
    trained = json.loads((tmp_path / "runs" / "run00001" / "summary.json").read_text())
    assert trained["run_name"] == "run00001"  # run_name: null is the default, not "None"
    assert (tmp_path / "logs" / "sweep001" / "run00001").is_dir()


@pytest.mark.parametrize("command", [
    ["${env}", "${interpreter}", "${program}", "${envvar:HOME}", "${args}"],
    ["${env}", "${interpreter}", "${program}", "--home=${envvar:HOME}", "${envvar:UNSET_42}",
     "${args}"],
])
def test_an_environment_variable_token_is_what_wandbs_agent_starts(monkeypatch, tmp_path,
                                                                  command):
    """${envvar:NAME} is replaced by the variable's value (its name when unset) before the
    macros, whether it is a whole argument or inside one (wandb's create_sweep_command)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text("print('a program')\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home dir"))
    monkeypatch.delenv("UNSET_42", raising=False)
    sweep = {"program": "prog.py", "command": command, "method": "grid",
             "parameters": {"lr": {"values": [0.1]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    load_sweep_config(path)  # accepted, as W&B accepts it
    params = {"lr": 0.1}
    argv, _ = wandb_agent_start(monkeypatch, tmp_path, dict(sweep, command=list(command)),
                                params)
    ours = program.build_run(sweep, params, sweep_id="sweep001", run_id="run00001",
                             wandb_dir=tmp_path)
    assert ours.argv == argv
    assert str(tmp_path / "home dir") in " ".join(argv)


NESTED = {"optimizer": {"parameters": {"name": {"values": ["sgd", "adam"]},
                                       "lr": {"values": [0.1, 0.01]}}},
          "epochs": {"value": 1}}


def test_nested_parameters_of_another_program_are_wandbs_dict_values(monkeypatch, tmp_path):
    """W&B's engine unnests nested parameters and hands a run each as one dict value; a
    program that reads wandb.config gets them so. Our trainer takes flat parameters and
    refuses them in one line."""
    import sweeps

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "prog.py"
    script.write_text("print('a program')\n")
    sweep = {"program": "prog.py", "method": "grid", "parameters": NESTED}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    config = load_sweep_config(path)
    assert config["parameters"]["optimizer"] == NESTED["optimizer"]
    runs, ours = [], []
    while (params := proposed_params(config, runs)) is not None:
        ours.append(params)
        runs.append({"id": f"r{len(runs)}", "state": "finished", "config": params,
                     "history": [], "summary": {}})
        assert len(ours) <= 4
    engine_runs, wandbs = [], []
    while (proposal := sweeps.next_run(sweep, engine_runs, validate=False)) is not None:
        wandbs.append({k: spec["value"] for k, spec in proposal.config.items()})
        engine_runs.append(sweeps.SweepRun(name=str(len(engine_runs)), config=proposal.config,
                                           state=sweeps.RunState.finished))
    assert ours == wandbs and len(ours) == 4
    assert {(p["optimizer"]["name"], p["optimizer"]["lr"]) for p in ours} == {
        ("sgd", 0.1), ("sgd", 0.01), ("adam", 0.1), ("adam", 0.01)}
    argv, _ = wandb_agent_start(monkeypatch, tmp_path, sweep, ours[0])
    run = program.build_run(sweep, ours[0], sweep_id="sweep001", run_id="run00001",
                            wandb_dir=tmp_path)
    assert run.argv == argv
    written = (tmp_path / "wandb" / "sweep-sweep001" / "config-run00001.yaml").read_text()
    program.write_run_files(run)
    assert run.param_path.read_text() == written
    assert yaml.safe_load(written)["optimizer"]["value"] == ours[0]["optimizer"]

    ours_path = tmp_path / "trainer.yaml"
    ours_path.write_text(yaml.safe_dump({**sweep, "program": "agent/train.py"}))
    with pytest.raises(UserError) as refused:
        load_sweep_config(ours_path)
    assert "\n" not in str(refused.value)
    assert "parameters.optimizer: nested parameters" in str(refused.value)


def generated_params(count: int, seed: int) -> list[dict]:
    """Parameter sets of every kind of value a sweep hands a run (YAML's and the engine's):
    booleans both ways, null, ints, floats small and large, text with spaces, '=' and
    non-ASCII, lists, nested lists and dicts, in random number and order."""
    import random

    kinds = [True, False, None, 0, 7, -3, 0.1, 1e-05, 2.5e+20, float("inf"), "cosine",
             "a b=c", "été", "", [16, 32], [], [[1, 2], [3]], {"a": 1, "b": [True]},
             {"nested": {"deep": None}}]
    draw = random.Random(seed)
    return [{f"p{k}_{draw.randrange(100)}": draw.choice(kinds)
             for k in range(draw.randrange(0, 8))} for _ in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_without_wandb_every_macro_is_what_wandbs_builder_gives(seed, monkeypatch):
    """The GPU machine has the sweep engine but no wandb: a local agent builds each run's
    command with program._DocumentedMacros there, which must equal wandb's own builder for
    every macro, every kind of value, every ${envvar:...} form."""
    ours = program._DocumentedMacros
    for params in generated_params(40, seed):
        args = {"args": {name: {"value": value} for name, value in params.items()}}
        assert ours.create_sweep_command_args(args) == sweep_utils.create_sweep_command_args(args)
    monkeypatch.setenv("BENCH_TOKEN", "xyz")
    monkeypatch.delenv("MISSING_X", raising=False)
    for command in (None, [], ["${env}", "python", "-m", "agent.train", "${args}"],
                    ["python", "${envvar:BENCH_TOKEN}/a${envvar:MISSING_X}", "${args_json}"],
                    ["${envvar:BENCH_TOKEN}", 3, "x${envvar:lower}y", "${envvar:}"]):
        copy = None if command is None else list(command)
        assert ours.create_sweep_command(copy) == sweep_utils.create_sweep_command(
            None if command is None else list(command))
    assert ours.DEFAULT_SWEEP_COMMAND == sweep_utils.DEFAULT_SWEEP_COMMAND
    assert ours.SWEEP_COMMAND_ENV_VAR_REGEX.pattern == \
        sweep_utils.SWEEP_COMMAND_ENV_VAR_REGEX.pattern
    for bad in ({}, {"args": {"lr": {}}}):
        for builder in (ours, sweep_utils):
            with pytest.raises(ValueError, match='^No "'):
                builder.create_sweep_command_args(bad)


def test_without_wandb_a_local_agent_builds_the_same_runs(monkeypatch, tmp_path):
    """With every wandb module unimportable (as on the GPU machine), the run commands, the
    macro list and the checks a local agent makes at its start are what they are with wandb."""
    import sys

    params = {**EDGE_VALUES, "lr": 0.1, "epochs": 2}
    sweeps = [{"method": "grid", "parameters": {"lr": {"values": [0.1]}}},
              {"method": "grid", "program": "agent/train.py",
               "parameters": {"lr": {"values": [0.1]}}},
              {"method": "grid", "command": ["${env}", "python", "-m", "agent.train",
                                             "--epochs=1", "${args}"],
               "parameters": {"lr": {"values": [0.1]}}}]
    with_wandb = [program.build_run(sweep, params, sweep_id="s1", run_id="r1",
                                    wandb_dir=tmp_path) for sweep in sweeps]
    for name in [n for n in list(sys.modules) if n == "wandb" or n.startswith("wandb.")]:
        monkeypatch.setitem(sys.modules, name, None)
    assert program.sweep_utils() is program._DocumentedMacros
    assert program.known_macros() == set(MACROS)
    assert [program.build_run(sweep, params, sweep_id="s1", run_id="r1", wandb_dir=tmp_path)
            for sweep in sweeps] == with_wandb
    assert program.runs_our_trainer(sweeps[0]) and program.runs_our_trainer(sweeps[2])
    program.local_run_environment(sweeps[0])  # what every local agent calls at its start

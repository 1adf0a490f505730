"""The shapes of sweep files people publish, as a user copies one: a `command` with fixed
flags before the macro, `python -u`, Hydra's overrides with dotted names, a command without
`program`, a launcher (torchrun) before the program, `-m` a module, `${args_json_file}` with
nested parameters, boolean flags; a metric without a goal, none at all; list, null and text
values. Each is written here in its own values (none is copied). For each: the sweep check
accepts it, and the first run's argv is the one W&B's own agent starts for the engine's first
proposal (wandb's Agent._command_run, its process replaced by a recorder); the forms W&B's
engine cannot run are refused in one line naming the key."""

from __future__ import annotations

import pytest
import yaml

from agent.sweep import program
from agent.sweep.config import load_sweep_config
from agent.sweep.engine import proposed_params
from test_wandb_macros import wandb_agent_start
from util.errors import UserError

RANDOM = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"}}
VALUES = {"lr": {"values": [0.003, 0.0003]}, "use_amp": {"values": [True, False]},
          "layers": {"values": [[64, 64], [128]]}, "gpus": {"value": "0,1"},
          "max_depth": {"values": [None, 3]}}
SHAPES = {
    "fixed flags before ${args}": {
        "program": "training/fit.py", "parameters": VALUES,
        "command": ["${env}", "${interpreter}", "${program}", "--log", "--max_epochs", "20",
                    "${args}"]},
    "python -u": {
        "program": "fit.py", "parameters": VALUES,
        "command": ["${env}", "${interpreter}", "-u", "${program}", "${args}"]},
    "hydra overrides": {
        "program": "fit.py",
        "parameters": {"model.opt.lr": {"distribution": "log_uniform_values",
                                        "min": 1e-4, "max": 1e-1},
                       "data.batch": {"values": [16, 32]}},
        "command": ["${env}", "python", "${program}", "+experiment=small",
                    "${args_no_hyphens}"]},
    "command without program": {
        "parameters": VALUES, "command": ["python", "fit.py", "--cfg", "a.yaml", "--sweep"]},
    "launcher before the program": {
        "program": "fit.py", "parameters": VALUES,
        "command": ["torchrun", "--nproc_per_node=1", "${program}", "${args}"]},
    "a module": {
        "parameters": VALUES,
        "command": ["${env}", "${interpreter}", "-m", "fitting.main",
                    "${args_no_boolean_flags}"]},
    "json file of nested parameters": {
        "program": "fit.py", "method": "bayes",
        "parameters": {"init": {"parameters": {
            "scale": {"distribution": "log_normal", "mu": -2.0, "sigma": 0.5},
            "kind": {"values": ["normal", "orthogonal"]}}},
            "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}},
        "command": ["${env}", "${interpreter}", "${program}", "--file_path",
                    "${args_json_file}"]},
    "boolean flags with a fixed flag": {
        "program": "fit.py", "parameters": VALUES,
        "command": ["${interpreter}", "${program}", "--blend", "${args_no_boolean_flags}"]},
    "metric without a goal": {
        "program": "fit.py", "metric": {"name": "loss"}, "parameters": VALUES},
    "no metric, a grid": {
        "program": "fit.py", "method": "grid", "metric": None, "parameters": VALUES},
    "hyperband of min_iter alone": {
        "program": "fit.py", "early_terminate": {"type": "hyperband", "min_iter": 3},
        "parameters": VALUES},
}


def written(tmp_path, shape: dict):
    """The shape as a sweep file in tmp_path (the current folder), its programs there."""
    for script in ("fit.py", "training/fit.py"):
        (tmp_path / script).parent.mkdir(exist_ok=True)
        (tmp_path / script).write_text("import wandb\nwandb.init()\n")
    (tmp_path / "fitting").mkdir(exist_ok=True)
    (tmp_path / "fitting" / "__init__.py").write_text("")
    (tmp_path / "fitting" / "main.py").write_text("import wandb\nwandb.init()\n")
    config = {key: value for key, value in {**RANDOM, **shape}.items() if value is not None}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


@pytest.mark.parametrize("name", SHAPES)
def test_a_public_shape_runs_the_command_wandbs_agent_starts(monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)
    path, sweep = written(tmp_path, SHAPES[name])
    config = load_sweep_config(path)
    params = proposed_params(config, [])
    argv, env = wandb_agent_start(monkeypatch, tmp_path, sweep, params)
    ours = program.build_run(sweep, params, sweep_id="sweep001", run_id="run00001",
                             wandb_dir=tmp_path)
    assert ours.argv == argv, (ours.argv, argv)
    assert ours.trainer_args is None  # another program: a process of its own, as W&B runs it


@pytest.mark.parametrize("parameters, early_terminate, words", [
    # written from Python with 4.0 and 10.0: the engine's schema wants integers, and with
    # the schema left out its int_uniform refuses them as well (no run could be proposed);
    # the line read "10.0 is not a 'integer'", not what to write instead
    ({"steps": {"distribution": "int_uniform", "min": 4.0, "max": 10.0}}, None,
     ["parameters.steps: max: 10.0 is not an integer (write 10, without the decimal point)",
      "min: 4.0 is not an integer (write 4, "]),
    # max_iter and eta without s: hyperband's brackets need min_iter, or max_iter with s
    # (jsonschema's words, "'s' is a required property or 'min_iter' is a required
    # property", left out that s goes with max_iter)
    ({"lr": {"values": [0.1]}}, {"type": "hyperband", "max_iter": 100, "eta": 3},
     ["early_terminate: needs both max_iter and s, or min_iter (given: eta, max_iter, "
      "type)"]),
])
def test_a_public_shape_w_and_bs_engine_cannot_run_is_one_line(tmp_path, monkeypatch,
                                                                parameters, early_terminate,
                                                                words):
    monkeypatch.chdir(tmp_path)
    shape = {"program": "fit.py", "parameters": parameters}
    if early_terminate is not None:
        shape["early_terminate"] = early_terminate
    path, _ = written(tmp_path, shape)
    with pytest.raises(UserError) as refused:
        load_sweep_config(path)
    message = str(refused.value)
    assert "\n" not in message and all(word in message for word in words), message

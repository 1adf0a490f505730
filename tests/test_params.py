"""The run-parameter table: parsing the forms `wandb agent` passes, validation, help, README."""

import subprocess
import sys
from pathlib import Path

import pytest

from agent.params import ALIASES, BY_NAME, PARAMS, help_table, parse_args, validate
from conftest import ROOT, subprocess_env
from util.errors import UserError


def test_wandb_agent_argument_forms_are_parsed_and_typed():
    raw = parse_args(["--optimizer=sam", "--lr=0.05", "--batch_size=128", "--augment=True",
                      "--nesterov=false", "--channels=[32, 64]", "--epochs", "3",
                      "--batch_size=64.0"])
    cfg = validate(raw)
    assert cfg.optimizer == "sam" and cfg.lr == 0.05 and cfg.epochs == 3
    assert cfg.augment is True and cfg.nesterov is False
    assert cfg.channels == [32, 64]
    assert cfg.batch_size == 64 and isinstance(cfg.batch_size, int)  # 64.0 from a sweep


def test_config_file_is_overridden_by_the_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optimizer: adam\nlr: 0.001\nwidths: [64, 32]\n")
    cfg = validate(parse_args([f"--config={path}", "--lr=0.002"]))
    assert (cfg.optimizer, cfg.lr, cfg.widths) == ("adam", 0.002, [64, 32])


@pytest.mark.parametrize("values, named", [
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"lr": 0}, "lr=0"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"lr": "fast"}, "lr='fast'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": 12.5}, "batch_size=12.5"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"dropout": -0.1}, "dropout=-0.1"),
    ({"model": "vit"}, "model='vit'"),
    ({"optimizer": "lion"}, "optimizer='lion'"),
    ({"dataset": "imagenet"}, "dataset='imagenet'"),
    ({"schedule": "linear"}, "schedule='linear'"),
    ({"augment": "maybe"}, "augment='maybe'"),
    ({"sam_base": "sam"}, "sam_base='sam'"),
    ({"channels": "[32, -1]"}, "channels="),
    ({"nesterov": True, "momentum": 0.0}, "nesterov=True"),
])
def test_bad_values_name_key_value_and_what_is_allowed(values, named):
    with pytest.raises(UserError) as caught:
        validate(values)
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert "allowed" in message or "expected" in message or "needs" in message


def test_every_parameter_has_a_valid_default_and_help():
    cfg = validate({})
    for param in PARAMS:
        assert param.help and param.name in cfg
    text = help_table()
    for param in PARAMS:
        assert f"--{param.name}" in text


def test_readme_parameter_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    assert help_table(markdown=True) in readme, (
        "README's parameter table is stale: paste `python -m agent.params` output")


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, named", [
    (["--lr=-1"], "lr='-1'"),
    (["--optimizer=lion"], "optimizer='lion'"),
    (["--bogus=1"], "bogus"),
    (["--dropout=1"], "dropout='1'"),
    (["--config=missing.yaml"], "missing.yaml"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, named):
    result = subprocess.run([sys.executable, "-m", "agent.train", "--dataset=digits", *args],
                            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                            timeout=100)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
    assert "Traceback" not in result.stderr
    assert list(Path(tmp_path).iterdir()) == []  # no data, logs, runs or wandb directory


def test_an_unknown_parameter_names_its_file_and_the_parameter_it_is_close_to(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # the files by short names (a long path is cut in the line)
    run = Path("run.yaml")
    run.write_text("dataset: digits\nmodle: dense\n")
    sweep = Path("sweep.yaml")
    sweep.write_text("method: grid\nparameters:\n  lr: {values: [0.1]}\n")
    expected = [
        (["--optimzer=sgd"], "unknown parameter 'optimzer' (did you mean optimizer?): "),
        (['{"modle": "dense"}'], "argument '{\"modle\": \"dense\"}': unknown parameter "
                                 "'modle' (did you mean model?): "),
        ([f"--config={run}"], f"config='{run}': unknown parameter 'modle' (did you mean "
                              "model?): "),
        ([f"--config={sweep}"], f"config='{sweep}': unknown parameter 'method' (a key of a "
                                "sweep file, which ./run_sweep.sh runs): "),
        (["--learning_rate=0.1"], "unknown parameter 'learning_rate' (did you mean lr?): "),
        (["--lr_max=0.1"], "unknown parameter 'lr_max': "),  # nothing close
    ]
    for argv, start in expected:
        with pytest.raises(UserError) as refused:
            validate(parse_args(argv))
        message = str(refused.value)
        assert message.startswith(start + "allowed are dataset, "), message
        assert "\n" not in message


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_a_name_public_sweeps_give_a_parameter_is_pointed_to_ours(alias):
    """learning_rate, num_epochs, dropout_rate... (the names of W&B's examples and of most
    public sweep files) are close to no name of ours by spelling, so the refusal said only
    'allowed are ...'; it names the parameter meant, which is a parameter, and the alias is
    not one (it would never be refused)."""
    assert alias not in BY_NAME and ALIASES[alias] in BY_NAME
    with pytest.raises(UserError) as refused:
        validate(parse_args([f"--{alias}=1"]))
    assert f"unknown parameter '{alias}' (did you mean {ALIASES[alias]}?): " in \
        str(refused.value), refused.value


def test_cli_bad_yaml_names_the_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("lr: 0.1\noptimizer: [sgd\n")
    with pytest.raises(UserError, match="line"):
        parse_args([f"--config={bad}"])


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_cli_help_lists_every_parameter_with_default_and_allowed_values(tmp_path):
    result = subprocess.run([sys.executable, "-m", "agent.train", "--help"], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 0
    for param in PARAMS:
        assert f"--{param.name}" in result.stdout
    assert "default 0.05; a number in (0, 100]" in result.stdout  # lr
    assert "one of sgd, adam, adamw, rmsprop, sam" in result.stdout


def test_model_and_optimizer_names_are_the_registries_keys():
    """nn.MODEL_NAMES and nn.OPTIMIZER_NAMES, which validation reads without torch, are the
    keys of the registries that build the models and optimizers, in order."""
    from nn import MODEL_NAMES, OPTIMIZER_NAMES
    from nn.models import MODELS
    from nn.optimizers import OPTIMIZERS

    assert tuple(MODELS) == MODEL_NAMES
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
    assert BY_NAME["model"].allowed_choices() == MODEL_NAMES
    assert BY_NAME["sam_base"].allowed_choices() == OPTIMIZER_NAMES[:-1]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [["agent.repeat", "done"], ["agent.status", "done"],
                                     ["agent.status"]])
def test_commands_that_read_a_sweep_do_not_load_torch(tmp_path, command):
    """Planning repeats and showing status check every run's config (model and optimizer
    names included) but train nothing: they must not import torch, whose import alone peaks
    at ~650 MB resident (the CI's fuzz cases hold every command under 1 GiB)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from fuzz_worker import make_fixture
    finally:
        sys.path.remove(str(ROOT / "tests"))
    make_fixture(tmp_path)
    probe = ("import runpy, sys\n"
             f"sys.argv = {['x', *command[1:]]!r}\n"
             "try:\n"
             f"    runpy.run_module({command[0]!r}, run_name='__main__')\n"
             "except SystemExit as end:\n"
             "    assert end.code in (0, None), end.code\n"
             "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "no torch", result.stderr
    if command[0] == "agent.repeat":
        assert "repeat sweep" in result.stdout and "created" in result.stdout, result.stdout

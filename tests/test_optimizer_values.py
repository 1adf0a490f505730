"""What a sweep may set for its optimizer: the values torch.optim (and SAM's paper) refuse are
refused before training, in one line naming the key, the value and what is allowed (exit code
2 from the command line); the values torch takes are taken; torch's names for what a run
cannot set say so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.params import parse_args, validate
from conftest import subprocess_env
from util.errors import UserError

# (values, the key and value its line names, a word of what is allowed): each refused by
# torch.optim's constructors (SGD, Adam, AdamW, RMSprop: 'Invalid learning rate', 'Invalid
# momentum value', 'Invalid beta parameter at index 0', 'Invalid weight_decay value',
# 'Nesterov momentum requires a momentum and zero dampening'; Adam has no nesterov) or by SAM
# (rho > 0)
TORCH_REFUSES = [
    ({"lr": -0.1}, "lr='-0.1'", "(0, 100]"),
    ({"lr": float("nan")}, "lr='nan'", "(0, 100]"),
    ({"optimizer": "sgd", "momentum": -0.1}, "momentum='-0.1'", "[0, 1)"),
    ({"optimizer": "rmsprop", "momentum": -0.5}, "momentum='-0.5'", "[0, 1)"),
    ({"optimizer": "adam", "momentum": 1.0}, "momentum='1.0'", "[0, 1)"),
    ({"optimizer": "adamw", "momentum": 1.5}, "momentum='1.5'", "[0, 1)"),
    ({"weight_decay": -1e-4}, "weight_decay='-0.0001'", "[0, 10]"),
    ({"optimizer": "sgd", "nesterov": True, "momentum": 0.0}, "nesterov=True", "momentum > 0"),
    ({"optimizer": "adam", "nesterov": True}, "nesterov=True", "sgd"),
    ({"optimizer": "rmsprop", "nesterov": True}, "nesterov=True", "sgd"),
    ({"optimizer": "sam", "sam_base": "sgd", "nesterov": True, "momentum": 0.0},
     "nesterov=True", "momentum > 0"),
    ({"optimizer": "sam", "sam_base": "adamw", "nesterov": True}, "sam_base='adamw'", "sgd"),
    ({"optimizer": "sam", "rho": -0.05}, "rho='-0.05'", "(0, 10]"),
    ({"optimizer": "sam", "sam_base": "sam"}, "sam_base='sam'", "sgd, adam, adamw, rmsprop"),
]


@pytest.mark.parametrize("values, named, allowed", TORCH_REFUSES)
def test_a_value_torch_refuses_is_one_line_naming_it(values, named, allowed):
    with pytest.raises(UserError) as refused:
        validate({k: str(v) if isinstance(v, float) else v for k, v in values.items()})
    line = str(refused.value)
    assert named in line and allowed in line and "\n" not in line, line


# values torch.optim takes, at their edges
TORCH_TAKES = [
    {"optimizer": "sgd", "lr": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
    {"optimizer": "sgd", "lr": 100.0, "momentum": 0.999, "nesterov": True, "weight_decay": 10},
    {"optimizer": "adam", "momentum": 0.0},  # betas=(0, 0.999)
    {"optimizer": "adam", "momentum": 0.999999},
    {"optimizer": "adamw", "momentum": 0.9, "weight_decay": 0.0},
    {"optimizer": "rmsprop", "momentum": 0.0, "weight_decay": 5.0},
    {"optimizer": "sam", "sam_base": "sgd", "nesterov": True, "momentum": 0.9, "rho": 1e-6},
    {"optimizer": "sam", "sam_base": "rmsprop", "adaptive": True, "rho": 10.0},
]


@pytest.mark.parametrize("values", TORCH_TAKES)
def test_a_value_torch_takes_is_taken(values):
    cfg = validate(values)
    assert all(cfg[k] == v for k, v in values.items())


def test_nesterov_refused_under_sam_names_the_base_that_refuses_it():
    """optimizer=sam, sam_base=rmsprop and nesterov=True: the line said 'not allowed with
    optimizer='sam' and momentum=0.9: it needs sgd with momentum > 0', naming neither the
    key that is wrong (sam_base) nor a value the run has wrong (sam is not sgd, but sam on
    sgd takes nesterov)."""
    with pytest.raises(UserError) as refused:
        validate({"optimizer": "sam", "sam_base": "rmsprop", "nesterov": True})
    line = str(refused.value)
    assert line == ("nesterov=True is not allowed with optimizer='sam', sam_base='rmsprop': "
                    "it needs sgd, or sam with sam_base=sgd, with momentum > 0"), line


def test_a_bare_flag_of_no_parameter_is_an_unknown_parameter():
    """`--amsgrad` (torch's Adam flag; ${args_no_boolean_flags} of a sweep's true boolean)
    last on the line said '--amsgrad needs a value: --amsgrad=VALUE', as if amsgrad were a
    parameter that took one."""
    for argv in (["--amsgrad"], ["--lr=0.1", "--centered"]):
        with pytest.raises(UserError) as refused:
            validate(parse_args(argv))
        line = str(refused.value)
        assert line.startswith(f"unknown parameter '{argv[-1][2:]}'") and "needs a value" \
            not in line, line


@pytest.mark.parametrize("name, hint", [
    ("beta1", "(did you mean momentum?)"),
    ("eps", "(torch.optim's eps: fixed at 1e-8 here, torch's default for adam, adamw and "
            "rmsprop)"),
    ("beta2", "(torch.optim's beta2: fixed at 0.999 here, torch's default for adam and "
              "adamw; momentum is beta1)"),
    ("betas", "(torch.optim's betas: momentum is beta1; beta2 is fixed at 0.999 here, "
              "torch's default for adam and adamw)"),
    ("alpha", "(torch.optim's alpha: fixed at 0.99 here, torch's default for rmsprop)"),
    ("amsgrad", "(torch.optim's amsgrad: off here, torch's default for adam and adamw)"),
    ("centered", "(torch.optim's centered: off here, torch's default for rmsprop)"),
    ("dampening", "(torch.optim's dampening: fixed at 0 here, torch's default for sgd)"),
])
def test_torch_names_a_run_cannot_set_say_what_they_are_here(name, hint):
    """A torch user's sweep of eps was told 'did you mean epochs?', and one of beta1 or
    beta2 only the list of parameters."""
    with pytest.raises(UserError) as refused:
        validate(parse_args([f"--{name}=0.5"]))
    assert str(refused.value).startswith(f"unknown parameter '{name}' {hint}: allowed are "), \
        str(refused.value)


@pytest.mark.e2e
def test_the_command_line_refuses_them_with_exit_code_2_before_training(tmp_path):
    for argv, named in ((["--lr=-0.1"], "lr='-0.1'"),
                        (["--optimizer=adam", "--momentum=1"], "momentum='1'"),
                        (["--nesterov", "--momentum=0"], "nesterov=True"),
                        (["--optimizer=sam", "--rho=-1"], "rho='-1'")):
        done = subprocess.run([sys.executable, "-m", "agent.train", "--dataset=digits",
                               *argv], cwd=tmp_path, env=subprocess_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and named in done.stderr, done.stderr
        assert list(tmp_path.iterdir()) == [], argv  # no data, runs or logs folder

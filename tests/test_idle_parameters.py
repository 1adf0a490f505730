"""Parameters that only some models or optimizers use (Param.used_when, e.g. `hidden` only
with model=dense): the table is checked against real training, generated from it: where it
says a parameter is unused, two values of it train the same run bit for bit; where used,
they differ. A sweep that varies one no run can use says so at creation (a note, as W&B
accepts it), and the report leaves it out of its analysis."""

from __future__ import annotations

import pytest

from agent.params import BY_NAME, PARAMS
from agent.sweep.config import idle_parameters
from agent.trial.loop import train

USED_WHEN = [p for p in PARAMS if p.used_when is not None]
# two values of each parameter that would change a run that uses it
TWO_VALUES = {"hidden": (8, 16), "widths": ([8], [16]), "channels": ([4], [8]),
              "kernel_size": (3, 5), "batch_norm": (True, False), "width": (2, 4),
              "sam_base": ("sgd", "adam"), "rho": (0.05, 0.5),
              "adaptive": (False, True), "crop_padding": (1, 3), "flip": (False, True)}
SMALL = {"hidden": 16, "widths": [16], "channels": [4, 8], "width": 2}


def test_every_conditional_parameter_has_two_values_here():
    assert {p.name for p in USED_WHEN} == set(TWO_VALUES)


def condition(param, used: bool) -> dict:
    """A setting of the parameter it depends on where `param` is used (or is not)."""
    other, wanted = param.used_when
    choices = BY_NAME[other].allowed_choices() or (True, False)
    value = wanted[0] if used else next(c for c in choices if c not in wanted)
    return {other: value}


def summary(workdir, name: str, value, setting: dict) -> dict:
    config = {"dataset": "digits", "epochs": 1, "train_subset": 256, "batch_size": 64,
              "sinks": [], "histograms": False, "checkpoint": False, "num_threads": 1,
              "data_dir": str(workdir / "data"), "run_dir": str(workdir / "runs"),
              **SMALL, **setting, name: value}
    return train(config)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("param", USED_WHEN, ids=lambda p: p.name)
def test_the_table_says_where_a_parameter_changes_a_run(workdir, param):
    first, second = TWO_VALUES[param.name]
    for used in (False, True):
        setting = condition(param, used)
        a = summary(workdir, param.name, first, setting)
        b = summary(workdir, param.name, second, setting)
        same = all(a[k] == b[k] for k in ("train/loss", "val/loss", "test/loss"))
        assert same == (not used), (param.name, setting, a["train/loss"], b["train/loss"])


@pytest.mark.parametrize("param", USED_WHEN, ids=lambda p: p.name)
def test_a_sweep_varying_a_parameter_no_run_uses_says_so(param):
    other, wanted = param.used_when
    first, second = TWO_VALUES[param.name]
    for used in (False, True):
        fixed = condition(param, used)[other]
        config = {"method": "grid", "parameters": {
            "dataset": {"value": "digits"}, other: {"value": fixed},
            param.name: {"values": [first, second]}}}
        notes = idle_parameters(config)
        if used:
            assert notes == []
        else:
            (note,) = notes
            assert note.startswith(f"note: {param.name} is swept but changes nothing here")
            assert f"{other}={fixed}" in note
    # the depended-on parameter swept over used and unused values: some runs use it
    both = [condition(param, True)[other], condition(param, False)[other]]
    config = {"method": "grid", "parameters": {"dataset": {"value": "digits"},
                                                other: {"values": both},
                                                param.name: {"values": [first, second]}}}
    assert idle_parameters(config) == []

"""Parameters whose values are lists (`channels: [16, 32]`, `widths: [64, 64]`): a sweep may
choose among them like among numbers. Every reader that groups runs by value (TensorBoard's
HPARAMS domain, the report's groups and figures, repeats) keys on them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from agent.params import PARAMS
from agent.sweep_space import Choice, choice, choices, swept_parameters
from agent.trial.sinks.tensorboard_sink import experiment_summary, hparam_value
from conftest import subprocess_env

SWEEP = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
         "parameters": {"dataset": {"value": "digits"}, "model": {"values": ["cnn", "skip_mlp"]},
                        "channels": {"values": [[8, 16], [16, 32]]},
                        "widths": {"values": [[16], [32, 32]]}, "epochs": {"value": 1},
                        "train_subset": {"value": 300}, "sinks": {"value": ["tensorboard"]}}}


@pytest.mark.parametrize("value", [[16, 32], [[1, 2], [3]], [], ["a", 1.5, True]])
def test_a_choice_is_its_list_everywhere_and_a_key_too(value):
    made = choice(value)
    assert made == value and isinstance(made, list) and {made: 1}[choice(list(value))] == 1
    assert json.loads(json.dumps(made)) == value
    assert yaml.safe_load(yaml.safe_dump({"v": made})) == {"v": value}
    assert str(made) == str(value) and repr(made) == repr(value)
    assert choices({"x": value, "y": 3}) == {"x": value, "y": 3}
    assert type(choices({"x": 3})["x"]) is int


def test_swept_list_values_are_keys_and_the_hparams_domain_lists_each_once():
    swept = {p.name: p for p in swept_parameters(SWEEP)}
    assert set(swept["channels"].values) == {Choice([8, 16]), Choice([16, 32])}
    session = {"model": "cnn", "channels": hparam_value(swept["channels"], [8, 16]),
               "widths": hparam_value(swept["widths"], [16])}
    summary = experiment_summary({"config": SWEEP}, session)
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(
        summary.value[0].metadata.plugin_data.content)
    domains = {info.name: [v.string_value for v in info.domain_discrete.values]
               for info in data.experiment.hparam_infos}
    assert domains["channels"] == ["[8, 16]", "[16, 32]"]
    assert domains["widths"] == ["[16]", "[32, 32]"]


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_a_sweep_over_list_values_trains_reports_and_repeats(workdir):
    (workdir / "lists.yaml").write_text(yaml.safe_dump(SWEEP))
    env = subprocess_env(OMP_NUM_THREADS="1")
    launched = subprocess.run([sys.executable, "-m", "agent.launch", "lists.yaml", "--pack",
                               "auto"], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "8 finished" in launched.stdout, launched.stdout[-2000:]
    (sweep_id,) = [p.name for p in (workdir / "data" / "sweeps").iterdir()]
    for module, args in (("agent.report", []), ("agent.repeat", ["--seeds", "2"])):
        done = subprocess.run([sys.executable, "-m", module, sweep_id, *args], cwd=workdir,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (module, done.stderr[-3000:])
    report = (workdir / "reports" / sweep_id / "report.md").read_text()
    assert "channels=[8, 16]" in report and "widths=[32, 32]" in report


LIST_PARAMS = [p for p in PARAMS if p.type is list]


@pytest.mark.parametrize("param", LIST_PARAMS, ids=[p.name for p in LIST_PARAMS])
def test_every_list_parameter_swept_over_list_values_is_keyed_and_shown(param):
    # two list values of the parameter's item type, as a sweep file would give them
    first = list(param.default)[:1] or ([16] if param.item_type is int else ["tensorboard"])
    values = [first, first * 2]
    sweep = {"method": "grid", "parameters": {param.name: {"values": values}}}
    (swept,) = swept_parameters(sweep)
    assert len(set(swept.values)) == 2 and list(swept.values) == values
    summary = experiment_summary({"config": sweep}, {param.name: hparam_value(swept, first)})
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(
        summary.value[0].metadata.plugin_data.content)
    (info,) = data.experiment.hparam_infos
    assert [v.string_value for v in info.domain_discrete.values] == [str(v) for v in values]

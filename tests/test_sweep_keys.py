"""Every top-level key of W&B's sweep schema is honoured offline or refused in one line, none
silently dropped; keys are read from the engine's schema (sweeps/config/schema.json)."""

from __future__ import annotations

import warnings

import pytest
import yaml

from agent import metrics as metric_catalogue
from agent.sweep.config import TOP_LEVEL_KEYS, load_sweep_config
from agent.sweep.controller import claim
from agent.sweep.engine import run_field
from agent.sweep.target import create_local_sweep
from conftest import ROOT
from util.errors import UserError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sweeps.config.schema import sweep_config_jsonschema as SCHEMA

BASE = {"command": ["${env}", "python", "-m", "agent.train", "${args}"], "method": "random",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.1, 0.01]}}}
# A value for each key a local sweep honours (what it does: docs/wandb_compatibility.md).
HONOURED = {
    "method": "grid", "parameters": {"lr": {"values": [0.1]}}, "metric": BASE["metric"],
    "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}, "run_cap": 3,
    "name": "study", "description": "what this sweep is for", "command": BASE["command"],
    "program": "agent/train.py", "project": "a-project", "entity": "a-team",
    "controller": {"type": "local"}, "apiVersion": "v1", "kind": "sweep",
}
REFUSED = {  # key: (sweep changes that make the engine accept it, words of the refusal)
    "metrics": ({"method": "custom", "metric": None,
                 "metrics": [{"name": "val/acc", "goal": "maximize"},
                             {"name": "val/loss", "goal": "minimize"}]}, ["metrics"]),
    "scheduler": ({"method": "custom", "scheduler": {"engine": "optuna"}}, ["scheduler"]),
    "job": ({"job": "team/project/job:v0"}, ["job", "W&B Launch"]),
    "image_uri": ({"image_uri": "registry/image:tag"}, ["image_uri", "W&B Launch"]),
}


def write(tmp_path, config: dict):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    return path


def test_every_key_of_the_schema_is_honoured_or_refused():
    assert set(TOP_LEVEL_KEYS) == set(SCHEMA["properties"])
    assert set(HONOURED) | set(REFUSED) == set(SCHEMA["properties"])
    assert {key for key, reason in TOP_LEVEL_KEYS.items() if reason} == set(REFUSED)


@pytest.mark.parametrize("key", sorted(HONOURED))
def test_honoured_key_is_accepted_and_kept(tmp_path, monkeypatch, key):
    monkeypatch.chdir(ROOT)  # program: agent/train.py is found from here, as W&B's agent would
    config = load_sweep_config(write(tmp_path, {**BASE, key: HONOURED[key]}))
    assert key in config


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_refused_key_is_one_line_naming_it_and_creates_nothing(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    changes, words = REFUSED[key]
    with pytest.raises(UserError) as caught:
        create_local_sweep(write(tmp_path, {**BASE, **changes}))
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert not (tmp_path / "data").exists()


def test_method_custom_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="method: custom"):
        load_sweep_config(write(tmp_path, {**BASE, "method": "custom"}))


def test_scheduler_naming_the_engine_used_here_is_accepted(tmp_path):
    config = load_sweep_config(write(tmp_path, {**BASE, "scheduler": {"engine": "wandb"}}))
    assert config["scheduler"] == {"engine": "wandb"}


@pytest.mark.parametrize("key", sorted(SCHEMA["definitions"]["metric"]["properties"]))
def test_every_metric_key_is_accepted(tmp_path, key):
    values = {"name": "val/acc", "goal": "maximize", "target": 0.9, "impute": "best",
              "impute_while_running": "latest"}
    config = load_sweep_config(write(tmp_path, {**BASE, "metric": {
        "name": "val/acc", "goal": "maximize", key: values[key]}}))
    assert config["metric"][key] == values[key]


@pytest.mark.parametrize("goal, reached, other", [("maximize", 0.95, 0.5),
                                                  ("minimize", 0.05, 0.5)])
def test_metric_target_stops_new_runs_once_a_run_reaches_it(tmp_path, monkeypatch, goal,
                                                            reached, other):
    monkeypatch.chdir(tmp_path)
    name = "val/acc" if goal == "maximize" else "val/loss"
    store = create_local_sweep(write(tmp_path, {**BASE, "metric": {
        "name": name, "goal": goal, "target": 0.9 if goal == "maximize" else 0.1}}))
    (first,) = claim(store, "agent-a").runs
    store.finish(first.run_id, "agent-a", "finished", {name: other})
    second = claim(store, "agent-a")
    assert second.kind == "run"  # not reached yet: the sweep goes on
    (running,) = second.runs
    store.record_epoch(running.run_id, "agent-a", 1, {name: reached})  # reached, still running
    assert claim(store, "agent-b").kind == "wait"  # no new run; the running one ends
    store.finish(running.run_id, "agent-a", "finished", {name: reached})
    assert claim(store, "agent-b").kind == "done"
    assert len(store.runs()) == 2 and all(run_field(r, "state") == "finished"
                                          for r in store.runs())


def test_run_cap_caps_the_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = create_local_sweep(write(tmp_path, {**BASE, "run_cap": 2}))
    for _ in range(2):
        (claimed,) = claim(store, "agent-a").runs
        store.finish(claimed.run_id, "agent-a", "finished", {"val/acc": 0.5})
    assert claim(store, "agent-a").kind == "done"


@pytest.mark.parametrize("extra", [{"defaults": {"values": [0.1, 0.01]}},
                                   {"settings": {"x": 1}, "tags": ["a"]}, {"x-notes": "seven"}])
def test_keys_outside_wandbs_schema_are_left_out_with_a_note(tmp_path, monkeypatch, capsys,
                                                            extra):
    """W&B creates a sweep whose YAML has keys outside its schema (a `defaults:` key holding
    YAML anchors, `wandb sweep --settings`), after a warning; its engine never reads them.
    Offline: the same sweep, those keys left out, and a note naming them."""
    from agent.sweep.target import create_local_sweep

    monkeypatch.chdir(tmp_path)
    config = {"method": "grid", "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.1, 0.01]}},
              **extra}
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(config))
    store = create_local_sweep(path)
    out = capsys.readouterr().out
    stored = store.sweep().config
    assert not set(map(str, extra)) & set(map(str, stored))
    assert stored["parameters"]["lr"]["values"] == [0.1, 0.01]
    named = " ".join(out.split())
    assert "note: " in named and all(str(key) in named for key in extra)
    assert "schema: left out" in named


@pytest.mark.parametrize("typo, meant", [("paramters", "parameters"),
                                         ("early_terminat", "early_terminate"),
                                         ("methods", "method"), ("run_caps", "run_cap")])
def test_a_misspelt_key_is_refused_naming_the_key_meant(tmp_path, typo, meant):
    """Left out, a misspelt `early_terminate` would run the sweep without hyperband unnoticed
    (W&B would warn and go on): a key this close to one of the schema's is refused."""
    config = {"method": "grid", "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.1, 0.01]}},
              typo: {"type": "hyperband", "min_iter": 1}}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UserError) as refused:
        load_sweep_config(path)
    assert f"did you mean {meant}?" in str(refused.value) and "\n" not in str(refused.value)


def _metric_sweep(tmp_path, name, goal="maximize", **extra):
    config = {"method": "bayes", "metric": {"name": name, "goal": goal},
              "command": ["${env}", "python", "-m", "agent.train", "${args}"],
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "batch_size": {"values": [16, 32]}}, **extra}
    path = tmp_path / "metric.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


HYPERBAND = {"early_terminate": {"type": "hyperband", "min_iter": 1}}


@pytest.mark.parametrize("metric", metric_catalogue.METRICS, ids=lambda m: m.name)
def test_every_metric_of_the_catalogue_is_accepted_or_refused_for_its_reason(tmp_path, metric):
    """Generated from agent/metrics.py: any number a trial logs after an epoch or at its end
    under a fixed name may be a sweep's metric, in the goal the sweep gives (W&B optimises any
    logged key: a batch-size study of perf/images_per_s); hyperband needs one of every
    epoch. Step metrics (not in the epoch history), per-layer or per-class names and the
    confusion matrix are refused, naming why."""
    metrics = metric_catalogue
    scalar = metrics.EPOCH if metric.when == metrics.EPOCH else metrics.END
    fixed = "<" not in metric.name and metric.name != "test/confusion_matrix"
    if metric.when in (metrics.EPOCH, metrics.END) and fixed:
        for goal in ("maximize", "minimize"):
            assert load_sweep_config(_metric_sweep(tmp_path, metric.name, goal))
        if scalar == metrics.EPOCH:
            assert load_sweep_config(_metric_sweep(tmp_path, metric.name, **HYPERBAND))
        else:
            with pytest.raises(UserError, match="early_terminate needs a metric logged every"):
                load_sweep_config(_metric_sweep(tmp_path, metric.name, **HYPERBAND))
        return
    with pytest.raises(UserError) as refused:
        load_sweep_config(_metric_sweep(tmp_path, metric.name))
    text = str(refused.value)
    assert "\n" not in text and "metric.name" in text
    if metric.when == metrics.STEP:
        assert "logged at steps" in text


def test_a_hyperband_key_outside_the_schema_is_left_out_with_a_note(tmp_path, monkeypatch,
                                                                    capsys):
    """The engine drops early_terminate keys its schema lacks before deciding which runs to
    stop ('to maintain compatibility we will allow them here', sweeps/hyperband_stopping.py),
    and `wandb sweep` creates such a sweep after its warning: offline the same hyperband, the
    key left out, and a note naming it; it was refused ('Additional properties are not
    allowed'). A near miss of hyperband's own keys (etta for eta) is refused naming the key
    meant, as at the top level: left out, it would stop runs at other epochs (eta 3)."""
    from agent.sweep.target import create_local_sweep

    monkeypatch.chdir(tmp_path)

    def sweep(terminate: dict):
        path = tmp_path / "hb.yaml"
        path.write_text(yaml.safe_dump({
            **BASE, "early_terminate": {"type": "hyperband", "min_iter": 1, **terminate}}))
        return path

    store = create_local_sweep(sweep({"eta": 2, "comment": "from our old config"}))
    assert store.sweep().config["early_terminate"] == {"type": "hyperband", "min_iter": 1,
                                                      "eta": 2, "strict": True}
    said = " ".join(capsys.readouterr().out.split())
    assert "note: " in said and "early_terminate.comment" in said and "left out" in said
    with pytest.raises(UserError) as refused:
        load_sweep_config(sweep({"etta": 2}))
    assert "early_terminate.etta" in str(refused.value) and \
        "did you mean eta?" in str(refused.value), str(refused.value)

"""The offline dashboard: ./run_tensorboard.sh on a real local sweep, read back over HTTP.

A small sweep (digits, optimizer x lr, TensorBoard sink only) runs first; then TensorBoard is
started on loopback through run_tensorboard.sh, and its HTTP API must list every run, and the
hparams plugin must show each run as a session group with the run's hyper-parameters and final
metrics, exactly what the HPARAMS tab (table and parallel coordinates) draws.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.e2e  # agents, then TensorBoard's server, as processes
SCRIPT = ROOT / "run_tensorboard.sh"
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
OPTIMIZERS = ["sgd", "adam"]
LRS = [0.05, 0.002]
# What the HPARAMS tab's query pane sends (tf-hparams-query-pane in TensorBoard's frontend):
# GetExperimentRequest, then ListSessionGroupsRequest with one colParam per hparam and metric.
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def make_sweep(workdir: Path) -> SweepStore:
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "data_dir": {"value": str(workdir / "data")},
                             "model": {"value": "dense"}, "hidden": {"value": 32},
                             "epochs": {"value": 2}, "batch_size": {"value": 64},
                             "sinks": {"value": ["tensorboard"]},
                             "optimizer": {"values": OPTIMIZERS}, "lr": {"values": LRS}}}
    return create_store(workdir / "data" / "sweeps" / "tbdash", "tbdash", "tbdash", config)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


def post_json(base: str, path: str, body: dict):
    # The frontend POSTs the request as JSON text (contentType text/plain).
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(predicate, timeout: float, what: str, server: subprocess.Popen, log: Path):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"TensorBoard exited with {server.returncode}: "
                                 f"{log.read_text()[-2000:]}")
        try:
            result = predicate()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            last = error
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last error: {last}); "
                         f"TensorBoard said: {log.read_text()[-2000:]}")


def metric_values(entries: list[dict]) -> dict[str, float]:
    return {entry["name"]["tag"]: entry["value"] for entry in entries
            if not entry["name"].get("group")}


@pytest.mark.timeout(180)
def test_hparams_tab_shows_every_run_with_its_hparams_and_final_metrics(workdir):
    store = make_sweep(workdir)
    agent = subprocess.run([sys.executable, "-m", "agent.sweep.agent_loop", str(store.directory)],
                           cwd=workdir, env=subprocess_env(OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=120)
    assert agent.returncode == 0, agent.stderr[-3000:]
    runs = store.runs()
    assert len(runs) == len(OPTIMIZERS) * len(LRS)
    assert all(r.state == "finished" for r in runs), [r.state for r in runs]
    # TensorBoard names a run by its directory under the logdir: <sweep name>/<run id>.
    expected = {f"tbdash/{r.id}": r for r in runs}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "tensorboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(SCRIPT), "--logdir", str(workdir / "data" / "logs"),
                                   "--port", str(port)], cwd=workdir, env=subprocess_env(),
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Every run is loaded (TensorBoard reads the logdir in the background).
        listed = wait_for(lambda: set(expected) <= set(get_json(base, "/data/runs"))
                          and get_json(base, "/data/runs"), 60, "the runs in /data/runs",
                          server, log)
        assert set(listed) == set(expected)

        experiment = wait_for(
            lambda: (e := post_json(base, "/data/plugin/hparams/experiment",
                                    {"experimentName": "", "hparamsLimit": 1000}))
            .get("hparamInfos") and e, 30, "the hparams experiment", server, log)
        hparam_names = {info["name"] for info in experiment["hparamInfos"]}
        metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert {"optimizer", "lr", "batch_size", "model"} <= hparam_names
        assert {"val/acc", "test/acc", "val/loss", "val/best_acc"} <= metric_tags

        col_params = ([{"hparam": info["name"], "includeInResult": True}
                       for info in experiment["hparamInfos"]]
                      + [{"metric": info["name"], "includeInResult": True}
                         for info in experiment["metricInfos"]])
        request = {"experimentName": "", "allowedStatuses": STATUSES, "colParams": col_params,
                   "startIndex": 0, "sliceSize": 100}

        def complete_groups():
            answer = post_json(base, "/data/plugin/hparams/session_groups", request)
            groups = answer.get("sessionGroups", [])
            sessions = {s["name"] for g in groups for s in g["sessions"]}
            done = all("test/acc" in metric_values(g.get("metricValues", [])) for g in groups)
            return answer if sessions == set(expected) and done else None

        answer = wait_for(complete_groups, 30, "a session group per run", server, log)
        assert answer["totalSize"] == len(runs)
        for group in answer["sessionGroups"]:
            (session,) = group["sessions"]  # every configuration of the grid is its own group
            run = expected[session["name"]]
            config, summary = run.config, run.summary
            assert group["hparams"]["optimizer"] == config["optimizer"]
            assert group["hparams"]["lr"] == pytest.approx(config["lr"], rel=1e-12)
            assert group["hparams"]["epochs"] == config["epochs"] == 2
            assert session["status"] == "STATUS_SUCCESS"
            metrics = metric_values(group["metricValues"])
            # Scalars are stored as float32: equal to the store's summary within that precision.
            for tag in ("val/acc", "test/acc", "val/best_acc", "val/loss"):
                assert metrics[tag] == pytest.approx(summary[tag], rel=1e-6, abs=1e-7), tag
            assert metric_values(session["metricValues"])["test/acc"] == pytest.approx(
                summary["test/acc"], rel=1e-6, abs=1e-7)
        # The parallel-coordinates axes: both optimizers and both learning rates are there.
        groups = answer["sessionGroups"]
        assert sorted({g["hparams"]["optimizer"] for g in groups}) == sorted(OPTIMIZERS)
        assert sorted({g["hparams"]["lr"] for g in groups}) == sorted(LRS)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["--bogus"], ["--port"], ["--port", "http"],
                                  ["--logdir"]])
def test_bad_option_is_one_line_and_exit_2(tmp_path, args):
    result = subprocess.run([str(SCRIPT), *args], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert "error:" in result.stderr and args[0] in result.stderr

"""The offline dashboard: ./run_tensorboard.sh on a real local sweep, read back over HTTP and
looked at in a headless browser.

A small course-like grid (digits, optimizer x lr over four decades x dropout, TensorBoard sink
only) runs first, then repeat sweeps of its best runs. TensorBoard serves the sweep's own log
directory; its HTTP API must list exactly the sweep's runs with only the swept parameters as
hparams (log10 of lr, which the sweep spreads over decades) and the rest as run text, and a
headless Chromium (playwright) must see the HPARAMS parallel coordinates open with those axes
and the metrics, without anyone ticking a column or choosing a scale.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.e2e  # agents, then TensorBoard's server (and a browser), as processes
SCRIPT = ROOT / "run_tensorboard.sh"
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]
OPTIMIZERS = ["sgd", "adam"]
LRS = [0.1, 0.001, 0.00001]  # four decades: the sweep is log-distributed in lr
DROPOUTS = [0.0, 0.5]
SWEPT_COLUMNS = {"optimizer", "log10(lr)", "dropout"}
# The five metrics the HPARAMS frontend ticks first, in the sink's order.
SHOWN_METRICS = ["val/acc", "test/acc", "val/loss", "train/loss", "wall_s"]
# What the HPARAMS tab's query pane sends (tf-hparams-query-pane in TensorBoard's frontend):
# GetExperimentRequest, then ListSessionGroupsRequest with one colParam per hparam and metric.
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
SCREENSHOT_ENV = "HPARAMS_SCREENSHOT"  # a path: the browser test also saves its picture there


def make_sweep(workdir: Path) -> SweepStore:
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "data_dir": {"value": str(workdir / "data")},
                             "model": {"value": "dense"}, "hidden": {"value": 32},
                             "epochs": {"value": 2}, "batch_size": {"value": 64},
                             "sinks": {"value": ["tensorboard"]},
                             "optimizer": {"values": OPTIMIZERS}, "lr": {"values": LRS},
                             "dropout": {"values": DROPOUTS}}}
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


def run_module(workdir: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", *args], cwd=workdir,
                          env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@contextmanager
def served(workdir: Path, logdir: Path, runs: set[str]):
    """./run_tensorboard.sh serving `logdir` until every one of `runs` is listed and the
    HPARAMS experiment is there: (base url, server, its log, the experiment); stopped after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "tensorboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(SCRIPT), "--logdir", str(logdir), "--port", str(port)],
                                  cwd=workdir, env=subprocess_env(), stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: set(get_json(base, "/data/runs")) >= runs, 60, "the runs",
                 server, log)
        experiment = wait_for(
            lambda: (e := post_json(base, "/data/plugin/hparams/experiment",
                                    {"experimentName": "", "hparamsLimit": 1000}))
            .get("hparamInfos") and e, 30, "the hparams experiment", server, log)
        yield base, server, log, experiment
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The sweep, its repeats (best run per optimizer, 2 seeds), and TensorBoard serving the
    sweep's directory: (workdir, store, base url, experiment, session groups)."""
    workdir = tmp_path_factory.mktemp("tbdash")
    store = make_sweep(workdir)
    run_module(workdir, "agent.sweep.agent_loop", str(store.directory))
    run_module(workdir, "agent.repeat", "tbdash", "--top", "1", "--by", "optimizer",
               "--seeds", "2", "--run")
    expected = {r.id for r in store.runs()}
    with served(workdir, workdir / "data" / "logs" / "tbdash-tbdash", expected) as (
            base, server, log, experiment):
        request = {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0,
                   "sliceSize": 100,
                   "colParams": [{"hparam": i["name"], "includeInResult": True}
                                 for i in experiment["hparamInfos"]]
                   + [{"metric": i["name"], "includeInResult": True}
                      for i in experiment["metricInfos"]]}

        def complete_groups():
            groups = post_json(base, "/data/plugin/hparams/session_groups",
                               request).get("sessionGroups", [])
            done = all("test/acc" in metric_values(g.get("metricValues", [])) for g in groups)
            return groups if len(groups) == len(expected) and done else None

        groups = wait_for(complete_groups, 30, "a session group per run", server, log)
        yield workdir, store, base, experiment, groups


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_hparams_are_the_swept_parameters_with_lr_in_log10(dashboard):
    workdir, store, base, experiment, groups = dashboard
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert set(infos) == SWEPT_COLUMNS  # no constant column (epochs, model, hidden...)
    assert sorted(infos["log10(lr)"]["domainDiscrete"]) == [-5.0, -3.0, -1.0]
    assert sorted(infos["optimizer"]["domainDiscrete"]) == sorted(OPTIMIZERS)
    assert all(info["differs"] for info in infos.values())
    assert [m["name"]["tag"] for m in experiment["metricInfos"]][:5] == SHOWN_METRICS

    runs = {r.id: r for r in store.runs()}
    assert {s["name"] for g in groups for s in g["sessions"]} == set(runs)  # no repeat run
    for group in groups:
        (session,) = group["sessions"]  # every configuration of the grid is its own group
        run = runs[session["name"]]
        assert set(group["hparams"]) == SWEPT_COLUMNS
        assert group["hparams"]["optimizer"] == run.config["optimizer"]
        assert group["hparams"]["log10(lr)"] == round(math.log10(run.config["lr"]), 6)
        assert group["hparams"]["dropout"] == run.config["dropout"]
        assert session["status"] == "STATUS_SUCCESS"
        metrics = metric_values(group["metricValues"])
        # Scalars are stored as float32: equal to the store's summary within that precision.
        for tag in ("val/acc", "test/acc", "val/loss", "val/best_acc"):
            assert metrics[tag] == pytest.approx(run.summary[tag], rel=1e-6, abs=1e-7), tag


# How many hparam columns TensorBoard's HPARAMS frontend ticks when the tab opens: the
# first five of the experiment's, those marked `differs` first (tf-hparams-query-pane:
# `t.sort((i,o)=>i.info.differs===o.info.differs?0:i.info.differs?-1:1); n=Math.min(5,...)`).
TICKED_COLUMNS = 5


def ticked_columns(experiment: dict) -> list[str]:
    """The hparam columns the HPARAMS tab opens with ticked, as its frontend picks them."""
    infos = sorted(experiment["hparamInfos"], key=lambda info: not info.get("differs", False))
    return [info["name"] for info in infos[:TICKED_COLUMNS]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_distributions_column_is_ticked_beside_five_lists(tmp_path):
    """A random sweep over lr by a distribution and five `values` lists: TensorBoard ticks
    the first five columns of those marked `differs`, and log10(lr), which had no domain and
    so was not marked, was the one column left unticked (it came last, after the lists).
    Every swept column is marked now, so lr is ticked (TensorBoard keeps the name order)."""
    lists = {"optimizer": ["sgd", "adam"], "dropout": [0.0, 0.2], "momentum": [0.8, 0.9],
             "label_smoothing": [0.0, 0.1], "warmup_epochs": [0.0, 0.5]}
    config = {"program": "agent/train.py", "command": COMMAND, "method": "random",
              "run_cap": 2, "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"},
                             "data_dir": {"value": str(tmp_path / "data")},
                             "model": {"value": "dense"}, "hidden": {"value": 16},
                             "epochs": {"value": 1}, "sinks": {"value": ["tensorboard"]},
                             "lr": {"distribution": "log_uniform_values", "min": 0.001,
                                    "max": 0.1},
                             **{name: {"values": values} for name, values in lists.items()}}}
    store = create_store(tmp_path / "data" / "sweeps" / "tbdist", "tbdist", "tbdist", config)
    run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory))
    runs = {r.id for r in store.runs()}
    assert len(runs) == 2
    with served(tmp_path, tmp_path / "data" / "logs" / "tbdist-tbdist", runs) as (
            base, server, log, experiment):
        infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert set(infos) == {"log10(lr)", *lists}
    assert all(info["differs"] for info in infos.values()), infos
    assert "log10(lr)" in ticked_columns(experiment)
    assert len(infos) > TICKED_COLUMNS  # one of the lists is left for the user to tick


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_fixed_parameters_are_the_runs_text(dashboard):
    workdir, store, base, experiment, groups = dashboard
    run = store.runs()[0]
    (entry,) = get_json(base, f"/data/plugin/text/text?run={run.id}"
                              "&tag=run/config/text_summary")
    text = entry["text"]  # TensorBoard renders the markdown table as HTML
    for name, value, kind in (("epochs", "2", "fixed"), ("hidden", "32", "fixed"),
                              ("batch_size", "64", "fixed"), ("momentum", "0.9", "fixed"),
                              ("optimizer", run.config["optimizer"], "swept")):
        assert f"<td>{name}</td>\n<td>{value}</td>\n<td>{kind}</td>" in text, name


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_repeat_runs_log_apart_from_the_sweep(dashboard):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    workdir, store, base, experiment, groups = dashboard
    logs = workdir / "data" / "logs"
    assert {p.name for p in (logs / "tbdash-tbdash").iterdir()} == {r.id for r in store.runs()}
    repeat_runs = sorted((logs / "tbdash-tbdash-repeats").glob("*/*"))
    assert len(repeat_runs) == 2 * len(OPTIMIZERS)  # best run per optimizer, 2 seeds each
    for run_dir in repeat_runs:
        (events,) = run_dir.glob("events.out.tfevents.*")
        starts = [metadata.parse_session_start_info_plugin_data(
            value.metadata.plugin_data.content)
            for event in EventFileLoader(str(events)).Load() for value in event.summary.value
            if value.tag == metadata.SESSION_START_INFO_TAG]
        # The original sweep's search space stays the columns (one value each), with seed.
        assert set(starts[0].hparams) == {"optimizer", "lr", "dropout", "seed"}
        assert starts[0].hparams["seed"].number_value in (1.0, 2.0)  # fresh seeds, not 0


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> None:
    """A headless Chromium driven by playwright; CI installs both (.ci/setup_clusters.sh,
    requirements-dev.txt) and fails without them, elsewhere the test is skipped."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (pip install -r requirements-dev.txt)"
    if problem is None and chromium_executable() is None:
        problem = "no chromium on the PATH (apt-get install chromium)"
    if problem and os.environ.get("CI"):
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_hparams_parallel_coordinates_open_on_the_course_chart(dashboard, tmp_path):
    """What a student sees after one click on PARALLEL COORDINATES VIEW (no URL selects the
    sub-tab): the swept parameters and the first metrics as axes, lr in log10, nothing to
    tick or rescale first. The picture is saved (and to $HPARAMS_SCREENSHOT when set)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    workdir, store, base, experiment, groups = dashboard
    picture = tmp_path / "hparams.png"
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium_executable(),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(base + "/#hparams", wait_until="networkidle")
            page.get_by_text("Parallel Coordinates View").click()
            plot = page.locator("tf-hparams-parallel-coords-plot")
            plot.locator("path").first.wait_for(timeout=30_000)
            time.sleep(1)  # the lines are drawn in a transition
            titles = plot.locator("text.axis-title").all_text_contents()
            ticks = plot.locator("g.axis .tick text").all_text_contents()
            lines = plot.locator("g.foreground path").count()
            page.screenshot(path=str(picture))
        finally:
            browser.close()
    # Exactly the swept parameters (TensorBoard sorts them by name), then the first metrics.
    assert titles == sorted(SWEPT_COLUMNS) + SHOWN_METRICS, titles
    assert {"-1.0", "-3.0", "-5.0"} <= set(ticks) and {"adam", "sgd"} <= set(ticks), ticks
    assert lines >= len(store.runs())  # a line per run (TensorBoard adds shadow paths)
    assert picture.stat().st_size > 30_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copy(picture, os.environ[SCREENSHOT_ENV])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["--bogus"], ["--port"], ["--port", "http"],
                                  ["--logdir"], ["--port=080"], ["--port", "0"],
                                  ["--port=70000"], ["--logdir="]])
def test_bad_option_is_one_line_and_exit_2(tmp_path, args):
    result = subprocess.run([str(SCRIPT), *args], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert "error:" in result.stderr and args[0].split("=")[0] in result.stderr


@pytest.mark.timeout(60)
def test_help_and_a_taken_port(tmp_path):
    """--help prints the usage (exit 0); a port another program holds is one line, exit 2,
    before TensorBoard starts (it would print its own traceback and exit 255)."""
    shown = subprocess.run([str(SCRIPT), "--help"], cwd=tmp_path, env=subprocess_env(),
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--logdir" in shown.stdout and "--port" in shown.stdout
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = subprocess.run([str(SCRIPT), f"--port={port}"], cwd=tmp_path,
                               env=subprocess_env(), capture_output=True, text=True,
                               timeout=30)
    assert taken.returncode == 2, (taken.stdout, taken.stderr)
    assert taken.stderr.strip().splitlines() == [
        f"error: --port={port} is taken on 127.0.0.1 (Address already in use): choose "
        "another, e.g. --port 6007"]


def time_wait_port() -> int:
    """A port whose only sockets are TIME-WAIT connections, made for real as a TensorBoard
    stopped a moment ago leaves them: a server that binds as werkzeug's does (SO_REUSEADDR,
    its allow_reuse_address; the kernel lets a new bind with that option past a TIME-WAIT
    entry only where the old socket had it too) accepts a connection and closes its side
    first, then stops listening."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: it is the one to TIME-WAIT
            assert client.recv(1) == b""
    with socket.socket() as plain:  # a bind without SO_REUSEADDR is refused there
        with pytest.raises(OSError, match="Address already in use"):
            plain.bind(("127.0.0.1", port))
    return port


@pytest.mark.timeout(120)
def test_a_port_left_in_time_wait_is_served_and_a_listening_one_refused(tmp_path):
    """Right after a TensorBoard on a port was stopped, only TIME-WAIT connections hold it:
    TensorBoard's own bind (SO_REUSEADDR) takes it, but the script's check, binding without
    that option, said "--port=N is taken (Address already in use)". The check binds as the
    server does: that port is served; one a socket listens on (with SO_REUSEADDR too) is
    still refused in one line."""
    port = time_wait_port()
    log = tmp_path / "tensorboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(SCRIPT), "--logdir", str(tmp_path), "--port", str(port)],
                                  cwd=tmp_path, env=subprocess_env(), stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{port}", "/data/runs") == [], 60,
                 "TensorBoard on the port", server, log)
    finally:
        if server.poll() is None:  # refused, it has ended already
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        refused = subprocess.run([str(SCRIPT), "--port", str(taken)], cwd=tmp_path,
                                 env=subprocess_env(), capture_output=True, text=True,
                                 timeout=30)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: --port={taken} is taken on 127.0.0.1 (Address already in use): choose "
        "another, e.g. --port 6007"], refused.stderr

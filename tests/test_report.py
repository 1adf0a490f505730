"""The study report on a small real sweep (digits, local engine), its repeat sweeps, and the
cases with nothing to report."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from agent.sweep.store import create_store
from agent.sweep.target import open_store
from conftest import subprocess_env

pytestmark = pytest.mark.e2e  # every test runs the commands (agent loop, report) as processes
COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]


def run_module(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A grid over model x optimizer x lr on digits (lr=100 diverges), its repeat sweeps
    (best run per model, 3 seeds) and the report."""
    work = tmp_path_factory.mktemp("study")
    config = {"program": "agent/train.py", "command": COMMAND, "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 2},
                             "channels": {"value": [8, 16]}, "hidden": {"value": 32},
                             "sinks": {"value": []}, "batch_size": {"value": 64},
                             "model": {"values": ["dense", "cnn"]},
                             "optimizer": {"values": ["sgd", "adam"]},
                             "lr": {"values": [0.01, 100.0]}}}
    store = create_store(work / "data" / "sweeps" / "base", "base", "digits-study", config)
    agent = run_module(work, "agent.sweep.agent_loop", str(store.directory))
    assert agent.returncode == 0, agent.stderr[-2000:]
    repeat = run_module(work, "agent.repeat", "base", "--top", "1", "--by", "model",
                        "--seeds", "3", "--run")
    assert repeat.returncode == 0, repeat.stderr[-2000:]
    report = run_module(work, "agent.report", "base")
    assert report.returncode == 0, report.stderr[-3000:]
    return work


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_report_has_every_section_computed_from_the_runs(study_dir):
    out = study_dir / "reports" / "base"
    text = (out / "report.md").read_text()
    for heading in ("## Dataset", "## Baselines", "## All runs in parallel coordinates",
                    "## Best configurations over seeds", "## Convergent and divergent runs",
                    "## Training curves of the best runs", "## The best run",
                    "## Hyper-parameter importance", "## Weight norms per layer",
                    "## Grad-CAM"):
        assert heading in text, heading
    for image in re.findall(r"\]\(([\w.]+\.png)\)", text):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8 and 'src="' not in html.replace(
        'src="data:', "")

    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 8 and {r["model"] for r in rows} == {"dense", "cnn"}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_confidence_intervals_match_a_direct_computation(study_dir):
    text = (study_dir / "reports" / "base" / "report.md").read_text()
    repeats = [open_store(str(p.parent)) for p in (study_dir / "data" / "sweeps").glob(
        "*/sweep.db") if p.parent.name != "base"]
    assert len(repeats) == 2  # one per model
    for store in repeats:
        values = [r.summary["val/acc"] for r in store.runs()]
        assert len(values) == 3 and sorted(r.config["seed"] for r in store.runs()) == [0, 1, 2]
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert f"{mean:.4f} ± {half:.4f} (n=3)" in text
        assert store.sweep().id in text  # the table names its repeat sweep


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_baselines_match_the_test_set_class_counts(study_dir):
    from util.datasets import load_decoded

    data = load_decoded("digits", study_dir / "data")
    test = data.test_y.tolist()
    majority = Counter(data.train_y.tolist()).most_common(1)[0][0]
    expected = Counter(test)[majority] / len(test)
    text = (study_dir / "reports" / "base" / "report.md").read_text()
    assert f"| majority class | {expected:.4f} |" in text
    random_row = re.search(r"\| random \| ([\d.]+) \|", text)
    assert random_row and 0.02 < float(random_row.group(1)) < 0.2  # ~1/10, drawn for real


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_divergent_runs_are_named_by_the_written_rule(study_dir):
    text = (study_dir / "reports" / "base" / "report.md").read_text()
    store = open_store(str(study_dir / "data" / "sweeps" / "base"))
    diverged = [r.id for r in store.runs() if r.summary and r.summary["diverged"]]
    assert diverged  # lr=100 blew up
    line = next(line for line in text.splitlines() if line.startswith("Convergent:"))
    for run_id in diverged:
        assert run_id in line
    assert "Rule: a run is **divergent**" in text


@pytest.mark.timeout(120)
def test_empty_sweep_gives_a_report_that_says_so(tmp_path):
    create_store(tmp_path / "data" / "sweeps" / "empty", "empty", "empty",
                 {"method": "grid", "parameters": {"lr": {"value": 0.1}}})
    result = run_module(tmp_path, "agent.report", "empty")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "reports" / "empty" / "report.md").read_text()
    assert "This sweep has no runs yet" in text


@pytest.mark.timeout(240)
def test_only_failed_runs_give_a_report_that_says_so(tmp_path):
    store = create_store(tmp_path / "data" / "sweeps" / "failing", "failing", "failing",
                         {"method": "grid", "parameters": {
                             "dataset": {"value": "mnist"}, "sinks": {"value": []},
                             "lr": {"values": [0.1, 0.2, 0.3]}}})
    assert run_module(tmp_path, "agent.sweep.agent_loop", str(store.directory)).returncode == 1
    result = run_module(tmp_path, "agent.report", "failing")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "reports" / "failing" / "report.md").read_text()
    assert "all 3 runs failed" in text and "dataset='mnist'" in text  # each run's one line


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["someone/project/abc123", "no-such-sweep"])
def test_unreachable_or_unknown_sweep_is_one_line_exit_2(tmp_path, target):
    result = run_module(tmp_path, "agent.report", target)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "reports").exists()

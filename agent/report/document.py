"""`python -m agent.report <sweep>`: turn a sweep into the study a course or a paper asks for.

Reads a local sweep or a W&B sweep (agent/study.py), computes (agent/report_stats.py), draws
(agent/report_figures.py) and writes reports/<sweep>/: report.md, a self-contained
report.html, the PNG figures and runs.csv. Every number in it is computed from the runs and
the dataset; a section without data says so.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import re
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console

from agent import metrics
from agent.params import TEXT_KINDS
from agent.report import figures, stats
from agent.report.study import RunRecord, Study, load_study, repeats_of
from util.errors import CommandParser, UserError, brief

SUMMARY_COLUMNS = metrics.names(summary=True)
GRADCAM_IMAGES = 6


class Report:
    """Markdown lines and figure files, gathered section by section."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + " --- |" * len(header))
        self.add(*("| " + " | ".join(row) + " |" for row in rows))
        self.add("")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci_text(values: list[float]) -> str:
    mean, half, n = stats.t_interval(values)
    return f"{mean:.4f} ± {half:.4f} (n={n})" if half is not None else f"{mean:.4f} (n={n})"


def config_text(run: RunRecord, names: list[str]) -> str:
    def value(name):
        v = run.config.get(name, run.params.get(name))
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{n}={value(n)}" for n in names)


def write_csv(study: Study, path: Path) -> None:
    keys = sorted({k for run in study.runs for k in run.config if k != "sweep"})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run_id", "state", *keys, *SUMMARY_COLUMNS])
        for run in study.runs:
            writer.writerow([run.id, run.state, *(json.dumps(run.config[k])
                                                   if isinstance(run.config.get(k), list)
                                                   else run.config.get(k, "") for k in keys),
                             *(run.summary.get(k, "") for k in SUMMARY_COLUMNS)])


def dataset_section(report: Report, study: Study, reference: RunRecord) -> dict | None:
    from util.datasets import load_decoded

    params = reference.params
    report.add("## Dataset", "")
    try:
        data = load_decoded(params.dataset, params.data_dir)
    except UserError as error:
        report.add(f"The dataset's files are not available here, so the dataset sections are "
                   f"left out ({error}).", "")
        return None
    classes = data.classes
    train = data.train_y.tolist()
    test = data.test_y.tolist()
    train_counts = [Counter(train)[i] for i in range(len(classes))]
    test_counts = [Counter(test)[i] for i in range(len(classes))]
    report.add(f"`{params.dataset}`: {len(train)} training images (of which a fraction "
               f"`val_split={params.val_split}` is held out for validation), {len(test)} test "
               f"images, {len(classes)} classes.", "")
    figures.class_histograms(train_counts, test_counts, classes,
                             report.out_dir / "class_histograms.png")
    report.add("![class histograms](class_histograms.png)", "")
    base = stats.baselines(train, test, len(classes))
    report.add("## Baselines", "",
               "Computed on the real test set: a random model guessing classes uniformly "
               "(seeded) and a majority-class model that always predicts the training set's "
               f"most frequent class (`{classes[base['majority_class']]}`).", "")
    report.table(["model", "test accuracy"],
                 [["random", fmt(base["random"])], ["majority class", fmt(base["majority"])]])
    return {"classes": classes, "baselines": base, "data": data}


def parallel_section(report: Report, study: Study, scored: list[RunRecord],
                     baseline: float | None) -> list[str]:
    axes = stats.varying_parameters(study.runs)
    rows = [{**{a: r.config.get(a, r.params.get(a)) for a in axes},
             study.metric: r.metric(study.metric)} for r in scored]
    report.add("## All runs in parallel coordinates", "",
               f"One line per run with a value of `{study.metric}`; axes are the parameters "
               "the sweep varies; colour is the metric (brighter is better).", "")
    figures.parallel_coordinates(rows, axes, study.metric, study.goal,
                                 report.out_dir / "parallel_all.png", "all runs")
    report.add("![parallel coordinates, all runs](parallel_all.png)", "")
    if baseline is not None:
        better = [row for row in rows if row[study.metric] > baseline] \
            if study.goal == "maximize" else rows
        report.add(f"Runs better than the random baseline ({baseline:.4f}): {len(better)} of "
                   f"{len(rows)}.", "")
        figures.parallel_coordinates(better, axes, study.metric, study.goal,
                                     report.out_dir / "parallel_better.png",
                                     "runs better than random")
        report.add("![parallel coordinates, better than random](parallel_better.png)", "")
    return axes


def repeats_section(report: Report, study: Study, axes: list[str],
                    baselines: dict | None) -> None:
    repeats = repeats_of(study)
    report.add("## Best configurations over seeds", "")
    if repeats:
        report.add("Each configuration is the best (or second best) of its group in the sweep, "
                   "run again with seeds 0..n-1 (`python -m agent.repeat`). Mean ± half-width "
                   "of the 95% t-interval, n runs.", "")
    else:
        report.add("No repeat sweep exists yet, so each configuration has one run and no "
                   "interval: `python -m agent.repeat "
                   f"{study.sweep_id} --top 2 --by model --seeds 5` creates them.", "")
    for by in ("model", "optimizer"):
        rows, means = [], []
        for group, runs in stats.best_per_group(study.scored_runs(), by, 2).items():
            for run in runs:
                repeat = repeats.get(run.id)
                runs_used = ([r for r in repeat.runs if r.metric(study.metric) is not None]
                             if repeat else [run])
                metric_values = [r.metric(study.metric) for r in runs_used]
                test_values = [r.metric("test/acc") for r in runs_used
                               if r.metric("test/acc") is not None]
                means.append(stats.t_interval(metric_values)[0])
                rows.append([group, config_text(run, [a for a in axes if a != by]),
                             ci_text(metric_values),
                             ci_text(test_values) if test_values else "–",
                             repeat.sweep_id if repeat else "–"])
        if not rows:
            continue
        best = (max if study.goal == "maximize" else min)(range(len(means)),
                                                            key=lambda i: means[i])
        rows[best] = [f"**{cell}**" for cell in rows[best]]
        if baselines:
            for name in ("random", "majority"):
                rows.append([f"{name} baseline", "", "", fmt(baselines[name]), ""])
        report.add(f"### By {by}", "")
        report.table([by, "configuration", study.metric, "test/acc", "repeat sweep"], rows)


def convergence_section(report: Report, study: Study) -> None:
    groups: dict[str, list] = {"convergent": [], "divergent": []}
    for run in study.runs:
        verdict = stats.is_divergent(run)
        if verdict is not None:
            groups["divergent" if verdict else "convergent"].append(run)
    report.add("## Convergent and divergent runs", "", f"Rule: {stats.CONVERGENCE_RULE}.", "",
               f"Convergent: {len(groups['convergent'])}; divergent: "
               f"{len(groups['divergent'])} ("
               + (", ".join(r.id for r in groups["divergent"]) or "none") + ").", "")
    series = {name: [([row["epoch"] for row in r.history if "val/loss" in row],
                      [row["val/loss"] for row in r.history if "val/loss" in row])
                     for r in runs] for name, runs in groups.items()}
    figures.metric_curves(series, "validation loss", report.out_dir / "loss_by_group.png",
                          "validation loss, convergent vs divergent")
    report.add("![loss curves by group](loss_by_group.png)", "")


def best_run_section(report: Report, study: Study, scored: list[RunRecord],
                     dataset: dict | None) -> None:
    best = scored[:3]
    report.add("## Training curves of the best runs", "")
    figures.training_curves([(f"{r.id} ({fmt(r.metric(study.metric))})", r.history)
                             for r in best], report.out_dir / "training_curves.png")
    report.add("![training curves](training_curves.png)", "")
    top = scored[0]
    report.add(f"## The best run: {top.id}", "",
               f"{study.metric} = {fmt(top.metric(study.metric))}, test/acc = "
               f"{fmt(top.metric('test/acc'))}; configuration: "
               f"{config_text(top, [k for k in top.config if k != 'sweep'])}.", "")
    classes = dataset["classes"] if dataset else None
    confusion = top.run_dir / "confusion.json" if top.run_dir else None
    if confusion is not None and confusion.exists():
        saved = json.loads(confusion.read_text())
        classes = saved["classes"]
        matrix = saved["matrix"]
        figures.confusion_matrix_figure(matrix, classes, report.out_dir / "confusion.png",
                                        f"confusion matrix of {top.id} (test set)")
        report.add("![confusion matrix](confusion.png)", "")
        accuracies = [row[i] / max(sum(row), 1) for i, row in enumerate(matrix)]
    elif classes and all(f"test/class_acc/{c}" in top.summary for c in classes):
        accuracies = [top.summary[f"test/class_acc/{c}"] for c in classes]
    else:
        report.add("No confusion matrix or per-class accuracy was recorded for this run.", "")
        return
    figures.per_class_accuracy_figure(accuracies, classes, report.out_dir / "per_class.png")
    report.add("![per-class accuracy](per_class.png)", "",
               "Hardest classes: " + ", ".join(stats.hardest_classes(accuracies, classes))
               + ".", "")


def importance_section(report: Report, study: Study, axes: list[str]) -> None:
    rows = stats.importance(study.runs, axes, study.metric)
    report.add("## Hyper-parameter importance", "")
    if not rows:
        report.add("Needs at least 4 runs with a metric and one varying parameter.", "")
        return
    report.add(f"Against `{study.metric}`: the Pearson correlation of numeric parameters "
               "(log10 of those spanning more than two decades) and a random forest's "
               "impurity importance (200 trees; categorical parameters one-hot encoded, "
               "their columns summed), as in W&B's parameter-importance panel.", "")
    report.table(["parameter", "importance", "correlation"],
                 [[r["parameter"], fmt(r["importance"], 3), fmt(r["correlation"], 3)]
                  for r in rows])


def weight_norm_section(report: Report, scored: list[RunRecord]) -> None:
    def final_norms(run: RunRecord) -> dict[str, float]:
        last = run.history[-1] if run.history else {}
        return {k[len("weight_norm/"):]: v for k, v in last.items()
                if k.startswith("weight_norm/") and k != "weight_norm/global"}

    count = min(3, len(scored) // 2)
    report.add("## Weight norms per layer: best against worst runs", "")
    if count == 0:
        report.add("Needs at least 2 runs with a metric.", "")
        return
    best, worst = scored[:count], scored[-count:]
    figures.weight_norms_figure([final_norms(r) for r in best], [final_norms(r) for r in worst],
                                report.out_dir / "weight_norms.png")
    report.add(f"Final-epoch weight norm of each layer, the {count} best runs against the "
               f"{count} worst.", "", "![weight norms](weight_norms.png)", "")


def gradcam_section(report: Report, scored: list[RunRecord]) -> None:
    from agent.trial.checkpoint import load_checkpoint
    from nn.gradcam import grad_cam
    from nn.models import MODELS
    from util.device_cache import DeviceLoader, device_splits

    report.add("## Grad-CAM of the best convolutional run", "")
    run = next((r for r in scored if r.params.model in ("cnn", "resnet") and r.run_dir
                and (r.run_dir / "checkpoint.pt").exists()), None)
    if run is None:
        report.add("No cnn or resnet run with a checkpoint on this machine.", "")
        return
    params = run.params
    data = device_splits(params.dataset, params.data_dir, torch.device("cpu"), params.val_split)
    model = MODELS[params.model](params, data.input_shape, len(data.classes))
    saved = load_checkpoint(run.run_dir)
    try:
        model.load_state_dict(saved["model"])
    except (TypeError, RuntimeError):  # no checkpoint loads (damaged), or another model's
        report.add(f"The checkpoint of run {run.id} is damaged or of another model: no "
                   "Grad-CAM.", "")
        return
    raw = data.test_x[:GRADCAM_IMAGES]
    images, labels = next(iter(DeviceLoader(raw, data.test_y[:GRADCAM_IMAGES], data.mean,
                                            data.std, GRADCAM_IMAGES)))
    cams = grad_cam(model, images)
    predicted = model.eval()(images).argmax(1)
    titles = [f"true {data.classes[t]} / pred {data.classes[p]}"
              for t, p in zip(labels.tolist(), predicted.tolist())]
    figures.gradcam_grid(raw.float() / 255, cams, titles, report.out_dir / "gradcam.png")
    report.add(f"Run {run.id} ({params.model}), first {len(titles)} test images; the map "
               "shows where the predicted class's score is most sensitive (Selvaraju et al., "
               "2017), at the last convolution.", "", "![Grad-CAM](gradcam.png)", "")


def build_report(study: Study, out_dir: Path, console: Console | None = None) -> Path:
    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir)
    states = Counter(r.state for r in study.runs)
    report.add(f"# Study report: {study.name}", "",
               f"Sweep `{study.sweep_id}` ({study.source}), method "
               f"`{study.sweep_config.get('method')}`, metric `{study.metric}` "
               f"({study.goal}). Generated {datetime.date.today().isoformat()}.", "",
               f"Runs: {len(study.runs)} (" + (", ".join(f"{n} {s}" for s, n in
                                                       sorted(states.items())) or "none")
               + "). One row per run: [runs.csv](runs.csv).", "")
    write_csv(study, out_dir / "runs.csv")
    scored = study.scored_runs()
    if not study.runs:
        report.add("**This sweep has no runs yet**: nothing to report. Start agents with "
                   f"`./run_sweep.sh {study.sweep_id}`.", "")
    elif not scored:
        failed = [r for r in study.runs if r.state == "failed"]
        report.add(f"**No run has a value of `{study.metric}`**"
                   + (f": all {len(failed)} runs failed." if len(failed) == len(study.runs)
                      else "."), "")
        for run in study.runs:
            report.add(f"- {run.id}: {run.state}" + (f" ({run.error})" if run.error else ""))
        report.add("")
    else:
        with console.status("report: dataset and baselines") as status:
            dataset = dataset_section(report, study, scored[0])
            baseline = dataset["baselines"]["random"] if dataset else None
            status.update("report: parallel coordinates")
            axes = parallel_section(report, study, scored, baseline)
            status.update("report: confidence intervals")
            repeats_section(report, study, axes, dataset["baselines"] if dataset else None)
            status.update("report: convergence")
            convergence_section(report, study)
            status.update("report: best runs")
            best_run_section(report, study, scored, dataset)
            status.update("report: importance")
            importance_section(report, study, axes)
            status.update("report: weight norms")
            weight_norm_section(report, scored)
            status.update("report: Grad-CAM")
            gradcam_section(report, scored)
    markdown_path = out_dir / "report.md"
    markdown_path.write_text("\n".join(report.lines), encoding="utf-8")
    write_html(markdown_path, out_dir / "report.html", study.name)
    return markdown_path


def write_html(markdown_path: Path, html_path: Path, title: str) -> None:
    """report.md as one HTML file with its figures inlined, readable with no other file."""
    import markdown

    body = markdown.markdown(markdown_path.read_text(encoding="utf-8"), extensions=["tables"])

    def inline(match: re.Match) -> str:
        image = markdown_path.parent / match.group(1)
        if not image.exists():
            return match.group(0)
        data = base64.b64encode(image.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}")
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}"
                         f"</title><style>{style}</style></head><body>{body}</body></html>",
                         encoding="utf-8")


def parse_options(argv: list[str] | None):
    """The report's options, checked (UserError, one line)."""
    parser = CommandParser(prog="python -m agent.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="local sweep id or directory, or entity/project/sweep_id")
    parser.add_argument("--out", default="reports", help="reports go to OUT/<sweep id>/")
    args = parser.parse_args(argv)
    allowed, is_path = TEXT_KINDS["path"]
    if not is_path(args.out):
        raise UserError(f"--out={brief(args.out)}: expected {allowed}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_options(argv)
    study = load_study(args.sweep)
    try:
        path = build_report(study, Path(args.out) / study.sweep_id)
    except OSError as error:  # --out is a file, not writable, on a full disk...
        raise UserError(f"cannot write the report: {error.filename}: {error.strerror}") from None
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


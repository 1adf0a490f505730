"""`python -m agent.report <sweep>`: turn a sweep into the study a course or a paper asks for.

Reads a local sweep or a W&B sweep (study.py), computes once what every section needs
(markdown.Context: the data actually used, baselines, each run's group from its step-level
losses), writes the sections (setup_section, runs_section, seeds_section, discussion,
weights_section) and saves reports/<sweep>/: report.md, a self-contained report.html, the PNG
figures, runs.csv and seeds.csv. Every number is computed from the runs and the dataset; a
section without data says so.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console

from agent import metrics
from agent.commands import script
from agent.params import BY_NAME
from agent.report import stats
from agent.report.discussion import discussion_section
from agent.report.markdown import Context, Report
from agent.report.options import parse_options
from agent.report.runs_section import (
    ahead_sentence,
    best_run_section,
    curves_section,
    failed_section,
    groups_section,
    parallel_section,
)
from agent.report.seeds_section import seeds_section
from agent.report.setup_section import (
    dataset_section,
    header_section,
    load_data_used,
    setup_section,
    used_by_any,
)
from agent.report.study import OPEN_STATES, Study, check_our_trainer, load_study
from agent.report.weights_section import gradcam_section, weights_section
from agent.sweep_space import swept_parameters
from util.errors import UserError

SUMMARY_COLUMNS = metrics.names(summary=True)


def write_csv(ctx: Context, path: Path) -> None:
    """One row per run: id, state, group (stats.GROUPS: diverged / collapsed / stuck /
    falling / converged), the packed trial it first trained in and that pack's size (empty
    and 1 for a run claimed alone), its parameters, the sweep's metric and the summary
    metrics."""
    study = ctx.study
    keys = sorted({k for run in study.runs for k in run.config if k != "sweep"})
    sizes = Counter(run.pack for run in study.runs if run.pack)
    # the sweep's own metric, whichever it is (val/loss is no summary column)
    columns = ([study.metric] if study.metric not in SUMMARY_COLUMNS else []) \
        + list(SUMMARY_COLUMNS)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run_id", "state", "group", "pack", "pack_size", *keys, *columns])
        for run in study.runs:
            writer.writerow([run.id, run.state, ctx.group_of(run), run.pack or "",
                             sizes[run.pack] if run.pack else 1,
                             *(json.dumps(run.config[k]) if isinstance(run.config.get(k), list)
                               else run.config.get(k, "") for k in keys),
                             *(run.summary.get(k, "") for k in columns)])


def study_context(study: Study, out_dir: Path, rule: stats.GroupRule,
                  level: float = 0.95) -> Context:
    """What the sections share: swept parameters, scored runs, the data used, baselines,
    each run's loss curve and group."""
    swept = [p.name for p in swept_parameters(study.sweep_config)]
    swept += [n for n in stats.varying_parameters(study.runs) if n not in swept]
    idle = {}
    for name in swept:  # swept, yet no run uses it (hidden while every model is a cnn)
        param = BY_NAME.get(name)  # a sweep without runs yet: nothing is idle
        if (param is not None and param.used_when is not None and study.runs
                and not used_by_any(param, study.runs)):
            idle[name] = f"only {param.where_used()} uses it"
    swept = [name for name in swept if name not in idle]
    ctx = Context(study, out_dir, rule, swept, study.scored_runs(), level=level, idle=idle)
    reference = ctx.scored[0] if ctx.scored else (study.runs[0] if study.runs else None)
    if reference is not None:
        ctx.data = load_data_used(reference)
    if ctx.data is not None:
        ctx.base = stats.baselines(ctx.data.train_labels, ctx.data.test_labels,
                                   len(ctx.data.classes), level=level)
    ctx.classify(study.ended_runs())
    return ctx


def build_report(study: Study, out_dir: Path, console: Console | None = None,
                 rule: stats.GroupRule | None = None) -> Report:
    """Write the report of `study` into `out_dir`; the Report holds its markdown path and
    what each figure shows (Report.figures)."""
    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir)
    header_section(report, study)
    with console.status("report: loading the runs and the data") as status:
        ctx = study_context(study, out_dir, rule or stats.GroupRule())
        write_csv(ctx, out_dir / "runs.csv")
        if not study.runs:
            report.add("**This sweep has no runs yet**: nothing to report. Start agents with "
                       f"`{script('run_sweep.sh')} {study.sweep_id}`.", "")
        elif not ctx.scored:
            failed = [r for r in study.runs if r.state == "failed"]
            report.add(f"**No {'ended ' if len(study.ended_runs()) < len(study.runs) else ''}run "
                       f"has a value of `{study.metric}`**"
                       + (f": all {len(failed)} runs failed."
                          if len(failed) == len(study.runs) else "."), "")
            for run in study.runs:
                report.add(f"- {run.id}: {run.state}" + (f" ({run.error})" if run.error else ""))
            report.add("")
            ahead = ahead_text(study)
            if ahead:
                report.add(ahead, "")
        else:
            for name, section in SECTIONS:
                status.update(f"report: {name}")
                section(report, ctx)
    report.path.write_text("\n".join(report.lines), encoding="utf-8")
    write_html(report.path, out_dir / "report.html", study.name)
    return report


def ahead_text(study: Study) -> str:
    """For a sweep none of whose runs has a result yet (a launch stopped by Ctrl-C or a
    walltime before any run ended): the run ahead at its last epoch among those still open,
    as the launcher's closing lines name it (status._best_so_far), and how to go on where
    the sweep stopped; '' where no open run has a value of the metric in an epoch."""
    sign = -1 if study.goal == "maximize" else 1
    reached = [(value, run) for run in study.runs if run.state in OPEN_STATES
               for value in [stats.last_epoch_value(run, study.metric)] if value is not None]
    if not reached:
        return ""
    value, run = min(reached, key=lambda pair: sign * pair[0])
    return ahead_sentence(study, run, value)


SECTIONS = (("set-up", setup_section), ("dataset and baselines", dataset_section),
            ("parallel coordinates", parallel_section), ("groups", groups_section),
            ("failed runs", failed_section),
            ("best configurations over seeds", seeds_section),
            ("training curves", curves_section), ("best run", best_run_section),
            ("grid, sensitivity, observations", discussion_section),
            ("weight distributions", weights_section), ("Grad-CAM", gradcam_section))


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


def checked(argv: list[str] | None):
    """(options, study) for the command line `argv`, every check made before anything is
    written (UserError, one line)."""
    args = parse_options(argv)
    study = load_study(args.sweep)
    check_our_trainer(study, "python -m agent.report")
    return args, study


def main(argv: list[str] | None = None) -> int:
    args, study = checked(argv)
    final = Path(args.out) / study.sweep_id
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # built aside, then put in place whole: a report that fails half-way (an error, a
        # full disk, Ctrl-C) leaves the previous report as it was and no partial one
        work = Path(tempfile.mkdtemp(prefix=f".{study.sweep_id}.partial-", dir=final.parent))
        mask = os.umask(0)
        os.umask(mask)
        work.chmod(0o777 & ~mask)  # as mkdir makes it: mkdtemp's 0700 would hide the report
        try:
            build_report(study, work,
                         rule=stats.GroupRule(args.explode_factor, args.stuck_margin))
            _replace_dir(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except OSError as error:  # --out is a file, not writable, on a full disk...
        raise UserError(f"cannot write the report: {error.filename}: {error.strerror}") from None
    path = final / "report.md"
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def _replace_dir(new: Path, final: Path) -> None:
    """`new` becomes `final`; an earlier `final` is moved aside first and removed after."""
    old = None
    if final.exists() or final.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

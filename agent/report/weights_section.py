"""The report's look inside the models: the distributions of the weights of each named layer
(initial, best and worst runs of one architecture, from their checkpoints) and Grad-CAM maps
of correctly and wrongly classified test images for the best convolutional run."""

from __future__ import annotations

import numpy as np
import torch

from agent.report import figures
from agent.report.markdown import (
    Context,
    Report,
    config_text,
    diverged_left_out,
    fmt,
    stopped_note,
)
from agent.report.study import RunRecord
from agent.report.study_figures import WeightSet, weight_distributions

PER_SIDE = 3  # best and worst runs shown per architecture
GRADCAM_IMAGES = 4  # of each kind: correct, misclassified


def _model(run: RunRecord, classes: int, shape: tuple[int, int, int]):
    from nn.models import MODELS

    torch.manual_seed(run.params.seed)  # the trial's own initial weights for this seed
    return MODELS[run.params.model](run.params, shape, classes)


def layer_weights(model) -> dict[str, np.ndarray]:
    """Every weight matrix or kernel (ndim >= 2) by its layer's name, flattened: the same
    layers as the trial's `weights/<layer>` histograms (biases and norm scales left out)."""
    return {name.rpartition(".")[0]: p.detach().float().flatten().numpy()
            for name, p in model.named_parameters() if name.endswith("weight") and p.ndim >= 2}


def _checkpoint_weights(run: RunRecord, model) -> dict[str, np.ndarray] | None:
    from agent.trial.checkpoint import load_checkpoint

    saved = load_checkpoint(run.run_dir) if run.run_dir else None
    if saved is None:
        return None
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, TypeError, RuntimeError):  # damaged, or another model's checkpoint
        return None
    weights = layer_weights(model)
    return weights if all(np.isfinite(w).all() for w in weights.values()) else None


def weights_section(report: Report, ctx: Context) -> None:
    report.add("## Weight distributions per layer", "")
    if ctx.data is None:
        report.add("Needs the dataset's files (for the input shape).", "")
        return
    classes = len(ctx.data.classes)
    shape = _input_shape(ctx)
    report.add("Per architecture (one model with the same layer shapes: layers are only "
               "comparable within one), the weights of "
               f"each named layer: the initial weights, the {PER_SIDE} best runs (B) and the "
               f"{PER_SIDE} worst runs (W) by `{ctx.study.metric}` among the runs that did not "
               "diverge (a diverged run's weights are garbage, often NaN) and have a "
               "checkpoint. The "
               "shape and width of each violin is the distribution; the number above it, its "
               "standard deviation.", "")
    kept = ctx.not_diverged(ctx.scored)
    if not kept:
        report.add(f"None here: every run with a value of {ctx.study.metric} diverged.", "")
        return
    for model_name in sorted({r.params.model for r in ctx.scored}):
        # runs of one model whose layers differ in shape (channels [8, 16] or [16, 32]) are
        # architectures of their own: their weights and initial widths differ by construction
        shapes: dict[tuple, list[RunRecord]] = {}
        for run in (r for r in kept if r.params.model == model_name):
            shapes.setdefault(_layer_shapes(run, classes, shape), []).append(run)
        apart = _what_sets_apart(list(shapes.values()), [a for a in ctx.swept if a != "model"])
        for n, runs in enumerate(shapes.values(), start=1):
            title = model_name + (f" ({config_text(runs[0], apart)})" if apart else "")
            name = model_name if len(shapes) == 1 else f"{model_name}_{n}"
            _architecture_figure(report, ctx, runs, title, name, classes, shape)


def _layer_shapes(run: RunRecord, classes: int, shape: tuple[int, int, int]) -> tuple:
    """The shapes of the run's model's parameters, built on torch's meta device (shapes, no
    memory): equal for two runs of one architecture."""
    with torch.device("meta"):
        model = _model(run, classes, shape)
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def _what_sets_apart(groups: list[list[RunRecord]], names: list[str]) -> list[str]:
    """The parameters that name each architecture of one model among its others: one value
    within each group of runs, not the same one in all groups (channels, not a dropout that
    varies within an architecture)."""
    def values(group: list[RunRecord], name: str) -> set[str]:
        return {repr(r.config.get(name, r.params.get(name))) for r in group}

    return [a for a in names if all(len(values(g, a)) == 1 for g in groups)
            and len(set().union(*(values(g, a) for g in groups))) > 1]


def _architecture_figure(report: Report, ctx: Context, runs: list[RunRecord], title: str,
                         name: str, classes: int, shape: tuple[int, int, int]) -> None:
    """The initial weights and the best and worst of `runs` (one architecture, best first),
    and the runs not drawn that tie exactly with the last drawn of a side."""
    metric = ctx.study.metric
    init = layer_weights(_model(runs[0], classes, shape))
    # worst first, runs of equal value in the sweep's order as on the best side (reversed
    # `runs` would draw the last of a tie)
    worst_first = sorted(runs, key=lambda r: r.metric(metric),
                         reverse=ctx.study.goal == "minimize")
    chosen: dict[str, list] = {"best": [], "worst": []}
    passed: dict[str, list[RunRecord]] = {"best": [], "worst": []}  # after a side was full
    for kind, candidates in (("best", runs), ("worst", worst_first)):
        for run in candidates:
            if len(chosen[kind]) == PER_SIDE:
                passed[kind].append(run)
                continue
            if kind == "worst" and any(run is r for r, _ in chosen["best"]):
                continue
            weights = _checkpoint_weights(run, _model(run, classes, shape))
            if weights is not None:
                chosen[kind].append((run, weights))
    if not chosen["best"]:
        report.add(f"`{title}`: no run with a checkpoint on this machine.", "")
        return
    sets = [WeightSet("init", "init", f"initial weights (seed {runs[0].params.seed})", init)]
    for kind in ("best", "worst"):
        sets += [WeightSet(f"{kind[0].upper()}{i}", kind,
                           f"{_label(run, [a for a in ctx.swept if a != 'model'])} "
                           f"({metric} {run.metric(metric):.3f}"
                           f"{', ' + stopped_note(run) if stopped_note(run) else ''})", w)
                 for i, (run, w) in enumerate(chosen[kind], start=1)]
    report.figure(weight_distributions(title, list(init), sets,
                                       ctx.out_dir / f"weights_{name}.png"),
                  f"weight distributions, {title}")
    ties = _cut_ties(metric, chosen, passed)
    if ties:
        report.add(f"`{title}`: " + ties, "")
    # a run hyperband stopped trained fewer epochs: its weights are nearer the initial ones
    # for that, whatever its setting (its value too is from the epoch it stopped at)
    cut = [f"{s.key} ({stopped_note(run)})" for s, (run, _) in zip(
        sets[1:], chosen["best"] + chosen["worst"]) if stopped_note(run)]
    if cut:
        one = len(cut) == 1
        report.add(f"`{title}`: {', '.join(cut)} {'was' if one else 'were'} stopped early by "
                   f"the sweep's early termination: {'its' if one else 'their'} weights "
                   "trained fewer epochs than a full-length run's, and "
                   f"{'its value is' if one else 'their values are'} from the epoch "
                   f"{'it' if one else 'each'} stopped at; beside the others "
                   f"{'it shows' if one else 'they show'} less training, not only a worse "
                   "setting.",
                   "")


def _has_checkpoint(run: RunRecord) -> bool:
    return bool(run.run_dir) and (run.run_dir / "checkpoint.pt").exists()


def _cut_ties(metric: str, chosen: dict[str, list], passed: dict[str, list[RunRecord]]
              ) -> str:
    """'tied at val/acc 0.9306 with the last best run drawn, B3 (ab12cd34): ef56gh78, not
    drawn; the runs drawn are the first of them in the sweep's order', a clause for each side
    whose last run drawn ties exactly with runs with a checkpoint drawn on neither side."""
    drawn = {run.id for side in chosen.values() for run, _ in side}
    parts = []
    for kind in ("best", "worst"):
        if len(chosen[kind]) < PER_SIDE:
            continue
        last = chosen[kind][-1][0]
        left = [r.id for r in passed[kind] if r.id not in drawn and _has_checkpoint(r)
                and r.metric(metric) == last.metric(metric)]
        if left:
            parts.append(f"tied at {metric} {fmt(last.metric(metric))} with the last {kind} "
                         f"run drawn, {kind[0].upper()}{PER_SIDE} ({last.id}): "
                         f"{', '.join(left[:5])}{', ...' if len(left) > 5 else ''}, not drawn")
    if not parts:
        return ""
    return "; ".join(parts) + "; the runs drawn are the first of them in the sweep's order."


def _input_shape(ctx: Context) -> tuple[int, int, int]:
    from util.datasets import load_decoded

    p = ctx.scored[0].params
    return tuple(load_decoded(p.dataset, p.data_dir, p.dataset_dir).train_x.shape[1:])


def gradcam_section(report: Report, ctx: Context) -> None:
    from agent.trial.checkpoint import load_checkpoint
    from nn.gradcam import grad_cam
    from util.device_cache import DeviceLoader, device_splits

    report.add("## Grad-CAM of the best convolutional run", "")
    convolutional = [r for r in ctx.scored if r.params.model in ("cnn", "resnet")
                     and _has_checkpoint(r)]
    # a diverged run's last value means nothing: it is no best run, whatever it reads (as
    # in the best-run and weight sections)
    candidates = ctx.not_diverged(convolutional)
    diverged = len(convolutional) - len(candidates)
    left_out = f" {diverged_left_out(diverged)}." if diverged else ""
    if not candidates:
        report.add(("No cnn or resnet run that did not diverge has a checkpoint on this "
                    "machine." if diverged else "No cnn or resnet run with a checkpoint on "
                    "this machine.") + left_out, "")
        return
    run, metric = candidates[0], ctx.study.metric
    tied = [r.id for r in candidates[1:] if r.metric(metric) == run.metric(metric)]
    p = run.params
    data = device_splits(p.dataset, p.data_dir, torch.device("cpu"), p.val_split, p.dataset_dir)
    model = _model(run, len(data.classes), data.input_shape)
    saved = load_checkpoint(run.run_dir)
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, TypeError, RuntimeError):  # damaged, or another model's checkpoint
        report.add(f"The checkpoint of run {run.id} is damaged or of another model: no "
                   "Grad-CAM.", "")
        return
    model.eval()
    images, labels = next(iter(DeviceLoader(data.test_x[:512], data.test_y[:512], data.mean,
                                            data.std, 512)))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    right = (predicted == labels).nonzero().flatten()[:GRADCAM_IMAGES].tolist()
    wrong = (predicted != labels).nonzero().flatten()[:GRADCAM_IMAGES].tolist()
    chosen = right + wrong
    cams = grad_cam(model, images[chosen])
    titles = [f"true {data.classes[labels[i]]} / pred {data.classes[predicted[i]]}"
              for i in chosen]
    drawn = figures.gradcam_grid(
        data.test_x[chosen].float() / 255, cams, titles, ctx.out_dir / "gradcam.png",
        [i in wrong for i in chosen],
        f"{run.id}{f' ({values})' if (values := config_text(run, ctx.swept, ' ')) else ''}: "
        f"{len(right)} correct, {len(wrong)} misclassified (red) test images")
    report.figure(drawn, "Grad-CAM")
    report.add(f"Run {run.id}: the first {len(right)} correctly and the first {len(wrong)} "
               "wrongly classified of the first 512 test images. The map shows where the "
               "predicted class's score is most sensitive (Selvaraju et al., 2017), at the "
               "last convolution; on a misclassified image it shows what the model took as "
               "evidence for the wrong class."
               + (f" Tied with it at {metric} {fmt(run.metric(metric))}: {len(tied)} other "
                  f"cnn or resnet run{'s' if len(tied) != 1 else ''} with a checkpoint "
                  f"({', '.join(tied[:5])}{', ...' if len(tied) > 5 else ''}); the one shown "
                  "is the first of them in the sweep's order." if tied else "") + left_out, "")


def _label(run: RunRecord, names: list[str]) -> str:
    """A run's values of `names` (`optimizer=sgd lr=0.1`), or its id where there are none
    (a sweep that varies nothing, or only the model that a figure is drawn for)."""
    return config_text(run, names, " ") or run.id

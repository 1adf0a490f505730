"""Every metric a trial reports, defined once: its name, when it is logged, which way is better.

The trial logs these names; the sweep checks accept a `metric.name` only from here (with its
goal, and for early_terminate only one logged every epoch); each sink and the report choose
what to show by the flags below. A new metric is one line here and the code that computes it.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

STEP, EPOCH, END = "step", "epoch", "end"

# A run's summary `stop_reason` when a user stopped it in W&B (the W&B sink's words; the
# report tells such a stop from the sweep's hyperband): its Stop button or API
STOPPED_IN_WANDB = "stopped in W&B (its Stop button or API)"
# wandb calls the same stop_fn after an upload it cannot recover from when the user turned on
# its stop_on_fatal_error (WANDB_STOP_ON_FATAL_ERROR): a stop then names both causes
STOPPED_IN_WANDB_OR_FATAL = ("stopped by W&B: its Stop button or API, or an upload error "
                             "with stop_on_fatal_error on (the run's files are on disk for "
                             "`wandb sync`)")


@dataclass(frozen=True)
class Metric:
    name: str  # a W&B-style key; `<layer>` / `<class>` parts are filled in per model / dataset
    when: str  # STEP: every log_interval steps; EPOCH: after every epoch; END: once, at the end
    goal: str | None  # "maximize" / "minimize" for metrics a sweep may optimise, else None
    help: str
    summary: bool = False  # shown in the console's closing table and the report's runs.csv
    hparams: bool = False  # a column of TensorBoard's HPARAMS view

    @property
    def pattern(self) -> str:
        """The name as a glob (`grad_norm/*`) when it has a `<...>` part."""
        head, sep, _ = self.name.partition("<")
        return head + "*" if sep else self.name


METRICS: tuple[Metric, ...] = (
    Metric("train/step_loss", STEP, None, "training loss of the logged step"),
    Metric("train/step_acc", STEP, None, "training accuracy of the logged step's batch"),
    Metric("grad_norm/step_global", STEP, None, "global L2 norm of the logged step's gradient"),
    # the throughput at the logged steps has a name of its own, as the loss and the gradient
    # norm have: W&B's hyperband counts the history rows that hold the sweep's metric, and an
    # epoch metric logged at the steps too would make its bands steps there, epochs offline
    Metric("perf/step_images_per_s", STEP, None, "training images per second since the "
           "last logged step"),
    Metric("perf/images_per_s", EPOCH, None, "training images per second over the epoch",
           summary=True),
    Metric("train/loss", EPOCH, "minimize", "mean training loss over the epoch (with label "
           "smoothing when it is on)", summary=True, hparams=True),
    Metric("train/acc", EPOCH, "maximize", "training accuracy over the epoch"),
    Metric("val/loss", EPOCH, "minimize", "cross-entropy on the validation split",
           hparams=True),
    Metric("val/acc", EPOCH, "maximize", "accuracy on the validation split", summary=True,
           hparams=True),
    Metric("lr", EPOCH, None, "learning rate at the end of the epoch (the next step's, "
           "plotted against the step; the console's epoch line shows the epoch's first "
           "step's)"),
    Metric("batch_size", EPOCH, None, "images per training step"),
    Metric("grad_norm/global", EPOCH, None, "global gradient norm, mean over the sampled steps"),
    Metric("grad_norm/<layer>", EPOCH, None, "a layer's gradient norm, mean over the sampled "
           "steps"),
    Metric("weight_norm/global", EPOCH, None, "global L2 norm of the weights"),
    Metric("weight_norm/<layer>", EPOCH, None, "a layer's weight norm"),
    Metric("perf/epoch_s", EPOCH, None, "seconds the epoch's training steps took"),
    Metric("perf/peak_mem_mb", EPOCH, None, "peak memory: the CUDA allocator's, else the "
           "process's resident set"),
    Metric("weights/<layer>", EPOCH, None, "histogram of a layer's weights"),
    Metric("val/best_acc", END, "maximize", "best validation accuracy over the epochs",
           summary=True, hparams=True),
    Metric("val/best_epoch", END, None, "the epoch of val/best_acc", summary=True),
    Metric("test/loss", END, "minimize", "cross-entropy on the test set", summary=True),
    Metric("test/acc", END, "maximize", "accuracy on the test set", summary=True,
           hparams=True),
    Metric("test/class_acc/<class>", END, None, "test accuracy of one class"),
    Metric("test/confusion_matrix", END, None, "confusion matrix of the test set"),
    Metric("params", END, None, "number of trainable parameters", summary=True),
    Metric("diverged", END, None, "the loss went non-finite and training stopped",
           summary=True, hparams=True),
    Metric("epochs_done", END, None, "epochs trained", summary=True),
    Metric("perf/train_s", END, None, "seconds of all the run's training steps (the sum of "
           "its epochs' perf/epoch_s)"),
    Metric("wall_s", END, None, "seconds from the run's start to its end, in its trials (a "
           "resumed run counts its earlier stretches, not the wait to be resumed)",
           summary=True, hparams=True),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def find(name: str) -> Metric | None:
    """The catalogue entry for a concrete name (`grad_norm/conv1` finds `grad_norm/<layer>`)."""
    if name in BY_NAME:
        return BY_NAME[name]
    return next((m for m in METRICS if "<" in m.name and fnmatchcase(name, m.pattern)), None)


def optimisable(when: tuple[str, ...] = (EPOCH, END)) -> dict[str, str]:
    """{name: goal} of the metrics a sweep may optimise that are logged at one of `when`."""
    return {m.name: m.goal for m in METRICS if m.goal and m.when in when}


def names(*, when: str | None = None, summary: bool | None = None,
          hparams: bool | None = None) -> tuple[str, ...]:
    """Catalogue names filtered by when they are logged and by their flags."""
    return tuple(m.name for m in METRICS
                 if (when is None or m.when == when)
                 and (summary is None or m.summary == summary)
                 and (hparams is None or m.hparams == hparams))

"""W&B sink: one wandb run per trial, online, offline or disabled as WANDB_MODE says.

Without WANDB_MODE and without credentials it writes an offline run (`wandb sync` uploads it
later) instead of stopping to ask for a login. The API key is never read, printed or stored here.
"""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Callable

import wandb

from agent import metrics
from agent.trial.sinks import RunInfo, Sink, check_room
from util.errors import UserError, one_line, without_api_key

DEFAULT_PROJECT = "hp-study"
# Epoch metrics are plotted against `epoch` in W&B, the step metrics against the step.
EPOCH_METRICS = tuple(dict.fromkeys(m.pattern for m in metrics.METRICS if m.when == metrics.EPOCH))


def _installed_once():
    """wandb.init lists every installed distribution for each run's requirements.txt, about
    0.3 s a run; the runs of one process share one environment, so list it once."""
    global _INSTALLED
    if _INSTALLED is None:
        _INSTALLED = list(_working_set())
    return _INSTALLED


_INSTALLED = None
_working_set = wandb.util.working_set
wandb.util.working_set = _installed_once  # looked up by wandb at each run's start


def has_credentials() -> bool:
    """True when an API key is configured (only its presence is checked)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    return base.split("/")[0] in hosts


def chosen_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")


# run.finish() waits until W&B's server has every upload: with the server gone for good it
# waited forever, past SIGTERM. wandb gives up after finish_timeout (the run's data stays on
# disk for `wandb sync`); WANDB_FINISH_TIMEOUT, when set, is the user's own choice.
FINISH_TIMEOUT_S = 300.0


def finish_settings() -> dict:
    """wandb.Settings fields bounding a run's finish (it then raises TimeoutError)."""
    bound = {} if os.environ.get("WANDB_FINISH_TIMEOUT") else {"finish_timeout": FINISH_TIMEOUT_S}
    return {**bound, "finish_timeout_raises": True}


STOPPED_IN_WANDB = metrics.STOPPED_IN_WANDB
STOPPED_IN_WANDB_OR_FATAL = metrics.STOPPED_IN_WANDB_OR_FATAL
# Runs a user stopped in W&B, by id (their stop_fn was called, on wandb's own thread): each
# one's sink says so after its epoch (stop_asked), and the member ends as stopped.
STOPPED: set[str] = set()


def stop_fn(run_id: str) -> Callable[[], None]:
    """wandb's stop_fn for run `run_id` (wandb.Settings): a user stopped it in W&B, which
    its file stream's answer says (wandb-core polls it). wandb's default sends SIGINT to the
    main thread, which preempts the whole agent and every member of its pack as a Ctrl-C
    does (and W&B would hand a stopped sweep run out again); the run ends as stopped at its
    epoch's end instead, alone, and the agent goes on."""
    return lambda: STOPPED.add(run_id)


# W&B runs started for a trial before it runs, by run id: a packed W&B agent starts each
# member's run with its sweep's id (agent/sweep/wandb_pack.py); the sink adopts it
STARTED: dict = {}


def _sweep_config(sweep: dict) -> dict:
    """What a run's W&B config holds of its sweep: its id, name and config; not the console's
    progress (the sweep's counts, pack-mates' numbers), which changes as the sweep goes."""
    return {key: value for key, value in sweep.items() if key != "progress"}


class WandbSink(Sink):
    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        # a W&B sweep run started by the W&B adapters (agent/sweep/wandb_agent.py, one run a
        # process; wandb_pack.py, the members of a pack) is adopted
        adopted = STARTED.pop(run.id, None)
        if adopted is None and wandb.run is not None and wandb.run.id == run.id:
            adopted = wandb.run
        if adopted is not None:
            adopted.config.update(config, allow_val_change=True)
        elif chosen_mode() != "disabled":  # a disk too full for the run's records: not begun
            check_room(wandb_dir(), "W&B's run records")
        self.run = adopted if adopted is not None else self._init(run, config)
        self.run.define_metric("epoch")
        for pattern in EPOCH_METRICS:
            self.run.define_metric(pattern, step_metric="epoch")
        if run.replay and run.resumed_epoch:
            # A crashed run's repeat, continuing its checkpoint: this W&B run is new, so it
            # gets the epochs before the checkpoint first, each at the step it ended on (the
            # same number of steps every epoch), as the crashed run logged them.
            steps_per_epoch = run.resumed_step / run.resumed_epoch
            for row in run.replay:
                self.run.log(row, step=round(row["epoch"] * steps_per_epoch))

    def stop_asked(self) -> str | None:
        if self.run.id not in STOPPED:
            return None
        fatal_stops = getattr(self.run.settings, "stop_on_fatal_error", False)
        return STOPPED_IN_WANDB_OR_FATAL if fatal_stops else STOPPED_IN_WANDB

    @staticmethod
    def _init(run: RunInfo, config: dict):
        """wandb.init for this run; W&B's refusal (a bad key, no server) as one UserError
        line that names the way out, never the key."""
        mode = chosen_mode()
        try:
            return wandb.init(
                project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                entity=os.environ.get("WANDB_ENTITY") or None,
                group=run.group, name=run.name, id=run.id, resume="allow",
                config={**config,
                        **({"sweep": _sweep_config(run.sweep)} if run.sweep else {})},
                mode=mode, settings=wandb.Settings(silent=True, console="off",
                                                   stop_fn=stop_fn(run.id),
                                                   **finish_settings()),
                reinit="create_new",  # the members of a pack are runs of one process at once
                # wandb reads WANDB_DIR once per process; pass it per run so each run
                # honours the directory in force when it starts.
                dir=wandb_dir())
        except wandb.errors.Error as error:
            text = without_api_key(one_line(error))[:160]
            way_out = ("check WANDB_API_KEY and the network, or log offline with "
                       "WANDB_MODE=offline (wandb sync sends it later)") if mode == "online" \
                else ("no key or network is used offline: fix the setting the error names "
                      "(WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR), or leave W&B out with "
                      "sinks [tensorboard, console]")
            raise UserError(f"W&B refused run {run.id} in {mode} mode ({type(error).__name__}: "
                            f"{text}): {way_out}") from None

    def log_step(self, step: int, metrics: dict) -> None:
        self.run.log(metrics, step=step)

    def ensure_room(self) -> None:
        # before the epoch's checkpoint: wandb's service writes the run's file (online too)
        # seconds later, and on a full disk drops what does not fit, unsaid; the run is
        # preempted at the epoch before, and resumed it logs this epoch's row
        records = getattr(self.run.settings, "sync_file", None)
        if records and not getattr(self.run, "disabled", False):
            check_room(records, "W&B's run records")

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        row = dict(metrics)
        for name, h in histograms.items():  # metering.Histogram: binned on the device
            row[name] = wandb.Histogram(np_histogram=(h.counts, h.edges))
        self.run.log(row, step=step)

    def log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        """The confusion matrix as a W&B table. wandb saves a table as an artifact and checks
        the key with the server first (wandb 0.31), which fails while the server is slow or
        away: then one line, and the run goes on (the matrix stays in the run directory's
        confusion.json); a run that trained to its end is not failed for a figure."""
        table = wandb.Table(columns=["true", "predicted", "count"],
                            data=[[classes[i], classes[j], int(matrix[i, j])]
                                  for i in range(len(classes)) for j in range(len(classes))])
        try:
            self.run.log({"test/confusion_matrix": table}, step=step)
        except wandb.errors.Error as error:
            text = without_api_key(one_line(error))[:120]
            print(f"run {self.run.id}: W&B did not take the confusion matrix "
                  f"({type(error).__name__}: {text}); it is in the run's confusion.json",
                  file=sys.stderr)

    def finish(self, summary: dict, state: str) -> None:
        self.run.summary.update(summary)
        if state == "preempted":
            self.run.mark_preempting()
        finish_run(self.run, 0 if state in ("finished", "diverged", "stopped") else 1)


def wandb_dir() -> str:
    """Where a run's W&B files go (wandb.init's dir): WANDB_DIR, else the working folder."""
    return os.environ.get("WANDB_DIR") or os.getcwd()


def finish_run(run, exit_code: int) -> None:
    """run.finish(exit_code); past finish_settings()'s bound (the server did not take it all
    in time) one line on where the rest is, not a TimeoutError."""
    try:
        run.finish(exit_code=exit_code)
    except TimeoutError:
        print(f"run {run.id}: W&B's server did not take all of the run's data within "
              f"{run.settings.finish_timeout:g} s; what it lacks is kept in "
              f"{run.settings.sync_dir} (`wandb sync` sends it)", file=sys.stderr)

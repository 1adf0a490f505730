"""TensorBoard sink: scalars, histograms, a confusion image, and the HPARAMS tab's session.

HPARAMS gets the sweep's search space only (the parameters its file gives `values` or a
distribution for), log10 of the log-distributed ones (HPARAMS has no way to open an axis on
a log scale), and the metrics with the sweep's own first; every other parameter is the run's
text (TEXT tab, `run/config`). The hparams summaries go into the run's own event file (not a
sub-run, as add_hparams does), so HPARAMS lists the run itself, with the values it goes on
(and ends) with: a start with other values (resumed with more epochs) drops the earlier
session from the run's event files.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import torch
from google.protobuf import struct_pb2
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from agent import metrics
from agent.sweep_space import SweptParameter, short_number, swept_parameters
from agent.trial.sinks import RunInfo, Sink, check_room, given_values
from util.errors import naming, storage_problem

# The metrics HPARAMS shows as columns, in this order after the sweep's own metric; the
# frontend ticks the first five. Each is a scalar tag written during or at the end of the run.
# `diverged` is not among the five: a diverged run has no test/acc, and the parallel
# coordinates leave out a session missing any shown metric, so its axis would always read 0.
PREFERRED_ORDER = ("val/acc", "test/acc", "val/loss", "train/loss", "wall_s", "val/best_acc",
                   "diverged")
HPARAM_METRICS = tuple(sorted(metrics.names(hparams=True), key=lambda m: (
    PREFERRED_ORDER.index(m) if m in PREFERRED_ORDER else len(PREFERRED_ORDER))))
STATUS = {"finished": "STATUS_SUCCESS", "stopped": "STATUS_SUCCESS",
          "diverged": "STATUS_FAILURE", "failed": "STATUS_FAILURE"}
LOG_DIGITS = 6  # log10 values are rounded so that equal choices compare equal in filters


def hparam_name(parameter: SweptParameter) -> str:
    """The HPARAMS column of a swept parameter: `log10(lr)` for a log-distributed one."""
    return f"log10({parameter.name})" if parameter.log else parameter.name


def hparam_value(parameter: SweptParameter | None, value):
    """The value HPARAMS stores: a number, bool or text; log10 of a log-distributed one; a
    null as the text None (what ${args} passes, and the console shows)."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return str(list(value))
    if parameter is not None and parameter.log and isinstance(value, (int, float)) \
            and not isinstance(value, bool) and value > 0:
        return round(math.log10(value), LOG_DIGITS)
    return value


def session_hparams(config: dict, hparams: dict, sweep: dict | None) -> dict:
    """{HPARAMS column: value} for the run: the swept parameters when the run belongs to a
    sweep, else every hyper-parameter."""
    if not sweep:
        return {name: hparam_value(None, value) for name, value in hparams.items()}
    return {hparam_name(p): hparam_value(p, config.get(p.name))
            for p in swept_parameters(sweep.get("config"))}


def experiment_summary(sweep: dict | None, session: dict) -> Summary:
    """The HPARAMS experiment: one column per hparam (with the sweep's choices as its domain
    when it offers two or more), then the metrics, the sweep's metric first. A column the
    sweep varies is marked `differs`, a distribution's too: TensorBoard's frontend ticks the
    first five columns, those that differ first, so an unmarked `log10(lr)` drawn from a
    distribution was left unticked beside five `values` lists."""
    swept = {hparam_name(p): p for p in swept_parameters((sweep or {}).get("config"))}
    infos = []
    for name, value in session.items():
        info = api_pb2.HParamInfo(name=name, type=_data_type(value))
        parameter = swept.get(name)
        # the choices as HPARAMS shows them (a list value, channels: [16, 32], is its text)
        domain = list(dict.fromkeys(hparam_value(parameter, v) for v in parameter.values)) \
            if parameter is not None and parameter.values else []
        if len(domain) > 1:
            info.domain_discrete.extend(domain)
        info.differs = len(domain) > 1 or (parameter is not None and parameter.values is None)
        infos.append(info)
    first = ((sweep or {}).get("config") or {}).get("metric", {}).get("name")
    order = ([first] if first in HPARAM_METRICS else []) + [
        m for m in HPARAM_METRICS if m != first]
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in order])
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
        experiment=experiment))


def config_text(config: dict, hparams: dict, session: dict, sweep: dict | None) -> str:
    """The run's parameters as markdown: the swept ones (HPARAMS columns), then the rest."""
    swept = [p.name for p in swept_parameters((sweep or {}).get("config"))] if sweep else []
    lines = []
    if sweep:
        lines += [f"sweep `{sweep.get('id')}` ({sweep.get('name')}); HPARAMS columns: "
                  + ", ".join(f"`{name}`" for name in session), ""]
    lines += ["| parameter | value | in the sweep |", "|---|---|---|"]
    for name in swept + [n for n in hparams if n not in swept]:
        if name in config:
            lines.append(f"| {name} | {short_number(config[name])} | "
                         f"{'swept' if name in swept else 'fixed'} |")
    return "\n".join(lines)


def _data_type(value) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, (int, float)):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _proto_value(value) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=str(value))


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                        content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


# Events reach the file within FLUSH_S seconds (TensorBoard reloads every 5 s by default), on
# the writer's own thread: a flush per epoch made the trial wait for it (~1 ms a member, 2.5 ms
# with the thread's start and join, the largest cost of a small member's bookkeeping in a pack).
FLUSH_S = 5
QUEUE = 1000  # events held before a put waits for the writer thread


def _after_earlier_files(earlier: list[Path]) -> None:
    """Wait, where needed, until a new event file's name sorts after every file of
    `earlier`: TensorBoard reads a run's files in name order, and a purge (purge_step) hides
    only the events read before it. A name is events.out.tfevents.<seconds, 10
    digits>.<host>.<pid>.<a counter, not padded> (tensorboard's EventFileWriter): a writer
    started within the same second as an earlier one of this process can sort before it
    (counter 10 before 9), and the earlier start's steps then showed again after the
    purge. At most one second, only for a resume within the second of an earlier start."""
    stamps = [int(p.name.split(".")[3]) for p in earlier
              if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


def _quiet_storage_faults(default):
    """threading.excepthook, less the traceback of a TensorBoard writer thread that a full
    or read-only disk stopped: tensorboard raises that error again in the trial at the sink's
    next write, which names the event file in the trial's one line (TensorBoardSink._writing);
    the thread's traceback beside it said the same thing in twenty lines."""
    def hook(args) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and \
                storage_problem(args.exc_value) is not None:
            return
        default(args)
    return hook


threading.excepthook = _quiet_storage_faults(threading.excepthook)


CONFIG_TAG = "run/config"  # the run's config text (TEXT tab); its event's tag adds /text_summary
# Events read from the head of each earlier event file for its config text: a start writes
# the file's version, its purge (a version and a SessionLog START), the HPARAMS experiment and
# session start, then the text, before any step's event.
HEAD_EVENTS = 8


def shown_config(earlier: list[Path], purge: int) -> str | None:
    """The config text a TensorBoard reader sees in a run's `earlier` event files once a new
    start's `purge` step hides what they hold at or past it, else None. Read in name order
    as TensorBoard reads them, each SessionLog START at step s (a start's purge_step)
    dropping the text before it at steps >= s, as TensorBoard's server does (its Python
    reader from a run's second START on: every start writes one, the first at step 0 with
    nothing before it; EventAccumulator drops no text at all, so a text written again shows
    twice there). Only the head of each file (HEAD_EVENTS), where a start writes its text; a
    file it cannot read shows none."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    texts: list[tuple[int, str]] = []  # (step, text) in the order a reader meets them
    for path in earlier:
        try:
            for event in islice(EventFileLoader(str(path)).Load(), HEAD_EVENTS):
                if event.HasField("session_log") and \
                        event.session_log.status == event.session_log.START:
                    texts = [(step, text) for step, text in texts if step < event.step]
                texts += [(event.step, value.tensor.string_val[0].decode())
                          for value in event.summary.value
                          if value.tag == f"{CONFIG_TAG}/text_summary"
                          and value.tensor.string_val]
        except OSError:
            continue
    texts = [(step, text) for step, text in texts if step < purge]
    return texts[-1][1] if texts else None


HPARAMS_TAGS = (metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG,
                metadata.SESSION_END_INFO_TAG)


def shown_session(earlier: list[Path]) -> plugin_data_pb2.SessionStartInfo | None:
    """The HPARAMS session start a TensorBoard reader shows for a run whose event files are
    `earlier` (the first in name order: a reader keeps a tag's first metadata, whatever a
    purge or a later start writes), else None. Only the head of each file (HEAD_EVENTS),
    where a start writes it; a file it cannot read shows none."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for path in earlier:
        try:
            for event in islice(EventFileLoader(str(path)).Load(), HEAD_EVENTS):
                for value in event.summary.value:
                    if value.tag == metadata.SESSION_START_INFO_TAG:
                        return plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content).session_start_info
        except OSError:
            continue
    return None


def drop_hparams(earlier: list[Path]) -> None:
    """Rewrite each of a run's `earlier` event files that holds HPARAMS summaries (its
    experiment, session start and end) without them, every other record as it was: a
    reader keeps a tag's first metadata, so the session a later start writes (its values
    changed) shows only once the earlier ones are gone. Each file is written aside and put
    in place whole; a TensorBoard server that already read a file shows its old session
    until it is started again. The file aside has no `tfevents` in its name: TensorBoard
    reads every file whose name holds it (io_wrapper.IsTensorFlowEventsFile), so a copy
    left by a process killed mid-rewrite showed its records twice."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in earlier:
        aside = path.with_name(f".{path.name.replace('tfevents', 'rewrite')}")  # not an event file
        dropped = False
        try:
            with open(aside, "wb") as out:
                records = RecordWriter(out)
                for record in RawEventFileLoader(str(path)).Load():
                    if any(value.tag in HPARAMS_TAGS
                           for value in Event.FromString(record).summary.value):
                        dropped = True  # a start writes each in an event of its own
                    else:
                        records.write(record)
                out.flush()
                os.fsync(out.fileno())
            if dropped:
                os.replace(aside, path)
        finally:
            aside.unlink(missing_ok=True)


class TensorBoardSink(Sink):
    """One event file per start of a run. A full or read-only disk ends the trial as it ends
    a checkpoint's write: one line naming the event file (an OSError), and the run preempted
    at its last checkpoint; an event file cut short by it stays readable (TensorBoard reads
    up to its last whole record), and a resume writes a new one."""

    failed = False  # the disk refused an event: the trial ends on it, said once

    @contextmanager
    def _writing(self, path: str | Path | None = None) -> Iterator[None]:
        """An OSError of the writer names the event file (a write's own error names none)."""
        try:
            with naming(path or self.events):
                yield
        except OSError as error:
            self.failed = self.failed or storage_problem(error) is not None
            raise

    def start(self, run: RunInfo, config: dict, hparams: dict) -> None:
        # A resumed run logs the steps after its checkpoint again: purge_step hides what the
        # interrupted process logged from there on (TensorBoard drops events at or past it in
        # the earlier files), so each step appears once. A run started over (interrupted in
        # its first epoch, before any checkpoint) hides all that the earlier start logged
        # past step 0, which holds only the run's config text and HPARAMS session: written
        # once a run (_start_session), kept unless it starts over with other values. A
        # reader takes HPARAMS' session from its first record, wherever a purge falls: where
        # this start's values differ (more epochs, or started over) the earlier goes.
        # The first start writes its purge (a SessionLog START at step 0) too: TensorBoard's
        # server reading with Python (plugin_event_accumulator) takes a run's first START as
        # its beginning and purges at later ones only, so the first resume's purged nothing
        # there and the steps past the checkpoint showed twice.
        earlier = sorted(Path(run.log_dir).glob("events.out.tfevents.*"), key=lambda p: p.name)
        purge = run.resumed_step + 1 if run.resumed_epoch or earlier else 0
        session = session_hparams(given_values(run, config), hparams, run.sweep)
        text = config_text(config, hparams, session, run.sweep)
        shown = shown_config(earlier, purge)
        if not run.resumed_epoch and shown != text:
            purge, shown = 0, None  # started over with other values (or none shown): all anew
        check_room(run.log_dir, "TensorBoard's events")
        seen = shown_session(earlier)
        stale = seen is not None and dict(seen.hparams) != {
            name: _proto_value(value) for name, value in session.items()}
        if earlier:
            _after_earlier_files(earlier)
        with self._writing(run.log_dir):
            self.writer = SummaryWriter(log_dir=run.log_dir, flush_secs=FLUSH_S,
                                        max_queue=QUEUE, purge_step=purge)
        self.events = getattr(self.writer.file_writer.event_writer, "_file_name", run.log_dir)
        with self._writing():
            self._start_session(run, session, seen.start_time_secs if stale else
                                time.time() if seen is None else None, text, shown)
        if stale:
            # other values than HPARAMS shows (more epochs, or started over): the earlier
            # session goes, so that HPARAMS shows those the run goes on (and ends) with,
            # from the run's first start. Once this start's is on disk: a process killed
            # in between (a second Ctrl-C) leaves the run one session, never none
            with self._writing():
                self.writer.flush()
            with self._writing(run.log_dir):
                drop_hparams(earlier)

    def _start_session(self, run: RunInfo, session: dict, since: float | None, text: str,
                       shown: str | None) -> None:
        """The HPARAMS session (started at `since`, in seconds since the epoch; None: the
        one a reader sees in the run's earlier event files stands) and the run's config
        `text`, once a run: a start whose earlier event files a reader still sees the text in
        (`shown`) writes it not again (each start wrote its step-0 text, and a reader showed
        one a start). Resumed with other values (more epochs), the text goes in again at the
        step it resumes from, the step-0 one kept, and the session anew (start drops the
        earlier one)."""
        if since is not None:
            start = plugin_data_pb2.SessionStartInfo(start_time_secs=since)
            for name, value in session.items():
                start.hparams[name].CopyFrom(_proto_value(value))
            self.writer.file_writer.add_summary(experiment_summary(run.sweep, session))
            self.writer.file_writer.add_summary(_summary(
                metadata.SESSION_START_INFO_TAG,
                plugin_data_pb2.HParamsPluginData(session_start_info=start)))
        if shown is None:
            self.writer.add_text(CONFIG_TAG, text, 0)
        elif text != shown:
            self.writer.add_text(CONFIG_TAG, text, run.resumed_step)

    def log_step(self, step: int, metrics: dict) -> None:
        with self._writing():
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)

    def ensure_room(self) -> None:
        # before the epoch's checkpoint, while the disk still holds the events queued: the
        # run is preempted at the epoch before, whose events are all in, and resumed it logs
        # this epoch again
        check_room(self.events, "TensorBoard's events")

    def log_epoch(self, step: int, metrics: dict, histograms: dict) -> None:
        with self._writing():
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(name, value, step)
            for name, h in histograms.items():  # metering.Histogram: binned on the device
                self.writer.add_histogram_raw(name, h.min, h.max, h.num, h.sum,
                                              h.sum_squares, h.edges[1:], h.counts, step)

    def log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        with self._writing():
            self._log_confusion(step, matrix, classes)

    def _log_confusion(self, step: int, matrix, classes: list[str]) -> None:
        self.writer.add_image("test/confusion_matrix", confusion_image(matrix), step,
                              dataformats="CHW")
        header = "| true \\ predicted | " + " | ".join(classes) + " |"
        rule = "|---" * (len(classes) + 1) + "|"
        rows = [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
                for name, row in zip(classes, matrix.tolist())]
        self.writer.add_text("test/confusion_matrix", "\n".join([header, rule, *rows]), step)

    def finish(self, summary: dict, state: str) -> None:
        if self.failed:  # said once, by the write that failed: what fits is written
            try:
                self.writer.close()
            except OSError:
                pass
            return
        with self._writing():
            self._finish(summary, state)

    def _finish(self, summary: dict, state: str) -> None:
        step = summary.get("global_step", 0)
        # the end's scalars (test/loss, test/acc, test/class_acc/<class>, ...), as every sink
        # gets them; HPARAMS reads its metric columns from these
        # (a name with a <part>, test/class_acc/<class>, stands for every name it begins)
        ended = tuple(n.split("<")[0] for n in metrics.names(when=metrics.END))
        for name, value in summary.items():
            if isinstance(value, (int, float)) and any(
                    name == n or (n.endswith("/") and name.startswith(n)) for n in ended):
                self.writer.add_scalar(name, float(value), step)
        if state != "preempted":
            # A preempted start ends no session: its run goes on at the resume, and the
            # readers keep a tag's first metadata (HPARAMS' session end is nothing else), so
            # its end, status unknown, stood for the resumed run's after it had finished
            end = plugin_data_pb2.SessionEndInfo(
                status=api_pb2.Status.Value(STATUS.get(state, "STATUS_UNKNOWN")),
                end_time_secs=time.time())
            self.writer.file_writer.add_summary(_summary(
                metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(
                    session_end_info=end)))
        self.writer.close()


def confusion_image(matrix: torch.Tensor, cell: int | None = None) -> torch.Tensor:
    """A white-to-blue heat map of row-normalised counts, as a uint8 (3, H, W) image."""
    k = matrix.shape[0]
    cell = cell or max(2, 256 // k)
    rates = matrix.float() / matrix.sum(1, keepdim=True).clamp_min(1)
    image = torch.stack([1 - 0.9 * rates, 1 - 0.6 * rates, torch.ones_like(rates)])
    image = image.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return (image * 255).round().to(torch.uint8)

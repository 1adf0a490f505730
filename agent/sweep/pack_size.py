"""How many runs an agent packs into one trial: a fixed `--pack K`, or `--pack auto`.

auto measures before it packs: the first time an agent meets a kind of pack (the trial
layer's pack key: model shapes, batch size, ...), it times a few training steps of packs of 1,
then `start` members, then doubles until the images per second of the whole pack fall clearly
(by `GAIN`) below the best so far, the device's memory would not hold the next size (or it ran
out), or the sweep has no more runs of the kind; it settles on the best size: the smallest
that no larger one beats by `GAIN`, 1 where packing does not pay (a CPU's grouped convolution
on tiny maps). Timings on a busy machine (other processes on the cores) mislead one way only,
slower, and most on the first sizes: a run alone and the first pack are always measured, and
the choice is measured once more against its rival (a run alone, or the best pack where runs
go alone), and so is a size whose fall ended the doubling, each size keeping its best timing,
before it stands. Pure bookkeeping: the caller
measures (agent/trial/probe.py). No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from util.errors import UserError

GAIN = 1.10  # a doubling must raise the pack's throughput by 10% to be worth its memory
MEMORY_SHARE = 0.8  # of the device memory a pack may take (the rest: allocator slack, eval)


@dataclass
class SizeRecord:
    """What packs of one kind measured: size -> images/s of the whole pack (best seen)."""

    throughput: dict[int, float] = field(default_factory=dict)
    member_mb: float | None = None  # device memory one member takes
    too_big: int | None = None  # a size that could not be used (out of memory, time)
    why_not: str = "out of memory"
    runs_left: int | None = None  # the most runs of this kind the sweep could still give
    settled: int | None = None
    confirmed: bool = False  # the choice was measured again against its rival


class PackSizer:
    """Chooses the size of the next pack (`next_size`) from what packs measured (`probe`,
    or `observe` one at a time). `fixed` is `--pack K`; None means auto: sizes 1, `start`,
    2*start, ..."""

    def __init__(self, fixed: int | None = 1, start: int = 2, largest: int = 64):
        if fixed is not None and fixed < 1:
            raise ValueError(f"a pack has at least one member, not {fixed}")
        self.fixed, self.start, self.largest = fixed, start, largest
        self.records: dict[object, SizeRecord] = {}
        self.memory_mb: float | None = None  # the device's total memory, when it has one

    def knows(self, key: object) -> bool:
        """Whether a claim of this kind can be sized now: always with a fixed size; with
        auto, once the kind is settled (`probe`, `settle`, or whole packs `observe`d)."""
        return self.fixed is not None or self.records.get(key, SizeRecord()).settled is not None

    def settle(self, key: object, size: int) -> None:
        """Fix this kind's size without measuring (a kind with one run left, or one that
        cannot be measured: its runs then go alone and fail, if they do, with their reason)."""
        self.records.setdefault(key, SizeRecord()).settled = size

    def next_size(self, key: object = None) -> int:
        if self.fixed is not None:
            return self.fixed
        record = self.records.get(key)
        if record is None or not record.throughput:
            return 1  # the baseline: what a run alone does on this device
        if record.settled is not None:
            return record.settled
        return self._decide(record)[0]

    def _decide(self, record: SizeRecord) -> tuple[int, bool]:
        """(the next size to try, or the best one, and whether that best is final)."""
        best, largest = _best(record), max(record.throughput)
        candidate = min(self.start if largest < self.start else 2 * largest,
                        self._memory_cap(record), record.runs_left or self.largest)
        # explore past a plateau (a CPU's grouped convolutions speed up unevenly with the
        # size), not past a clear fall
        falling = GAIN * record.throughput[largest] < record.throughput[best]
        if falling or record.too_big is not None or candidate <= largest:
            return best, True
        return candidate, False

    def probe(self, key: object,
              measure: Callable[[int, bool], tuple[float, float | None] | str],
              runs_left: int | None = None) -> None:
        """Settle `key`'s size by measuring packs: measure(size, required) gives (images/s of
        the whole pack, its peak device memory in MiB or None), or why that size cannot be
        used (`out of memory`, `not measured (over 20 s)`: a time budget the caller may only
        apply where `required` is False). Sizes follow `next_size` (1, start, 2 * start, ...)
        until the rule settles, never beyond `runs_left`, the most runs of this kind the sweep
        can still give (None: no bound); the first two sizes are required. Then the size
        settled on, its rival (`_rival`) and the size whose fall ended the doubling
        (`_fallen`) are measured again, required, each keeping its best timing, and the
        rule decides anew (measuring on if it asks for a larger size)."""
        record = self.records.setdefault(key, SizeRecord())
        record.runs_left = runs_left
        while self.fixed is None and record.settled is None:
            size = self.next_size(key)
            measured = measure(size, len(record.throughput) < 2)
            if isinstance(measured, str):  # the best smaller size it is
                record.too_big, record.why_not = size, measured
                # not even one: runs go alone, and each trial says why it fails, if it does
                record.settled = self._decide(record)[0] if record.throughput else 1
            else:
                self.observe(key, size, *measured)
            if record.settled is not None and not record.confirmed and \
                    len(record.throughput) >= 2:
                record.confirmed = True
                for size in dict.fromkeys((record.settled, self._rival(record),
                                           self._fallen(record))):
                    if size is None:
                        continue
                    measured = measure(size, True)
                    if not isinstance(measured, str):
                        self.observe(key, size, *measured)
                chosen, final = self._decide(record)
                record.settled = chosen if final else None

    @staticmethod
    def _fallen(record: SizeRecord) -> int | None:
        """The size whose clear fall below the best ended the doubling, else None: a timing
        slowed by another process on the cores looks like such a fall (packs of 4 of a small
        model read 328 images/s between 5.1k for 2 and 12k when measured again), and
        would keep every larger size from being tried."""
        best, largest = _best(record), max(record.throughput)
        return largest if GAIN * record.throughput[largest] < record.throughput[best] else None

    @staticmethod
    def _rival(record: SizeRecord) -> int:
        """What a settled size is measured again against: a run alone, or where runs go
        alone, the pack that measured fastest."""
        if record.settled != 1:
            return 1
        return max((size for size in record.throughput if size != 1),
                   key=lambda size: record.throughput[size])

    def observe(self, key: object, size: int, images_per_s: float,
                peak_memory_mb: float | None = None) -> None:
        """A pack of `size` members trained at `images_per_s` (all members together),
        taking `peak_memory_mb` of device memory at its peak (None on a CPU)."""
        record = self.records.setdefault(key, SizeRecord())
        record.throughput[size] = max(images_per_s, record.throughput.get(size, 0.0))
        if peak_memory_mb:
            record.member_mb = peak_memory_mb / size
        if record.settled is None:
            size, final = self._decide(record)
            record.settled = size if final else None

    def settled_text(self, key: object) -> str | None:
        """`packs of 4 (images/s by size: 1: 3.1k, 2: 5.8k, 4: 9.9k, 8: 10.1k)` once --pack
        auto has settled for this kind of pack (`16: out of memory` where a size did not fit),
        else None."""
        record = self.records.get(key)
        if self.fixed is not None or record is None or record.settled is None:
            return None
        return f"packs of {record.settled} ({self.measured_text(key)})"

    def measured_text(self, key: object) -> str:
        """`images/s by size: 1: 3.1k, 2: 5.8k, 16: out of memory`: what this kind measured."""
        record = self.records.get(key, SizeRecord())
        tried = [f"{size}: {_rate(rate)}" for size, rate in sorted(record.throughput.items())]
        if record.too_big is not None:
            tried.append(f"{record.too_big}: {record.why_not}")
        return f"images/s by size: {', '.join(tried)}"

    def adopt(self, key: object, record: SizeRecord, runs_left: int | None = None) -> bool:
        """Take the size another agent settled on for `key` (its `record`, measured on a
        device like this one: agent/sweep/pack_share.py) where this agent would settle the
        same from those figures, given its own bound on the kind's runs (`runs_left`, as in
        `probe`) and its memory: not where it may measure larger packs (the other agent
        had fewer runs left, under --count say, or a smaller share of the device). Whether
        it was taken; nothing changes where not."""
        if self.fixed is not None or record.settled is None or not record.throughput:
            return False
        mine = replace(record, throughput=dict(record.throughput), runs_left=runs_left,
                       settled=None, confirmed=True)
        chosen, final = self._decide(mine)
        if not final or chosen != record.settled:
            return False
        mine.settled = chosen
        self.records[key] = mine
        return True

    def forget(self, key: object) -> None:
        """Drop what this kind measured (a measurement cut short): it is measured again."""
        self.records.pop(key, None)

    def _memory_cap(self, record: SizeRecord) -> int:
        if self.memory_mb is None or not record.member_mb:
            return self.largest
        return max(1, min(self.largest, int(MEMORY_SHARE * self.memory_mb // record.member_mb)))


def _best(record: SizeRecord) -> int:
    """The smallest size measured that no larger size beats by GAIN."""
    tried = sorted(record.throughput)
    best = tried[0]
    for size in tried[1:]:
        if record.throughput[size] >= GAIN * record.throughput[best]:
            best = size
    return best


def _rate(images_per_s: float) -> str:
    """3 significant digits: 950, 3.1k, 114k, 1.23M."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if images_per_s >= scale:
            return f"{images_per_s / scale:.3g}{unit}"
    return f"{images_per_s:.3g}"


# Set by the launcher in each agent's environment: how many agents it started on the agent's
# device (--agents-per-gpu N on a GPU, --agents N on the CPU). A pack is sized to the agent's
# share of the device's memory, so that N agents' packs together fit it.
AGENTS_PER_DEVICE = "SWEEP_AGENTS_PER_DEVICE"


def agents_per_device() -> int:
    """The agents sharing this agent's device (AGENTS_PER_DEVICE; 1 where it is not set or
    not a positive integer: an agent started by hand counts the device as its own)."""
    text = os.environ.get(AGENTS_PER_DEVICE, "")
    return int(text) if text.isdigit() and int(text) >= 1 else 1


class PackOptionError(UserError, ValueError):
    """A --pack that is neither auto nor an integer from 1 to 256: one line (UserError)."""


def parse_pack(text: str) -> int | None:
    """`--pack` as given: a positive integer, or 'auto' (None). PackOptionError (a UserError
    and a ValueError) otherwise."""
    if text == "auto":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise PackOptionError(f"--pack={text!r}: expected auto or an integer from 1 to 256")
    return int(text)

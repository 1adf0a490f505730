"""How many runs an agent packs into one trial: a fixed `--pack K`, or `--pack auto`.

auto grows the pack while it pays: each kind of pack (the trial layer's pack key: model
shapes, batch size, ...) first trains one run alone (the baseline), then `start` members, then
doubles while the images per second of the whole pack rise by at least `GAIN` over the best
smaller size, never beyond what the device's free memory holds, and settles on the best size
seen, which is 1 where packing does not pay (a CPU's grouped convolution on tiny maps).
Pure bookkeeping: the agent reports what each pack measured. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAIN = 1.10  # a doubling must raise the pack's throughput by 10% to be worth its memory
MEMORY_SHARE = 0.8  # of the device memory a pack may take (the rest: allocator slack, eval)


@dataclass
class SizeRecord:
    """What packs of one kind measured: size -> images/s of the whole pack (best seen)."""

    throughput: dict[int, float] = field(default_factory=dict)
    member_mb: float | None = None  # device memory one member takes
    settled: int | None = None


class PackSizer:
    """Chooses the size of the next pack (`next_size`) from what earlier packs measured
    (`observe`). `fixed` is `--pack K`; None means auto: sizes 1, `start`, 2*start, ..."""

    def __init__(self, fixed: int | None = 1, start: int = 2, largest: int = 64):
        if fixed is not None and fixed < 1:
            raise ValueError(f"a pack has at least one member, not {fixed}")
        self.fixed, self.start, self.largest = fixed, start, largest
        self.records: dict[object, SizeRecord] = {}
        self.memory_mb: float | None = None  # the device's total memory, when it has one

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
        tried = sorted(record.throughput)
        best = tried[0]  # the smallest size no larger size beats by GAIN
        for size in tried[1:]:
            if record.throughput[size] >= GAIN * record.throughput[best]:
                best = size
        largest = tried[-1]
        candidate = self.start if largest < self.start else 2 * largest
        if best != largest or candidate > self._memory_cap(record):
            return best, True
        return candidate, False

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
        """`packs of 4 (images/s: 1 -> 3,100, 2 -> 5,800, 4 -> 9,900, 8 -> 10,100)` once
        --pack auto has settled for this kind of pack, else None."""
        record = self.records.get(key)
        if self.fixed is not None or record is None or record.settled is None:
            return None
        tried = ", ".join(f"{size} -> {rate:,.0f}" for size, rate in
                          sorted(record.throughput.items()))
        return f"packs of {record.settled} (images/s: {tried})"

    def _memory_cap(self, record: SizeRecord) -> int:
        if self.memory_mb is None or not record.member_mb:
            return self.largest
        return max(1, min(self.largest, int(MEMORY_SHARE * self.memory_mb // record.member_mb)))


def parse_pack(text: str) -> int | None:
    """`--pack` as given: a positive integer, or 'auto' (None). ValueError otherwise."""
    if text == "auto":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"--pack={text!r}: expected auto or an integer from 1 to 256")
    return int(text)

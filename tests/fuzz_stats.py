"""Sum up a fuzzer run: `python tests/fuzz_stats.py FILE`, FILE written by the fuzz tests with
FUZZ_STATS=FILE (one JSON line per case). Prints the figure the README quotes."""

from __future__ import annotations

import json
import sys
from collections import Counter

ACCEPTED = ("accepted", "help", "refused_before_training")


def memory(case: dict) -> float:
    return (case.get("grew_mb") if case["how"] == "in-process" else case.get("peak_mb")) or 0


def main(path: str) -> None:
    cases = [json.loads(line) for line in open(path)]
    outcomes = Counter(case["outcome"] for case in cases)
    by_entry = Counter((case["entry"], case["how"]) for case in cases)
    bad = [c for c in cases if c["outcome"] not in ACCEPTED + ("refused",)]
    print(f"{len(cases)} generated inputs ({sum(c['how'] == 'process' for c in cases)} as "
          "real processes):")
    for (entry, how), count in sorted(by_entry.items()):
        print(f"  {entry:<7} {how:<10} {count}")
    print(f"outcomes: {dict(outcomes)}")
    hangs = sum(c["outcome"] in ("hang", "timeout") or c["seconds"] > 10 for c in cases)
    print(f"tracebacks: {sum(c['outcome'] == 'traceback' for c in cases)}, "
          f"hangs (over 10 s): {hangs}, "
          f"over 1 GiB: {sum(memory(c) >= 1024 for c in cases)}, "
          f"other failures: {len(bad)}")
    print(f"slowest case {max(c['seconds'] for c in cases):.2f} s, "
          f"most memory {max(memory(c) for c in cases):.0f} MB (a process's peak; in the "
          "worker, what the case added to its peak)")
    accepted = [c for c in cases if c["outcome"] in ACCEPTED]
    print(f"accepted: {len(accepted)}, of which refused before training by the trial's "
          f"pre-flight check: {outcomes['refused_before_training']}")


if __name__ == "__main__":
    main(sys.argv[1])

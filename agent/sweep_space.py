"""What a sweep file searches over, read from its `parameters`: the names it offers choices
for (`values`, a distribution, or min/max) and which of them are log-distributed; and how
their values and durations are written in 80 columns. The console header, TensorBoard's
HPARAMS columns, the status table and the report use these. No torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

LOG_SPAN = 100.0  # values spanning two decades or more are read on a log scale


class Choice(list):
    """A list-valued parameter's value (`channels: [16, 32]`) that can also be a key: in a
    set, a dict, a group of runs. It hashes as its tuple and is never changed in place; it
    prints, compares and serialises (JSON, YAML) as the list it is."""

    def __hash__(self) -> int:
        return hash(tuple(self))


def choice(value):
    """`value` as a Choice when it is a list (nested lists too), else unchanged."""
    return Choice(choice(v) for v in value) if isinstance(value, list) else value


def choices(config: dict) -> dict:
    """A run's {name: value} with every list value a Choice (see there)."""
    return {name: choice(value) for name, value in config.items()}


def _represent_choice(dumper, value):
    return dumper.represent_list(list(value))


# yaml.safe_dump writes a Choice as the list it is
yaml.SafeDumper.add_representer(Choice, _represent_choice)
yaml.Dumper.add_representer(Choice, _represent_choice)


@dataclass(frozen=True)
class SweptParameter:
    name: str
    log: bool  # log-distributed (a log_uniform* / log_normal* distribution, or values over
    # two decades or more)
    values: tuple | None  # the choices of a `values` list; None for a distribution


def swept_parameters(sweep_config: dict | None) -> list[SweptParameter]:
    """The parameters `sweep_config` chooses among, in its order. A `value:` is fixed; a
    `values:` list (even of one item: a repeat sweep keeps its original's choices so) or a
    distribution (`distribution:` or `min`/`max`) is swept. Nested `parameters` are left out
    (swept_leaves names them)."""
    swept = (_swept(name, spec)
             for name, spec in ((sweep_config or {}).get("parameters") or {}).items())
    return [parameter for parameter in swept if parameter is not None]


def swept_leaves(sweep_config: dict | None) -> list[SweptParameter]:
    """swept_parameters with those inside nested `parameters` too, under their dotted names
    (`opt.lr`, as W&B names a nested key): what the runs of another program differ by, each
    getting a nested block as one dict (our trainer refuses nested parameters)."""
    def leaves(parameters: dict, prefix: str) -> list[SweptParameter]:
        out = []
        for name, spec in parameters.items():
            if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):
                out += leaves(spec["parameters"], f"{prefix}{name}.")
            elif (parameter := _swept(f"{prefix}{name}", spec)) is not None:
                out.append(parameter)
        return out

    return leaves((sweep_config or {}).get("parameters") or {}, "")


def leaf_value(config: dict, name: str, default=""):
    """A run's value of `name` (swept_leaves): its own key, else the dotted path into the
    dicts that nested parameters gave it (`opt.lr`: config["opt"]["lr"]); `default` when
    it has none."""
    found = _walk(config, name)
    return default if found is _MISSING else found


_MISSING = object()


def _walk(value, name: str):
    """`name` in `value`: the whole name as a key, else a key that is a dotted prefix of it
    (the longest first) and the rest within its dict; a nested key may hold dots of its own
    (layer0.weight inside init.scales). _MISSING when nothing matches."""
    if not isinstance(value, dict):
        return _MISSING
    if name in value:
        return value[name]
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in value:
            found = _walk(value[head], ".".join(parts[cut:]))
            if found is not _MISSING:
                return found
    return _MISSING


def _swept(name: str, spec) -> SweptParameter | None:
    """The SweptParameter of one parameter's spec; None when fixed (the engine adds
    distribution: constant to a `value:`) or nested."""
    if not isinstance(spec, dict) or "parameters" in spec or "value" in spec \
            or spec.get("distribution") == "constant":
        return None
    if "values" in spec and isinstance(spec["values"], list):
        return SweptParameter(name, spans_decades(spec["values"]),
                              tuple(choice(v) for v in spec["values"]))
    if "distribution" in spec or ("min" in spec and "max" in spec):
        log = "log_" in str(spec.get("distribution", ""))  # log_uniform*, log_normal...
        return SweptParameter(name, log, None)
    return None


def spans_decades(values) -> bool:
    """All numbers, all positive, and the largest at least LOG_SPAN times the smallest (an lr
    grid of 0.1, 0.01, 0.001: on a linear axis 0.01 and 0.001 would touch)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < 2 or len(numbers) != len(values) or min(numbers) <= 0:
        return False
    return max(numbers) / min(numbers) >= LOG_SPAN


def log_scaled(values) -> bool:
    """Read on a log scale in the report's figures and correlations: values spanning two
    decades (spans_decades), or whole powers of two spread 8-fold or more (batch sizes 16 to
    1024, widths 32 to 512), which a linear axis crowds at its low end."""
    if spans_decades(values):
        return True
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < 2 or len(numbers) != len(values) or min(numbers) <= 0:
        return False
    powers = all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in numbers)
    return powers and max(numbers) / min(numbers) >= 8


def short_number(value) -> str:
    """A number in at most ~7 characters that keeps 1e-3 and 1e-4 apart: 0.1, 0.001,
    1e-05, 0.3, 128, 2.5e+04; anything else as str()."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**6 else f"{value:.3g}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def duration_text(seconds: float | None) -> str:
    """12 s, 7 min, 1 h 05 min; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"

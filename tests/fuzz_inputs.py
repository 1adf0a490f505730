"""Generated inputs for the fuzzer (tests/test_fuzz.py): sweep YAML files, the trainer's argument
lists, and every command's options. Drawn from the specs the inputs follow (the sweep engine's
schema, the parameter table, each command's options) and, mixed in everywhere, from values no
spec allows: numbers beyond any bound, text that is no number, NULs, lone surrogates, dates,
aliases, deep nesting, files that are FIFOs or directories. A case is a dict the worker
(tests/fuzz_worker.py) runs: {"entry", "argv", "files"}; `{file:NAME}` in argv is the path of
the case's file NAME.
"""

from __future__ import annotations

import base64
import json
import math

import yaml
from hypothesis import strategies as st

from agent import metrics
from agent.params import BY_NAME, ID_PATTERN, PARAMS
from engine_schema import SCHEMA, schema_distributions

FIXTURE = "done"  # the finished local sweep of tests/fuzz_worker.py
OUR_COMMAND = ["${env}", "python", "-m", "agent.train", "${args}"]

# --- values no spec allows ---------------------------------------------------------------------
EDGE_INTS = [0, 1, -1, 2, 3, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**19,
             10**20]
EDGE_FLOATS = [0.0, -0.0, 1e-300, 5e-324, 0.5, 1.0, 1.000001, 1e30, 1e39, 1e308, math.inf,
               -math.inf, math.nan]
EDGE_TEXT = ["", " ", ".", "..", "a/b", "/", "../x", "x" * 300, "\x00", "a\x00b", "\ud800",
             "\udcff", "é", "2020-01-01", "yes", "no", "on", "None", "null", "~", "nan", "inf",
             "-1", "1e20", "0x1f", "1_000", "[1, 2]", "{a: 1}", "*a", "&a x", "!!binary aGk=",
             "${args}", "%s", "\n", "\t", "a\nb", "--lr=1", "-", "--", "٣"]
hostile_scalars = st.one_of(
    st.integers(-2**70, 2**70), st.sampled_from(EDGE_INTS), st.floats(),
    st.sampled_from(EDGE_FLOATS), st.text(max_size=12), st.sampled_from(EDGE_TEXT),
    st.booleans(), st.none())
hostile_values = st.recursive(
    hostile_scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=6) | st.sampled_from(EDGE_TEXT), children, max_size=3), max_leaves=8)
NUMBER_TEXT = ["0", "1", "2", "-1", "1e20", "1e308", "1e400", "nan", "inf", "-inf", "abc", "",
               "1.5", "3.0", "0x10", "1_0", " 2", "9" * 50, "9" * 5000, "٣", "1e-300"]
number_text = st.one_of(st.integers(1, 4).map(str), st.integers(-10, 300).map(str),
                        st.sampled_from(NUMBER_TEXT), st.floats().map(repr))


# --- values a spec allows (and its edges) ------------------------------------------------------
def _int_in(param) -> st.SearchStrategy:
    low = int(param.minimum if param.minimum is not None else -10)
    high = int(param.maximum) if param.maximum is not None else low + 10**6
    return st.one_of(st.integers(low, min(high, low + 64)), st.integers(low, high))


def _float_in(param) -> st.SearchStrategy:
    low = param.minimum if param.minimum is not None else -1e6
    high = param.maximum if param.maximum is not None else 1e6
    return st.floats(low, high, exclude_min=param.exclusive_minimum,
                     exclude_max=param.exclusive_maximum, allow_nan=False)


def _text_of(param) -> st.SearchStrategy:
    if param.text == "id":
        return st.from_regex(ID_PATTERN, fullmatch=True)
    if param.text == "path":
        return st.lists(st.sampled_from(["data", "runs", "x", "a b", "é", "_"]), min_size=1,
                        max_size=3).map("/".join)
    return st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
                   max_size=20)


def _edges(param) -> list:
    out = []
    for bound in (param.minimum, param.maximum):
        if bound is not None:
            out += [bound, bound - 1, bound + 1, bound * 2 + 1]
    return out or [0]


def good_values(param) -> st.SearchStrategy:
    """Values `param` allows (its choices, or numbers within its bounds)."""
    choices = param.allowed_choices()
    if param.type is list:
        item = st.sampled_from(choices) if choices else _int_in(param)
        return st.lists(item, min_size=param.min_items, max_size=min(param.max_items, 5),
                        unique=bool(choices))
    if choices:
        return st.sampled_from(choices)
    return {bool: st.booleans(), int: _int_in(param), float: _float_in(param),
            str: _text_of(param)}[param.type]


def param_values(param) -> st.SearchStrategy:
    """Mostly allowed values, then the edges of the bounds, then anything at all."""
    good = good_values(param)
    return st.one_of(good, good, good, st.sampled_from(_edges(param)), hostile_values)


PARAM_NAMES = [p.name for p in PARAMS]
names = st.one_of(st.sampled_from(PARAM_NAMES), st.sampled_from(PARAM_NAMES),
                  st.text(max_size=10), st.sampled_from(EDGE_TEXT))


def values_for(name) -> st.SearchStrategy:
    return param_values(BY_NAME[name]) if name in BY_NAME else hostile_values


# --- sweep configs ----------------------------------------------------------------------------
DISTRIBUTIONS = schema_distributions()
METHODS = list(SCHEMA["properties"]["method"]["enum"])
METRIC_NAMES = list(metrics.optimisable()) + [m.name for m in metrics.METRICS]
spec_numbers = st.one_of(st.integers(-3, 300), st.floats(-10, 10), st.sampled_from(
    EDGE_INTS + EDGE_FLOATS + [10**6, 10**12, 10**18]), hostile_scalars)


# The keys each distribution needs (W&B's sweep configuration reference).
NEEDS = {"constant": ("value",), "categorical": ("values",),
         "categorical_w_probabilities": ("values", "probabilities"), "int_uniform": ("min", "max"),
         "uniform": ("min", "max"), "q_uniform": ("min", "max", "q"),
         "log_uniform_values": ("min", "max"), "q_log_uniform_values": ("min", "max", "q"),
         "inv_log_uniform_values": ("min", "max"), "normal": ("mu", "sigma"),
         "q_normal": ("mu", "sigma", "q"), "log_normal": ("mu", "sigma"),
         "q_log_normal": ("mu", "sigma", "q"), "beta": ("a", "b"), "q_beta": ("a", "b", "q")}


def _numbers_of(name) -> st.SearchStrategy:
    param = BY_NAME.get(name)
    if param is not None and param.type in (int, float) and param.allowed_choices() is None:
        return _int_in(param) if param.type is int else _float_in(param)
    return st.integers(0, 64) | st.floats(1e-4, 1.0)


@st.composite
def parameter_spec(draw, name, wild: bool = True) -> object:
    """A parameter's spec: value, values, a range or a distribution with the keys it needs;
    `wild` mixes in values no spec allows, keys at random and specs that are no mapping."""
    if not wild and name in BY_NAME:
        values, numbers = good_values(BY_NAME[name]), _numbers_of(name)
    else:
        values, numbers = values_for(name), spec_numbers
    kinds = ["value", "value", "values", "values", "range", "distribution"]
    kind = draw(st.sampled_from(kinds + (["junk"] if wild else [])))
    if kind == "value":
        return {"value": draw(values)}
    if kind == "values":
        return {"values": draw(st.lists(values, min_size=0 if wild else 1, max_size=6))}
    if kind == "junk":
        return draw(hostile_values)
    distribution = "int_uniform" if kind == "range" else draw(st.sampled_from(
        sorted(NEEDS) + (["bogus"] if wild else [])))
    keys = NEEDS.get(distribution, ())
    if wild:
        keys = draw(st.lists(st.sampled_from(["min", "max", "q", "mu", "sigma", "a", "b",
                                              "values", "probabilities"]), max_size=4,
                             unique=True)) if draw(st.booleans()) else keys
    spec = {} if kind == "range" and not wild else {"distribution": distribution}
    for key in keys:
        if key == "value":
            spec[key] = draw(values)
        elif key == "values":
            spec[key] = draw(st.lists(values, min_size=1, max_size=4))
        elif key == "probabilities":
            count = len(spec.get("values", [0]))
            spec[key] = [1 / count] * count if not wild else draw(st.lists(spec_numbers,
                                                                            max_size=4))
        elif key in ("q", "sigma", "a", "b") and not wild:
            spec[key] = draw(st.sampled_from([1, 2, 0.5, 0.1, 8]))
        else:
            spec[key] = draw(numbers)
    if not wild and {"min", "max"} <= set(spec) and spec["min"] > spec["max"]:
        spec["min"], spec["max"] = spec["max"], spec["min"]
    return spec


MACROS = ["${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}",
          "${args_json}", "${args_json_file}", "${args_no_boolean_flags}", "${args_dict}",
          "${envvar:HOME}", "${envvar:}", "${bogus}", "python", "-m", "agent.train"]
COMMANDS = [{"program": "agent/train.py", "command": OUR_COMMAND}, {"program": "agent/train.py"},
            {}, {"command": ["python", "nosuch.py", "${args}"]},
            {"command": ["${env}", "python", "-m", "agent.train", "${args_json}"]},
            {"command": ["${interpreter}", "${program}", "${args_dict}"],
             "program": "agent/train.py"}]


@st.composite
def sweep_configs(draw) -> dict:
    """A sweep config: half of them well formed (known methods, parameters and metrics, values
    mostly in range: they reach the checks of what a trial accepts), half wild."""
    wild = draw(st.booleans())
    chosen = draw(st.lists(names if wild else st.sampled_from(PARAM_NAMES),
                           min_size=0 if wild else 1, max_size=6, unique=True))
    known = [m for m in METHODS if m != "custom"]
    config: dict = {"method": draw(st.sampled_from(METHODS) | st.sampled_from(METHODS)
                                   | hostile_scalars if wild else st.sampled_from(known)),
                    "parameters": {n: draw(parameter_spec(n, wild)) for n in chosen}}
    if wild and draw(st.integers(0, 9)) == 0:
        config["parameters"] = draw(hostile_values)
    goals = metrics.optimisable()
    if draw(st.booleans()) or (not wild and config["method"] == "bayes"):
        name = draw(st.sampled_from(METRIC_NAMES) | st.text(max_size=8) if wild
                    else st.sampled_from(sorted(goals)))
        config["metric"] = {"name": name, "goal": draw(
            st.sampled_from(["maximize", "minimize"]) | hostile_scalars) if wild
            else goals.get(name)}
        if draw(st.integers(0, 3)) == 0:
            config["metric"]["target"] = draw(spec_numbers)
    config.update(draw(st.sampled_from(COMMANDS if wild else COMMANDS[:2])))
    extras = [("early_terminate", st.fixed_dictionaries(
                  {"type": st.sampled_from(["hyperband", "bogus"])},
                  optional={k: spec_numbers for k in ("min_iter", "max_iter", "s", "eta")})
               if wild else st.fixed_dictionaries(
                  {"type": st.just("hyperband"), "min_iter": st.integers(1, 3)},
                  optional={"eta": st.integers(2, 4)})),
              ("run_cap", spec_numbers if wild else st.integers(1, 50)),
              ("name", st.text(max_size=8) | st.sampled_from(EDGE_TEXT)),
              ("description", st.text(max_size=20))]
    if wild:
        extras += [("project", st.text(max_size=8)), (draw(st.text(max_size=6)), hostile_values),
                   ("command", st.lists(st.sampled_from(MACROS) | st.text(max_size=6)
                                        | hostile_scalars, max_size=5) | hostile_values),
                   ("program", st.sampled_from(EDGE_TEXT) | hostile_values),
                   ("metric", hostile_values), ("early_terminate", hostile_values)]
    for key, strategy in extras:
        if draw(st.integers(0, 3)) == 0 and (wild or key != "early_terminate"
                                             or "metric" in config):
            config[key] = draw(strategy)
    if not wild and "early_terminate" in config:
        config["metric"] = {"name": "val/acc", "goal": "maximize"}
    return config


# Text spliced into a sweep file: what PyYAML reads as something other than plain data, or
# reads only at great cost.
def _laughs(levels: int, width: int) -> str:
    lines = ["lol0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


SNIPPETS = ["2020-01-01", "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=", "!!set {a, b}",
            "!!omap [a: 1]", "!!python/object/apply:os.system ['true']", "&a [*a]",
            "1" + "0" * 30, "1" + "0" * 5000, "!!float abc", "!!bool maybe", "!!int 0x" + "f" * 40,
            '"\\0"', '"\\ud800"', '"a\\x00b"', ".nan", ".inf", "-.inf", "~", "{? [a, b]: 1}",
            "1:30", "0o777", "0b101", "+12", "1_000_000", "*undefined"]


@st.composite
def sweep_text(draw) -> bytes:
    """A generated sweep config as YAML, then mutated the way hand-edited files go wrong."""
    config = draw(sweep_configs())
    try:
        text = yaml.safe_dump(config, allow_unicode=draw(st.booleans()), sort_keys=False)
    except yaml.YAMLError:
        text = json.dumps(config, default=str)
    mutation = draw(st.sampled_from(["none"] * 12 + ["snippet", "value", "laughs", "deep",
                                                     "truncate", "bytes", "tabs", "scalar"]))
    if mutation == "snippet":
        text += f"extra: {draw(st.sampled_from(SNIPPETS))}\n"
    elif mutation == "value" and "value: " in text:
        text = text.replace("value: ", f"value: {draw(st.sampled_from(SNIPPETS))} #", 1)
    elif mutation == "laughs":
        text += _laughs(draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    elif mutation == "deep":
        depth = draw(st.integers(10, 3000))
        text += "deep: " + "[" * depth + "]" * depth + "\n"
    elif mutation == "truncate":
        text = text[:draw(st.integers(0, len(text)))]
    elif mutation == "tabs":
        text = text.replace("  ", "\t")
    elif mutation == "scalar":
        text = draw(st.sampled_from(["5", "- a\n- b", "null", "''", "parameters: 5",
                                     "method: grid\nparameters:\n  lr: 5\n"]))
    data = text.encode("utf-8", "surrogatepass")
    if mutation == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\x80abc", b"\x00"])) \
            + data[at:]
    return data


def _bytes(data: bytes) -> dict:
    return {"data": base64.b64encode(data).decode("ascii")}


@st.composite
def sweep_cases(draw) -> dict:
    """A sweep file for `load_sweep_config` (what ./run_sweep.sh x.yaml checks first)."""
    special = draw(st.sampled_from([None] * 20 + ["fifo", "dir", "devzero", "empty", "huge"]))
    files = {"sweep.yaml": {
        None: lambda: _bytes(draw(sweep_text())), "fifo": lambda: {"kind": "fifo"},
        "dir": lambda: {"kind": "dir"}, "devzero": lambda: {"kind": "symlink", "to": "/dev/zero"},
        "empty": lambda: _bytes(b""),
        "huge": lambda: _bytes(b"# a comment line of a large file\n" * 70000)}[special]()}
    return {"entry": "sweep", "argv": ["{file:sweep.yaml}"], "files": files}


# --- the trainer's arguments ---------------------------------------------------------------------
def as_text(value) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


@st.composite
def train_cases(draw) -> dict:
    """Arguments of `python -m agent.train`, in every form wandb's macros write, mixed with
    arguments no form allows; a --config YAML and a JSON file where they are named."""
    argv: list[str] = []
    files: dict = {}
    wild = draw(st.booleans())  # else: known parameters, allowed values, the macros' forms
    forms = ["--k=v", "--k=v", "--k v", "k=v", "+k=v", "++k=v", "hyphens", "json"]
    for _ in range(draw(st.integers(0, 7))):
        name = draw(names if wild else st.sampled_from(PARAM_NAMES))
        value = as_text(draw(values_for(name) if wild else good_values(BY_NAME[name])))
        form = draw(st.sampled_from(forms + (["--flag", "config", "jsonfile", "junk"]
                                             if wild else [])))
        if form == "--k=v":
            argv.append(f"--{name}={value}")
        elif form == "--k v":
            argv += [f"--{name}", value]
        elif form in ("k=v", "+k=v", "++k=v"):
            argv.append(form.replace("k", name, 1).replace("v", value, 1))
        elif form == "--flag":
            argv.append(f"--{name}")
        elif form == "hyphens":
            argv.append(f"--{name.replace('_', '-')}={value}")
        elif form == "json":
            argv.append(json.dumps({name: draw(values_for(name) if wild else good_values(
                BY_NAME[name]))}, default=str))
        elif form == "config":
            files["run.yaml"] = _bytes(draw(st.one_of(
                st.dictionaries(names, hostile_values, max_size=4).map(
                    lambda d: yaml.safe_dump(d).encode("utf-8", "surrogatepass")),
                st.sampled_from(SNIPPETS).map(lambda s: f"lr: {s}\n".encode()))))
            argv.append(draw(st.sampled_from(["--config={file:run.yaml}", "--config",
                                              "--config=missing.yaml"])))
            if argv[-1] == "--config":
                argv.append("{file:run.yaml}")
        elif form == "jsonfile":
            files["args.json"] = _bytes(json.dumps(draw(st.dictionaries(
                names, hostile_values, max_size=3)), default=str).encode("utf-8",
                                                                       "surrogatepass"))
            argv.append("{file:args.json}")
        else:
            argv.append(draw(st.sampled_from(EDGE_TEXT) | st.text(max_size=10)))
    return {"entry": "train", "argv": argv, "files": files}


# --- every command's options ---------------------------------------------------------------------
SWEEP_TARGETS = [FIXTURE, f"data/sweeps/{FIXTURE}", f"data/sweeps/{FIXTURE}/sweep.db", "odd", "cut",
                 "nosuch", "nosuch.yaml", "ent/proj/abc123", "a/b", "", "-", ".", "..", "/",
                 "{file:sweep.yaml}", "{file:fifo.yaml}", "x" * 300, "\udcff", "a\x00b"]
COMMON = {"--help": None, "-h": None, "--bogus": number_text, "-x": None, "--": None}
OPTIONS = {
    "launch": {"--gpus": st.sampled_from(["0", "0,1", "", "abc", "GPU-1a2b", "-1", "0,,1",
                                          ",".join(["0"] * 100)]),
               "--agents-per-gpu": number_text, "--agents": number_text,
               "--count": number_text, "--project": st.text(max_size=8),
               "--heartbeat": number_text, "--heartbeat-timeout": number_text,
               "--pack": st.sampled_from(["auto", "1", "4", "0", "300", "abc", "2.0", ""]),
               "--pbs": number_text, "--slurm": number_text,
               "--walltime": st.sampled_from(["4:00:00", "1:75:00", "4h", "", "99:00:00"]),
               "--gpus-per-job": number_text, "--cpus-per-job": number_text,
               "--mem": st.sampled_from(["16gb", "16", "1tb", "-1gb", "abc"]),
               "--scratch": st.sampled_from(["20gb", "x"]), "--queue": st.text(max_size=6),
               "--partition": st.text(max_size=6), "--container": st.sampled_from(
                   ["missing.sif", "{file:sweep.yaml}"]), "--dry-run": None, "--agent": None},
    "agent": {"--wandb": None, "--count": number_text, "--project": st.text(max_size=8),
              "--heartbeat": number_text, "--heartbeat-timeout": number_text,
              "--pack": st.sampled_from(["auto", "1", "4", "0", "300", "abc"])},
    "status": {},
    "report": {"--out": st.sampled_from(["reports", "out/x", "", ".", "x" * 300, "\udcff",
                                         "{file:sweep.yaml}"])},
    "repeat": {"--top": number_text, "--by": names, "--seeds": number_text, "--run": None},
}


@st.composite
def command_cases(draw, entry: str) -> dict:
    """Options of one command (./run_sweep.sh, the agent, status, report, repeat) in any
    order, each known or not, with values in range or not, and a sweep to point it at."""
    options = {**OPTIONS[entry], **COMMON}
    argv: list[str] = []
    if draw(st.integers(0, 9)):
        argv.append(draw(st.sampled_from([FIXTURE, "odd"]) | st.sampled_from(SWEEP_TARGETS)
                         | st.text(max_size=8)))
    for _ in range(draw(st.integers(0, 5))):
        option = draw(st.sampled_from(sorted(options)) | st.sampled_from(EDGE_TEXT))
        if option in ("--help", "-h") and draw(st.integers(0, 4)):
            continue  # help is fine, but rarely worth a case
        argv.append(option)
        values = options.get(option)
        if values is not None and draw(st.integers(0, 9)):
            argv.append(draw(values))
    files = {"sweep.yaml": _bytes(draw(sweep_text())), "fifo.yaml": {"kind": "fifo"}}
    return {"entry": entry, "argv": argv, "files": files}


def process_safe(case: dict) -> bool:
    """Whether a case's arguments can be a real process's argv (no NUL, text the file system
    encoding can carry)."""
    import os

    try:
        for arg in case["argv"]:
            if "\x00" in arg:
                return False
            os.fsencode(arg)
    except UnicodeEncodeError:
        return False
    return True

"""Every run parameter, defined once: name, type, default, allowed values, help.

The command line (`python -m agent.train --help`), validation of sweep and run configs, and the
README's parameter table are all derived from PARAMS. Allowed names for model, optimizer,
dataset, schedule and sink come from their registries, so adding an entry there is enough.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.yaml_file import load_text, read_yaml
from util.errors import UserError, brief, finite_number

# Bounds of the numeric parameters: what torch and the hardware can honour (int64 seeds, widths
# whose weight matrices stay indexable and allocatable), generous beyond any study of these
# image sets. A model too large for the device's memory is refused by the trial before it
# trains (agent/trial/loop.py); these bounds keep every number finite and every size countable.
MAX_WIDTH = 65536  # units of a dense layer (hidden, widths)
MAX_CHANNELS = 16384  # output channels of a conv block
MAX_ITEMS = 64  # blocks of a model (channels, widths)
MAX_EPOCHS = 10000
MAX_BATCH = 65536
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes an int64
MAX_LR = 100.0
MAX_THREADS = 1024
MAX_NAME = 128  # W&B's limit on group and display names
MAX_ID = 64
MAX_PATH_BYTES = 4095  # Linux PATH_MAX less the terminating NUL
MAX_COMPONENT_BYTES = 255  # Linux NAME_MAX
# str parameters by what their text becomes: (what is allowed, in words; the check)
ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID - 1}}}")
TEXT_KINDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    # a run id is W&B's run id and a directory name: letters, digits, . _ -, not . or ..
    "id": (f"an id of 1 to {MAX_ID} letters, digits, '.', '_' or '-', starting with a letter "
           "or digit", lambda text: ID_PATTERN.fullmatch(text) is not None),
    "name": (f"printable text of at most {MAX_NAME} characters",
             lambda text: len(text) <= MAX_NAME and text.isprintable()),
    "path": (f"a path of printable UTF-8 text, each part at most {MAX_COMPONENT_BYTES} bytes",
             lambda text: _is_path(text)),
}


def _is_path(text: str) -> bool:
    if not text.isprintable():  # NUL, newlines, and the lone surrogates of non-UTF-8 bytes
        return False
    encoded = text.encode("utf-8")
    return len(encoded) <= MAX_PATH_BYTES and all(
        len(part) <= MAX_COMPONENT_BYTES for part in encoded.split(b"/"))


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # int, float, str, bool or list
    default: Any
    help: str
    group: str
    choices: Callable[[], tuple] | tuple | None = None  # allowed values (of each item for lists)
    item_type: type | None = None  # element type of list parameters
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    hyper: bool = True  # a hyper-parameter (TensorBoard's HPARAMS) rather than a runtime option
    min_items: int = 1  # lists: the fewest items allowed
    max_items: int = MAX_ITEMS  # lists: the most items allowed
    text: str = "name"  # str parameters: what the text becomes, a key of TEXT_KINDS
    # (parameter, its values) under which this one changes anything: hidden only with
    # model=dense; None: always (see used_by)
    used_when: tuple[str, tuple] | None = None

    def used_by(self, values: dict) -> bool:
        """Whether this parameter changes anything in a run of `values` ({name: value}, a
        run's full parameters): `hidden` only where model=dense."""
        if self.used_when is None:
            return True
        other, wanted = self.used_when
        return values.get(other) in wanted

    def where_used(self) -> str:
        """`model=dense`: the runs it changes anything in (used_when), in words."""
        other, wanted = self.used_when
        return " or ".join(f"{other}={w}" for w in wanted)

    def allowed_choices(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices

    def allowed(self) -> str:
        """What is allowed, in words, for errors and the help table."""
        choices = self.allowed_choices()
        if choices is not None:
            text = "one of " + ", ".join(str(c) for c in choices)
            return f"a list of: {text[7:]}" if self.type is list else text
        if self.type is bool:
            return "True or False"
        if self.type is str:
            return TEXT_KINDS[self.text][0]
        kind = "an integer" if int in (self.type, self.item_type) else "a number"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            left = "(" if self.exclusive_minimum else "["
            right = ")" if self.exclusive_maximum else "]"
            bounds = f"in {left}{_fmt(low)}, {_fmt(high)}{right}"
        elif low is not None:
            bounds = f"> {_fmt(low)}" if self.exclusive_minimum else f">= {_fmt(low)}"
        else:
            bounds = ""
        if self.type is list:
            return f"a list of {self.min_items} to {self.max_items} integers, each {bounds}"
        return f"{kind} {bounds}".strip()


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _models():
    from nn import MODEL_NAMES  # not nn.models: checking a name need not import torch
    return MODEL_NAMES


def _optimizers():
    from nn import OPTIMIZER_NAMES
    return OPTIMIZER_NAMES


def _base_optimizers():
    from nn import OPTIMIZER_NAMES
    return tuple(name for name in OPTIMIZER_NAMES if name != "sam")


def _schedules():
    from nn.schedules import SCHEDULES
    return tuple(SCHEDULES)


def _datasets():
    from util.datasets import DATASETS
    return tuple(DATASETS)


def _sinks():
    from agent.trial.sinks import SINKS
    return tuple(SINKS)


PARAMS: tuple[Param, ...] = (
    # --- data -------------------------------------------------------------------------------
    Param("dataset", str, "cifar10", "image set to train on; digits ships with scikit-learn "
          "and needs no network", "data", choices=_datasets),
    Param("val_split", float, 0.1, "fraction of the training set held out for validation "
          "(the same images for every run, whatever the seed)", "data",
          minimum=0, maximum=1, exclusive_maximum=True),
    Param("train_subset", int, 0, "train on the first N training images only (0: all), "
          "for quick trials", "data", minimum=0, maximum=2**31 - 1),
    Param("data_dir", str, "data", "where datasets are downloaded and the decoded uint8 cache "
          "(data_dir/cache) is kept", "data", hyper=False, text="path"),
    Param("dataset_dir", str, "", "a folder (read-only is fine) holding the dataset's original "
          "files: IDX .gz or unpacked (mnist, fashion_mnist), cifar-10/100-python.tar.gz or its "
          "extracted folder; looked in after data_dir, before Debian's "
          "/usr/share/datasets/fashion-mnist and a download", "data", hyper=False,
          text="path"),
    # --- model ------------------------------------------------------------------------------
    Param("model", str, "cnn", "network architecture", "model", choices=_models),
    Param("hidden", int, 512, "dense: width of both hidden layers", "model", minimum=1,
          maximum=MAX_WIDTH, used_when=("model", ("dense",))),
    Param("widths", list, [512, 256, 256], "skip_mlp: widths of the residual blocks; a block "
          "whose width differs from its input's gets a linear projection on the skip path",
          "model", item_type=int, minimum=1, maximum=MAX_WIDTH, used_when=("model", ("skip_mlp",))),
    Param("channels", list, [64, 128, 256], "cnn: output channels of each conv block "
          "(conv, batch norm, ReLU, max-pool, dropout)", "model", item_type=int, minimum=1,
          maximum=MAX_CHANNELS, used_when=("model", ("cnn",))),
    Param("kernel_size", int, 3, "cnn: convolution kernel size (odd; beyond 31 it outgrows "
          "every image here)", "model", minimum=1, maximum=31, used_when=("model", ("cnn",))),
    Param("batch_norm", bool, True, "cnn: batch normalisation after each convolution", "model",
          used_when=("model", ("cnn",))),
    Param("width", int, 64, "resnet: channels of the first of its 4 stages (doubled at each "
          "later one: width, 2, 4, 8 x width; 64 is ResNet-18)", "model", minimum=1,
          maximum=MAX_CHANNELS // 8, used_when=("model", ("resnet",))),
    Param("dropout", float, 0.0, "dropout probability (every model)", "model",
          minimum=0, maximum=1, exclusive_maximum=True),
    # --- optimisation -----------------------------------------------------------------------
    Param("optimizer", str, "sgd", "optimizer; sam wraps sam_base", "optim",
          choices=_optimizers),
    Param("lr", float, 0.05, "peak learning rate", "optim", minimum=0, exclusive_minimum=True,
          maximum=MAX_LR),
    Param("momentum", float, 0.9, "momentum (sgd, rmsprop) or beta1 (adam, adamw)", "optim",
          minimum=0, maximum=1, exclusive_maximum=True),
    Param("nesterov", bool, False, "Nesterov momentum (sgd; needs momentum > 0)", "optim"),
    Param("weight_decay", float, 5e-4, "weight decay (decoupled for adamw)", "optim",
          minimum=0, maximum=10),
    Param("sam_base", str, "sgd", "sam: the optimizer that takes the descent step", "optim",
          choices=_base_optimizers, used_when=("optimizer", ("sam",))),
    Param("rho", float, 0.05, "sam: radius of the weight perturbation", "optim",
          minimum=0, exclusive_minimum=True, maximum=10, used_when=("optimizer", ("sam",))),
    Param("adaptive", bool, False, "sam: scale-invariant ASAM perturbation (Kwon et al. use "
          "a larger rho, e.g. 0.5-2)", "optim", used_when=("optimizer", ("sam",))),
    Param("batch_size", int, 128, "images per training step (a training set smaller than "
          "one batch is one batch of all of it)", "optim", minimum=1, maximum=MAX_BATCH),
    Param("epochs", int, 10, "passes over the training set", "optim", minimum=1,
          maximum=MAX_EPOCHS),
    Param("schedule", str, "cosine", "learning-rate schedule over the steps after warm-up "
          "(onecycle: torch's OneCycleLR, linear)", "optim", choices=_schedules),
    Param("warmup_epochs", float, 0.0, "linear warm-up from 0 to the schedule's first rate "
          "(lr; onecycle: lr / 25)",
          "optim", minimum=0, maximum=MAX_EPOCHS),
    Param("label_smoothing", float, 0.0, "label smoothing of the cross-entropy loss", "optim",
          minimum=0, maximum=1, exclusive_maximum=True),
    Param("augment", bool, False, "random crop with crop_padding pixels of zero padding and "
          "(if flip) horizontal flip, on whole batches on the device (meant for CIFAR and "
          "clothes; flips hurt digits)", "optim"),
    Param("crop_padding", int, 4, "augment: zero padding of the random crop, in pixels "
          "(4 is the CIFAR recipe; 0: no crop)", "optim", minimum=0,
          maximum=32, used_when=("augment", (True,))),
    Param("flip", bool, True, "augment: random horizontal flips (mirror-symmetric classes: "
          "clothes, CIFAR; not digits)", "optim", used_when=("augment", (True,))),
    Param("random_erasing", float, 0.0, "probability of erasing one random rectangle (2-40% "
          "of the image) of each training image, Zhong et al. 2017; with or without augment",
          "optim", minimum=0, maximum=1),
    Param("seed", int, 0, "seed of weights, batch order and augmentation", "optim", minimum=0,
          maximum=MAX_SEED),
    # --- execution --------------------------------------------------------------------------
    Param("device", str, "auto", "auto: CUDA, else MPS, else CPU", "run",
          choices=("auto", "cuda", "mps", "cpu"), hyper=False),
    Param("precision", str, "auto", "autocast precision; auto is bf16 on CUDA, fp32 elsewhere",
          "run", choices=("auto", "fp32", "bf16", "fp16")),
    Param("channels_last", bool, True, "channels-last memory format for conv models (faster "
          "convolutions on CPUs and tensor cores; the same results up to float rounding)",
          "run", hyper=False),
    Param("compile", bool, False, "torch.compile the model", "run", hyper=False),
    Param("num_threads", int, 0, "CPU threads for torch (0: torch's default)", "run",
          minimum=0, maximum=MAX_THREADS, hyper=False),
    Param("sinks", list, ["wandb", "tensorboard", "console"], "where metrics go; W&B honours "
          "WANDB_MODE, WANDB_PROJECT and WANDB_ENTITY", "run", item_type=str, choices=_sinks,
          hyper=False, min_items=0),
    Param("group", str, "", "run group in W&B and TensorBoard (default: <name>-<id> of a "
          "local sweep, a W&B sweep's id, else 'default')", "run", hyper=False),
    Param("run_name", str, "", "display name (default: the run id)", "run", hyper=False),
    Param("run_id", str, "", "run id; a run started again with the same id resumes from its "
          "checkpoint, with the values it was trained with (more epochs allowed; other "
          "values are refused) (default: a new id)", "run", hyper=False, text="id"),
    Param("log_dir", str, "data/logs", "TensorBoard logs go to log_dir/<group>/<run>", "run",
          hyper=False, text="path"),
    Param("run_dir", str, "data/runs", "checkpoints and tracebacks go to run_dir/<run id>",
          "run", hyper=False, text="path"),
    Param("log_interval", int, 20,
          "steps between logged training losses and gradient norms (and the last step)", "run",
          minimum=1, maximum=10**6, hyper=False),
    Param("histograms", bool, True, "per-layer weight histograms each epoch", "run",
          hyper=False),
    Param("checkpoint", bool, True, "checkpoint into the run directory each epoch", "run",
          hyper=False),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


class RunConfig(dict):
    """A validated run configuration: every parameter present, read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def defaults() -> dict[str, Any]:
    return {p.name: (list(p.default) if p.type is list else p.default) for p in PARAMS}


def _refusal(param: Param, shown: Any) -> UserError:
    return UserError(f"{param.name}={brief(shown)} is not allowed: expected {param.allowed()}")


def _coerce_scalar(param: Param, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _refusal(param, value)
    if kind in (int, float) and isinstance(value, bool):
        raise _refusal(param, value)
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())  # exact, where float() would round 2**63 - 1
            except ValueError:
                pass
        number = finite_number(value)  # sweep distributions can hand back 64.0 for an integer
        if number is None or not number.is_integer():
            raise _refusal(param, value)
        return int(number)
    if kind is float:
        number = finite_number(value)
        if number is None:
            raise _refusal(param, value)
        return number
    if isinstance(value, (dict, list)):
        raise _refusal(param, value)
    return str(value)


def _check_range(param: Param, value: Any, shown: Any) -> None:
    choices = param.allowed_choices()
    if choices is not None:
        if value not in choices:
            raise _refusal(param, shown)
        return
    if isinstance(value, str):
        if value and not TEXT_KINDS[param.text][1](value):  # "" means the default
            raise _refusal(param, shown)
        return
    if param.minimum is not None:
        if value < param.minimum or (param.exclusive_minimum and value == param.minimum):
            raise _refusal(param, shown)
    if param.maximum is not None:
        if value > param.maximum or (param.exclusive_maximum and value == param.maximum):
            raise _refusal(param, shown)


def coerce(param: Param, value: Any) -> Any:
    """Turn a value from the command line, a YAML file or wandb.config into the param's type."""
    if param.type is not list:
        typed = _coerce_scalar(param, value, param.type)
        _check_range(param, typed, value)
        return typed
    items = value
    if isinstance(value, str):
        text = value.strip()
        items = load_text(text if text.startswith("[") else f"[{text}]",
                          f"{param.name}={brief(value)}")
    if isinstance(items, tuple):
        items = list(items)
    elif not isinstance(items, (list, dict)) and items is not None:
        items = [items]  # one item, as `--channels=32` (${args} of a scalar value) reads
    if not isinstance(items, list) or not param.min_items <= len(items) <= param.max_items:
        raise UserError(f"{param.name}={brief(value)} is not allowed: expected "
                        f"{param.allowed()}")
    typed = [_coerce_scalar(param, item, param.item_type) for item in items]
    for item in typed:
        _check_range(param, item, value)
    if param.allowed_choices() is not None and len(set(typed)) < len(typed):
        raise UserError(f"{param.name}={brief(value)} is not allowed: each of "
                        f"{param.allowed()} at most once")
    return typed


def validate(values: dict[str, Any]) -> RunConfig:
    """Defaults overlaid with `values`, each coerced and checked; raises UserError.

    A value of None keeps the parameter's default."""
    config = defaults()
    for key, value in values.items():
        param = BY_NAME.get(key)
        if param is None:
            raise unknown_parameter(key)
        if value is None:  # a null (`run_name: null`, `--run_name=None`) means the default
            continue
        config[key] = coerce(param, value)
    _check_combinations(config)
    return RunConfig(config)


def _nesterov_needs_sgd(config: dict[str, Any]) -> None:
    # torch.optim.SGD alone takes nesterov, and only with a momentum (its ValueError)
    optimizer, base = config["optimizer"], config["sam_base"]
    uses_sgd = optimizer == "sgd" or (optimizer == "sam" and base == "sgd")
    if not config["nesterov"] or (uses_sgd and config["momentum"] > 0):
        return
    # the values that refuse it: the optimizer (under sam, its base), else the momentum
    values = [f"optimizer={optimizer!r}"] + ([f"sam_base={base!r}"] if optimizer == "sam" else [])
    if uses_sgd:
        values.append(f"momentum={config['momentum']}")
    raise UserError(f"nesterov=True is not allowed with {', '.join(values)}: it needs sgd, or "
                    "sam with sam_base=sgd, with momentum > 0")


def _odd_kernel(config: dict[str, Any]) -> None:
    if config["kernel_size"] % 2 == 0:
        raise UserError(f"kernel_size={config['kernel_size']} is not allowed: expected an odd "
                        "integer >= 1")


# Checks of values that must go together: (the parameters a rule reads, the rule). A sweep
# check (agent/sweep/config.py) draws combinations of exactly these parameters, so a rule
# added here is checked for every sweep without more code.
RULES: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], None]], ...] = (
    (("nesterov", "optimizer", "sam_base", "momentum"), _nesterov_needs_sgd),
    (("kernel_size",), _odd_kernel),
)


def _check_combinations(config: dict[str, Any]) -> None:
    for _, rule in RULES:
        rule(config)


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Parse what every command macro of `wandb agent` produces into raw {name: value}.

    The forms (wandb/sdk/launch/sweeps/utils.py, create_sweep_command_args): `--key=value`
    (${args}), `--key value` (${args_no_equals}), `key=value` (${args_no_hyphens}), `+key=value`
    and `++key=value` (${args_append_hydra}, ${args_override_hydra}), a bare `--flag` for a true
    boolean, false ones left out (${args_no_boolean_flags}), one JSON object (${args_json}) and
    the path of a JSON file holding one (${args_json_file}). The text None (what str(None) gives
    for a null sweep value) is a null, which `validate` reads as the default. Later arguments
    win; `--config FILE`, a flat YAML mapping, is overridden by everything else. Unknown keys
    raise UserError.
    """
    raw: dict[str, Any] = {}
    from_file: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = str(argv[index])
        index += 1
        if token.startswith("{"):
            raw.update(_mapping_argument(json_text=token))
            continue
        if token.startswith("--") and token != "--":
            key, sep, value = token[2:].partition("=")
            if not sep:
                key = _param_name(key)
                if key not in BY_NAME and key != "config":  # `--amsgrad` last: no value to ask
                    raise unknown_parameter(key)
                takes_word = index < len(argv) and str(argv[index]).strip().lower() in (
                    TRUE_WORDS | FALSE_WORDS | {"none"})
                if key in BY_NAME and BY_NAME[key].type is bool and not takes_word:
                    value = True  # a bare --flag: ${args_no_boolean_flags} for a true boolean
                elif index < len(argv):
                    value = str(argv[index])
                    index += 1
                else:
                    raise UserError(f"--{brief(key, quote=False)} needs a value: "
                                    f"--{brief(key, quote=False)}=VALUE")
        elif "=" in token and not token.startswith("-"):
            key, _, value = token.lstrip("+").partition("=")  # key=value, +key=value, ++key=value
        elif not token.startswith(("-", "+")) and os.path.isfile(token):
            raw.update(_mapping_argument(path=token))  # ${args_json_file}
            continue
        else:
            raise UserError(f"unexpected argument {brief(token)}: expected --key=value, key=value, "
                            "a JSON object or the path of a JSON file")
        key = _param_name(key)
        if key == "config":
            from_file = read_config_file(value)
        elif key not in BY_NAME:
            raise unknown_parameter(key)
        else:
            raw[key] = None if value == NULL_TEXT else value
    return {**from_file, **raw}


NULL_TEXT = "None"  # str(None): how wandb's argument macros write a null value


def _param_name(key: str) -> str:
    return key.replace("-", "_") if key.replace("-", "_") in BY_NAME else key


def _mapping_argument(json_text: str | None = None, path: str | None = None) -> dict[str, Any]:
    """A JSON object given as one argument or in a file, checked to name parameters only."""
    label = f"argument {brief(json_text)}" if path is None else f"JSON file {brief(path)}"
    try:
        if path is not None:
            with open(path, encoding="utf-8") as handle:
                json_text = handle.read()
        loaded = json.loads(json_text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UserError(f"{label}: not a JSON object ({' '.join(str(error).split())})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{label}: expected a JSON object of parameter: value")
    for key in loaded:
        if key not in BY_NAME:
            raise unknown_parameter(key, label)
    return loaded


def read_config_file(path: str) -> dict[str, Any]:
    loaded = read_yaml(path, f"config={brief(path)}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"config={brief(path)}: expected a mapping of parameter: value")
    for key in loaded:
        if key not in BY_NAME:
            raise unknown_parameter(key, f"config={brief(path)}")
    return loaded


SWEEP_KEYS = ("method", "parameters", "metric", "early_terminate", "program", "command")


# The names public sweep files and scripts most often give our parameters (W&B's own
# examples sweep learning_rate, fc_layer_size, dropout_rate): a sweep copied from one is
# refused on its first such name, and no spelling is close enough for difflib to suggest ours
ALIASES = {"learning_rate": "lr", "learningrate": "lr", "wd": "weight_decay",
           "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
           "training_epochs": "epochs", "bs": "batch_size", "train_batch_size": "batch_size",
           "dropout_rate": "dropout", "drop_rate": "dropout", "hidden_size": "hidden",
           "fc_layer_size": "hidden", "optim": "optimizer", "beta1": "momentum"}
# torch.optim's arguments that a run leaves at torch's defaults (nn/optimizers.py,
# TORCH_EQUIVALENTS): a sweep written for a torch script names them, and was told only the
# list of parameters, or for eps 'did you mean epochs?'. Written here, not read from
# nn.optimizers: parameters are parsed without importing torch
TORCH_DEFAULTS_KEPT = {
    "eps": "fixed at 1e-8 here, torch's default for adam, adamw and rmsprop",
    "beta2": "fixed at 0.999 here, torch's default for adam and adamw; momentum is beta1",
    "betas": "momentum is beta1; beta2 is fixed at 0.999 here, torch's default for adam and "
             "adamw",
    "alpha": "fixed at 0.99 here, torch's default for rmsprop",
    "amsgrad": "off here, torch's default for adam and adamw",
    "centered": "off here, torch's default for rmsprop",
    "dampening": "fixed at 0 here, torch's default for sgd",
}


def close_parameter(key: str) -> str:
    """` (did you mean model?)` for a key close to a parameter's name (`modle`) or a name
    others give it (ALIASES: `learning_rate`, lr), what a torch.optim argument is here
    (TORCH_DEFAULTS_KEPT: ` (torch.optim's eps: fixed at 1e-8 here, ...)`), else ''."""
    import difflib

    if key.lower() in TORCH_DEFAULTS_KEPT:
        return f" (torch.optim's {key.lower()}: {TORCH_DEFAULTS_KEPT[key.lower()]})"
    close = [ALIASES[key.lower()]] if key.lower() in ALIASES else \
        difflib.get_close_matches(key, list(BY_NAME), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_parameter(key: Any, where: str = "") -> UserError:
    """The one line for a key that names no parameter, with the parameter it is close to
    where there is one (`modle`: did you mean model?), as a sweep file's check says it; a
    sweep file's own key says that such a file is run by ./run_sweep.sh."""
    hint = ""
    if isinstance(key, str) and key in SWEEP_KEYS:
        hint = " (a key of a sweep file, which ./run_sweep.sh runs)"
    elif isinstance(key, str):
        hint = close_parameter(key)
    return UserError(f"{where + ': ' if where else ''}unknown parameter {brief(key)}{hint}: "
                     "allowed are " + ", ".join(p.name for p in PARAMS))


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of a run, as scalars TensorBoard's HPARAMS tab accepts."""
    out = {}
    for param in PARAMS:
        if param.hyper:
            value = config[param.name]
            out[param.name] = str(value) if isinstance(value, list) else value
    return out


def help_table(markdown: bool = False) -> str:
    """The parameter reference: the CLI's --help and the README's table."""
    rows = [(p.name, p.type.__name__ if p.type is not list else f"list[{p.item_type.__name__}]",
             _show_default(p.default), p.allowed(), p.help) for p in PARAMS]
    if markdown:
        lines = ["| parameter | type | default | allowed | what it does |",
                 "| --- | --- | --- | --- | --- |"]
        lines += ["| `" + r[0] + "` | " + " | ".join(r[1:]) + " |" for r in rows]
        return "\n".join(lines)
    width = max(len(r[0]) for r in rows)
    lines = []
    for name, kind, default, allowed, text in rows:
        lines.append(f"  --{name:<{width}}  {kind}, default {default}; {allowed}")
        lines.append(f"    {'':<{width}}{text}")
    return "\n".join(lines)


def _show_default(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


if __name__ == "__main__":
    print(help_table(markdown=True))  # the README's parameter table

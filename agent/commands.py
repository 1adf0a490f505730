"""The project's own commands as the hints it prints name them (`./run_sweep.sh <id>`,
`./util/with_venv.sh python -m agent.report <id>`, `./run_tensorboard.sh ...`): pasted in the
folder the user works in, they must reach the scripts. No torch."""

from __future__ import annotations

import os
import shlex
import textwrap

ROOT_VARIABLE = "SWEEP_SCRIPTS_ROOT"  # the project's folder, exported by util/with_venv.sh

# Between words `wrapped` keeps on one line (written as a plain space): a command to copy
# from one line, "packs of 8" rather than "packs of" over a lone "8"
NBSP = "\xa0"


def whole(text: str) -> str:
    """`text` (a command to copy) kept on one line by `wrapped`."""
    return text.replace(" ", NBSP)


def wrapped(text: str, width: int = 80, break_long_words: bool = True) -> str:
    """`text` wrapped between words within `width` columns, the lines after the first
    indented by two, never at an NBSP (`whole`), which is written as a space; a word longer
    than a line is cut only where `break_long_words`."""
    return textwrap.fill(text, width, subsequent_indent="  ", break_on_hyphens=False,
                         break_long_words=break_long_words).replace(NBSP, " ")


def script(name: str) -> str:
    """`name` (run_sweep.sh, run_tensorboard.sh, util/with_venv.sh) as a command for the
    current folder: `./name` where that is the project's root (or where our commands run
    without util/with_venv.sh, which says where the root is), else the project's folder
    relative to here when it is at most two folders up (`../hp/run_sweep.sh`), else absolute;
    shell-quoted.
    The sweep's files (data/) are relative to the current folder, so a hint is run from
    here whatever the path to the script."""
    root = os.environ.get(ROOT_VARIABLE)
    here = os.getcwd()
    if not root or os.path.realpath(root) == os.path.realpath(here):
        return f"./{name}"
    relative = os.path.relpath(root, here)
    near = relative.split(os.sep).count(os.pardir) <= 2  # beyond, an absolute path reads better
    return shlex.quote(os.path.join(relative if near else root, name))


def module_command(module: str) -> str:
    """`python -m module` as a hint names it: through util/with_venv.sh (script), so that
    it runs in the project's venv from wherever the hint is pasted."""
    return f"{script('util/with_venv.sh')} python -m {module}"

"""Job scripts from the bash templates in agent/cluster/templates/ (Jinja2).

Every value a template substitutes (`{{ value }}`) is shell-quoted on the way in, by the
environment's `finalize`: a template cannot forget to quote. Lists become quoted words. The
one exception is asked for by name: `{{ text | verbatim }}`, shell lines the user wrote
(--setup), which go into the script as they are.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2

from util.errors import UserError

TEMPLATES = Path(__file__).with_name("templates")
# What bash reads as a plain word: shlex's safe set, with Unicode letters (bash's
# metacharacters, quotes and globs are all ASCII), so that such paths stay unquoted.
_PLAIN_WORD = re.compile(r"[\w@%+=:,./-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Verbatim(str):
    """Text a template puts into the script as it is (`| verbatim`): the user's own lines."""


def shell_word(value) -> str:
    """`value` as bash source that reads back as exactly `value`; a list or tuple as its
    items, each quoted, joined by spaces. UserError for a control character (a newline
    would end a comment line early); TypeError for None or a bool (a template must test
    those with `{% if %}`, not print them)."""
    if isinstance(value, Verbatim):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(shell_word(item) for item in value)
    if value is None or isinstance(value, bool):
        raise TypeError(f"job script template printed {value!r}; test it with {{% if %}}")
    text = str(value)
    if _CONTROL.search(text):
        raise UserError(f"{text!r}: a job script cannot hold a newline or another control "
                        "character")
    return text if _PLAIN_WORD.fullmatch(text) else shlex.quote(text)


def needs_no_quoting(value) -> bool:
    """True when `value` reads the same quoted or not: what a #PBS/#SBATCH directive can hold
    (qsub and sbatch read directives themselves, not through a shell)."""
    return _PLAIN_WORD.fullmatch(str(value)) is not None


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
    finalize=shell_word, autoescape=False, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
    # bash's `${#name}` would open a Jinja comment with the default `{#`
    comment_start_string="{##", comment_end_string="##}")
_ENVIRONMENT.filters["verbatim"] = Verbatim


def render(template: str, **values) -> str:
    """The text of templates/`template` with `values` filled in, each one shell-quoted."""
    return _ENVIRONMENT.get_template(template).render(**values)

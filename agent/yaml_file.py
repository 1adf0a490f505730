"""Reading YAML a user wrote (a sweep config, a run config, a list on the command line): plain
data only, bounded in size, depth and alias expansion, every problem one UserError line (with
the line number where the YAML has one).

PyYAML's safe loader runs no code, but still hands back values a sweep cannot hold (dates,
bytes, sets, non-text keys, NUL characters, lone surrogates), nests until Python's recursion
limit breaks, and shares aliased nodes, so a 1 kB "billion laughs" file is harmless to load and
explodes in whatever walks it next. The loader here refuses each of those while reading.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from util.errors import UserError, one_line

MAX_BYTES = 1 << 20  # a sweep or run config is a few kB; 1 MiB leaves room for long lists
MAX_DEPTH = 32  # nested mappings and lists; a sweep config needs 4
MAX_NODES = 100_000  # values once aliases are expanded (a billion-laughs file has 10**9)
MAX_INT_DIGITS = 24  # beyond 64 bits (20 digits): no parameter takes it; int() stops at 4300


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _PlainDataLoader(yaml.SafeLoader):
    """yaml.SafeLoader that builds text, numbers, booleans, null, lists and text-keyed
    mappings only, and refuses deep nesting and alias bombs while composing."""

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep",
                               self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _count_nodes(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            # a key written twice in this mapping; one that overrides a `<<:` merge is fine
            own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
            self.flatten_mapping(node)
            seen: dict[str, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str):
                    hint = " (YAML 1.1 reads on/off/yes/no as booleans)" \
                        if isinstance(key, bool) else ""
                    raise _Refused(f"the key {_shown(key)} is not text{hint}: quote it",
                                   key_node.start_mark)
                if id(key_node) not in own:
                    continue
                if key in seen:  # PyYAML keeps the last one silently; YAML forbids it
                    raise _Refused(f"the key {_shown(key)} is given twice (first on line "
                                   f"{seen[key] + 1}): keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, TypeError, OverflowError):  # `!!float abc`, `!!bool x`
            raise _Refused(f"{_shown(node.value)} cannot be read as {node.tag}",
                           node.start_mark) from None

    def construct_yaml_str(self, node):
        value = super().construct_yaml_str(node)
        if "\x00" in value:
            raise _Refused("text with a NUL character", node.start_mark)
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise _Refused("text with a lone surrogate (\\ud800-\\udfff), which is no "
                           "character and cannot be stored as UTF-8", node.start_mark)
        return value

    def construct_yaml_int(self, node):
        digits = sum(char.isalnum() for char in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(f"an integer of {digits} digits: no parameter takes one beyond "
                           "64 bits", node.start_mark)
        return super().construct_yaml_int(node)


def _refuse_tag(what: str):
    def refuse(loader, node):
        shown = _shown(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
        raise _Refused(f"{shown} is read as {what}, which a sweep cannot store or pass on"
                       + (": quote it" if isinstance(node, yaml.ScalarNode) else ""),
                       node.start_mark)
    return refuse


for _tag, _what in (("timestamp", "a date"), ("binary", "bytes"), ("set", "a set"),
                    ("omap", "an ordered map of pairs"), ("pairs", "a list of pairs")):
    _PlainDataLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag(_what))
_PlainDataLoader.add_constructor("tag:yaml.org,2002:str", _PlainDataLoader.construct_yaml_str)
_PlainDataLoader.add_constructor("tag:yaml.org,2002:int", _PlainDataLoader.construct_yaml_int)
_PlainDataLoader.add_constructor("tag:yaml.org,2002:map", SafeConstructor.construct_yaml_map)


def _count_nodes(root: yaml.Node) -> None:
    """_Refused when `root`, with its aliases expanded, stands for more than MAX_NODES values
    or nests deeper than MAX_DEPTH, or holds itself (a recursive alias). Each aliased node is
    measured once, then reused."""
    measured: dict[int, tuple[int, int]] = {}  # id(node): (values, depth)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        if key in open_nodes:
            raise _Refused("an alias to a node that holds it (a recursive alias)",
                           node.start_mark)
        open_nodes.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) \
            else []
        sizes = [measure(child) for child in children]
        open_nodes.discard(key)
        total = 1 + sum(values for values, _ in sizes)
        depth = 1 + max((deep for _, deep in sizes), default=0)
        if total > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values once its aliases are expanded",
                           node.start_mark)
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once its aliases are "
                           "expanded", node.start_mark)
        measured[key] = (total, depth)
        return measured[key]

    measure(root)


def _unquoted_macro(text: str, mark) -> bool:
    """Whether YAML stopped at the `{` of an unquoted `${...}`, as in `command: [${env},
    ${interpreter}, ${program}, ${args}]`: in a flow list `{` opens a mapping."""
    if mark is None or mark.column < 1:
        return False
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    return line[mark.column - 1:mark.column + 1] == "${"


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# PyYAML's words for the mistakes of a hand-written file, and what they mean there (the
# line and column come before them)
_HINTS = (
    ("expected <block end>", "this line is indented differently from the lines above it: "
     "keys of one mapping start in one column, with spaces"),
    ("found character '\\t'", "a tab: YAML indents with spaces only"),
    ("mapping values are not allowed here", "a second ':' on one line: a key and its value "
     "on one line, or a key without its ':' on the line above"),
    ("could not find expected ':'", "a key without its ':', or a line that continues the one "
     "above by mistake"),
    ("expected ',' or '}'", "a {...} mapping not closed"),
    ("expected ',' or ']'", "a [...] list not closed"),
    ("found unexpected end of stream", "a quote opened and not closed"),
)


def load_text(text: str, label: str) -> Any:
    """The YAML value of `text` (None when empty), plain data only; `label` starts every
    error message."""
    loader = None
    try:
        loader = _PlainDataLoader(text)  # reads the text: unprintable characters fail here
        return loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        if isinstance(error, _Refused):
            head = f"{label}: {where}" if where else label
        else:
            head = f"{label}: not valid YAML" + (f" at {where}" if where else "")
        problem = getattr(error, "problem", None)
        if problem and _unquoted_macro(text, mark):
            problem += " (a W&B macro in a [...] list must be quoted: '${args}')"
        elif problem and not isinstance(error, _Refused):
            problem += next((f" ({hint})" for words, hint in _HINTS if words in problem), "")
        raise UserError(one_line(head + (f": {problem}" if problem else ""))) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text(path: str | os.PathLike, label: str, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. A FIFO, a device or a
    directory is refused before it is opened (opening a FIFO waits for a writer forever)."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{label}: is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{label}: not a regular file (a FIFO, socket or device)")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except OSError as error:
        raise UserError(f"{label}: cannot be read ({error.strerror})") from None
    except ValueError:  # a NUL or a lone surrogate in the path itself
        raise UserError(f"{label}: not a valid path") from None
    if len(data) > limit:
        raise UserError(f"{label}: larger than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{label}: not UTF-8 text") from None


def read_yaml(path: str | os.PathLike, label: str) -> Any:
    """The file's YAML value (None when empty); `label` starts every error message."""
    return load_text(read_text(path, label), label)

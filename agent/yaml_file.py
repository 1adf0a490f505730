"""Reading a YAML file a user wrote (a run config or a sweep config): safe_load only, and
every problem with the file itself as one UserError line, with the line number for syntax."""

from __future__ import annotations

from typing import Any

import yaml

from util.errors import UserError


def read_yaml(path: str, label: str) -> Any:
    """The file's YAML value (None when empty); `label` starts every error message."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{label}: is a directory, not a YAML file") from None
    except OSError as error:
        raise UserError(f"{label}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{label}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None)
        text = f"{label}: not valid YAML{at}" + (f": {problem}" if problem else "")
        raise UserError(" ".join(text.split())) from None

"""The one exception type for mistakes a user can fix, and the command-line parser every
command uses.

UserError is raised wherever bad input is found and caught once at each command-line edge,
which prints its single line and exits with code 2. `CommandParser` turns argparse's own
complaints (unknown option, missing value, a number out of range) into the same UserError, so
every command answers bad arguments alike: one `error: ...` line, no usage text, exit code 2.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

USAGE_EXIT_CODE = 2
# What a shell reports for a command that a Ctrl-C stopped (128 + SIGINT): `a && b` goes no
# further, as it would had the command died of the signal
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT


class UserError(Exception):
    """Bad input: the message is one line naming the key, the value and what is allowed."""


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def without_api_key(text: str) -> str:
    """`text` with this environment's W&B API key (WANDB_API_KEY), if any, as ***: an error
    from wandb may quote it, and a key is never printed. Mask before cutting a text short,
    or a key across the cut shows in part."""
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


def brief(value: object, limit: int = 80, quote: bool = True) -> str:
    """`value` for an error message: its repr (or str), cut to `limit` characters, so a
    megabyte of input never becomes a megabyte of error line."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# What the file system can refuse that the user, not the code, must fix: no space, a quota, a
# read-only mount, a file-size limit, no permission, a failing device.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES,
                            errno.EPERM, errno.EIO})


def storage_problem(error: BaseException) -> UserError | None:
    """A UserError naming the file and the cause when `error` is an OSError the storage
    raised (a full disk, a read-only file system...), else None."""
    if not isinstance(error, OSError) or error.errno not in STORAGE_ERRNOS:
        return None
    cause = error.strerror or os.strerror(error.errno)
    where = error.filename
    if error.filename2 and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        # a copy that did not fit names its source first (shutil.copyfile, and so a move
        # across disks: wandb moves a table's file from /tmp into the run's folder)
        where = error.filename2
    return UserError(f"{where}: {cause}" if where else cause)


@contextmanager
def naming(path: object) -> Iterator[None]:
    """An OSError raised inside names `path` (a write's own error, ENOSPC say, names no file)."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


class _Output:
    """sys.stdout or sys.stderr, less two ways to lose a sweep to its output going away.
    The terminal it writes to is gone (an ssh session dropped; every write then fails with
    EIO, often before the SIGHUP that says so is handled): its output goes to /dev/null and
    the command goes on, so a trial that was printing is preempted by the SIGHUP, not failed
    by a print. The pipe it writes to was closed by its reader (`./run_sweep.sh x.yaml |
    head -3`: EPIPE) while this process stops on SIGTERM by a handler of its own (an agent,
    or a launcher passing it on): its output goes to /dev/null and it sends itself SIGTERM,
    so the runs in training are preempted and resumable rather than crashed, and the command
    ends with 141 (exit_on_user_error). A closed pipe elsewhere is the stream's own error
    (BrokenPipeError: 141 as well, at once)."""

    pipe_closed = False  # set once a closed pipe preempted this process

    def __init__(self, stream):
        self._stream = stream

    def _gone(self, error: OSError) -> None:
        """Where output can go no more: /dev/null, and for a closed pipe, SIGTERM to this
        process where it handles one; otherwise `error` is raised."""
        if error.errno == errno.EPIPE:
            if not callable(signal.getsignal(signal.SIGTERM)):
                raise error
            _Output.pipe_closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
            os.kill(os.getpid(), signal.SIGTERM)
        elif error.errno == errno.EIO:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        else:
            raise error

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            self._gone(error)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            self._gone(error)
            self._stream.flush()  # what it held goes to /dev/null now

    def __getattr__(self, name):
        return getattr(self._stream, name)


def guard_output() -> None:
    """Wrap sys.stdout and sys.stderr (see _Output)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Output):
            setattr(sys, name, _Output(stream))


def exit_on_user_error(main):
    """Run `main()`; turn a UserError into one line on stderr and exit code 2. A reader of
    stdout that went away (`... --dry-run | head`) ends the command quietly with 141 (128 +
    SIGPIPE, what a shell reports for a writer into a closed pipe), not a traceback, and so
    does a sweep whose runs that closed pipe preempted; a terminal that went away (EIO) is
    written to no more (guard_output)."""
    guard_output()
    try:
        code = main()
        return 128 + signal.SIGPIPE if _Output.pipe_closed else code
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    except BrokenPipeError:
        # Python flushes stdout once more at exit: into /dev/null, so that says nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(128 + signal.SIGPIPE) from None


def quiet_interrupt(kind, value, traceback, _default=sys.excepthook):
    """sys.excepthook of our commands (agent/__init__.py): a Ctrl-C before a command has set
    up its own handling (while its modules load, in its first second or two) ends it with
    one word, not a traceback of the imports; so does a command that trains, after its
    Ctrl-C (exit_command)."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return
    _default(kind, value, traceback)


def interrupted_code(code: int, signalled: list[int]) -> int:
    """A training command's exit code `code`, at least INTERRUPTED_EXIT_CODE when a Ctrl-C
    (SIGINT) is among the stop signals it had (`signalled`): its agent ends a preempted run
    with 0 whichever signal preempted it, and a Ctrl-C must still stop `cmd && next`."""
    return max(code, INTERRUPTED_EXIT_CODE) if signal.SIGINT in signalled else code


# What the first Ctrl-C says (stop_at_next_step): of one run (python -m agent.train), and of
# the runs of a sweep's agents (an agent, a launch, agent.repeat)
RUN_CTRL_C_NOTE = "Ctrl-C: the run stops at its next step; Ctrl-C again ends it at once"
SWEEP_CTRL_C_NOTE = "Ctrl-C: the runs stop at their next step; Ctrl-C again ends them at once"
# The process groups of programs this process runs in groups of their own (a sweep's runs of
# another program, out of the reach of a terminal's Ctrl-C): a Ctrl-C that ends this process
# at once ends them too (programs_ended_with_this_process)
_PROGRAM_GROUPS: set[int] = set()


def _end_with_programs(signum: int, frame) -> None:
    """SIGINT's action once a stop came while programs of _PROGRAM_GROUPS run: they are
    killed (SIGKILL: SIGTERM asked them to stop already), then this process, by SIGINT. A
    Python handler, which SIG_DFL is not, can do it here: the process waits on its program
    in a loop of short sleeps (program.run_program), which a handler is never held up by."""
    for group in list(_PROGRAM_GROUPS):
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:  # it ended meanwhile
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(INTERRUPTED_EXIT_CODE)  # not reached: SIGINT's own action ends the process


def _ctrl_c_again():
    """What a Ctrl-C does once a stop came: end this process at once (and its programs)."""
    return _end_with_programs if _PROGRAM_GROUPS else signal.SIG_DFL


def ctrl_c_ends_at_once() -> bool:
    """Whether a stop signal came (stop_at_next_step): the next Ctrl-C ends this process at
    once. What a command that stopped must leave so as it closes (its closing lines, exit)."""
    return signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, _end_with_programs)


def stop_at_next_step(signalled: list[int],
                      signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
                      note: str | None = RUN_CTRL_C_NOTE,
                      also: Callable[[int], None] | None = None) -> None:
    """`signals` (SIGTERM and Ctrl-C, SIGINT; an agent's, SIGHUP too) ask a command that
    trains to stop: each is added to `signalled`, which its trials poll to end preempted at
    their next step, and passed to `also` (a launcher passes it on to its agents). Once one
    came, a Ctrl-C ends the process at once: SIGINT's own action, killed by it (a shell
    reports 130), nothing more printed or written (the last whole epoch's checkpoint stands;
    a half-written one is a temporary file that loading passes over; a sweep's store holds
    whole transactions, and its runs left `running` are repaired by the next agent), and
    programs it runs in groups of their own with it (programs_ended_with_this_process). So a
    start-up that takes long (a data set loading or being cached, a model compiling, wandb's
    service starting) or a close that hangs is never waited out; a Python handler would not
    do it: Python runs one only between bytecodes, and a blocking C call holds it. The first
    Ctrl-C says `note` on stderr (written straight to it, a handler may run mid-print; None:
    nothing, a launcher's agent, whose launcher says it). Installed again after a stop
    (`signalled` not empty: one agent after another in one process), a Ctrl-C is the
    second. Main thread only."""

    def stop(signum: int, frame) -> None:
        signalled.append(signum)
        if not ctrl_c_ends_at_once():
            signal.signal(signal.SIGINT, _ctrl_c_again())
            if signum == signal.SIGINT and note:
                try:
                    os.write(2, f"{note}\n".encode())
                except OSError:  # no terminal any more: nothing to say
                    pass
        if also is not None:
            also(signum)

    for signum in signals:
        signal.signal(signum, stop)
    if signalled:
        signal.signal(signal.SIGINT, _ctrl_c_again())


@contextmanager
def programs_ended_with_this_process(group: int) -> Iterator[None]:
    """While inside: the process group `group` (a program this process runs in a group of
    its own, which a terminal's Ctrl-C does not reach) is killed with this process by a
    Ctrl-C that ends it at once (stop_at_next_step). Main thread only."""
    _PROGRAM_GROUPS.add(group)
    if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:  # stopped already
        signal.signal(signal.SIGINT, _end_with_programs)
    try:
        yield
    finally:
        _PROGRAM_GROUPS.discard(group)
        if not _PROGRAM_GROUPS and signal.getsignal(signal.SIGINT) is _end_with_programs:
            signal.signal(signal.SIGINT, signal.SIG_DFL)


def exit_command(main: Callable[[], int]) -> NoReturn:
    """`main()` run as a command's process (exit_on_user_error), which exits with its code.
    A command that trains returns INTERRUPTED_EXIT_CODE after a Ctrl-C, its closing lines
    printed: it then ends as it would on a Ctrl-C before its handlers were in, "interrupted"
    (quiet_interrupt), Python's exit handlers, then killed by SIGINT (Python re-raises an
    unhandled KeyboardInterrupt so), which a shell reports as 130 and which stops a script
    that ran it. A plain exit with 130 reads to a shell as a Ctrl-C the command handled: the
    script goes on. Any other code is a plain exit (0 after a scheduler's SIGTERM)."""
    code = exit_on_user_error(main)
    if code == INTERRUPTED_EXIT_CODE:
        sys.stdout.flush()  # its closing lines before the word, in a log of both streams
        # Ours again: wandb's service, once started in this process (a run's wandb sink),
        # wraps the hook in one that prints a traceback of every uncaught exception first
        sys.excepthook = quiet_interrupt
        raise KeyboardInterrupt
    raise SystemExit(code)


class CommandParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors are a UserError (one line, exit code 2 at the
    command's edge) instead of a usage dump; `--help` still prints the full help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--count` is never read from `--c`
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UserError(one_line(message))


def int_option(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number in [low, high] (as text: 3, 3.0 or 3e2)."""

    def convert(text: str) -> int:
        value = finite_number(text)
        if value is None or not value.is_integer() or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{low}, {high}], got {text!r}")
        return int(value)

    convert.__name__ = "integer"
    return convert


def seconds_option(low: float, high: float) -> Callable[[str], float]:
    """An argparse `type`: a finite number in (low, high] (seconds, say)."""

    def convert(text: str) -> float:
        value = finite_number(text)
        if value is None or not low < value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a number in ({low:g}, {high:g}], got {text!r}")
        return value

    convert.__name__ = "number"
    return convert


def finite_number(value: object) -> float | None:
    """`value` (a number or its text) as a finite float, or None: text that is no number, inf,
    nan, or an integer too large for a float (a 4,000-digit one is None, not an error)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None

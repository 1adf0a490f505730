"""What a batch job is, whatever the scheduler: the JobSpec, and the option values it is
built from (walltime, sizes), parsed with one-line errors. No scheduler-specific code here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from util.errors import UserError

# Agents get SIGTERM this long before the walltime (a tenth of it when shorter): enough for
# the trial to stop at once and for the job to copy its logs back before the scheduler's own
# SIGTERM and, seconds later, SIGKILL.
STOP_MARGIN_S = 300
# A PBS job merges the runs it ended into the sweep's store this often (and when it ends):
# a job killed outright (SIGKILL, a node lost) loses at most the runs of the last interval.
MERGE_EVERY_S = 30


@dataclass
class JobSpec:
    """Everything a job script needs; built from the command line by `Scheduler.job_spec`."""
    name: str
    sweep: str                   # the launcher's target inside the job
    local_sweep: Path | None     # the local sweep's directory (absolute), None for W&B
    launch_args: list[str]
    jobs: int
    walltime_s: int
    gpus: int
    cpus: int
    mem_mb: int
    scratch_mb: int | None
    queue: str | None
    account: str | None          # charged for the jobs (SLURM --account, PBS -A)
    container: Path | None
    python: str
    code_dir: Path
    submit_dir: Path
    job_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    command_line: list[str] = field(default_factory=list)  # the submitting command's words
    # --setup: the text of the user's file of shell lines each job runs first (module load
    # ...), and that file's path
    setup: str | None = None
    setup_path: Path | None = None
    # this submission's batch-job options (" --pbs 1 --walltime 24:00:00"): the job's hint to
    # go on with the sweep repeats them, so that a copied hint submits again the same way
    job_options: str = ""
    # the jobs this one is queued behind (PBS: earlier jobs on the same local sweep)
    after: list[str] = field(default_factory=list)

    @property
    def stop_after_s(self) -> int:
        """When `timeout` stops the agents: STOP_MARGIN_S (or a tenth) before the walltime."""
        return self.walltime_s - min(STOP_MARGIN_S, max(1, self.walltime_s // 10))


# The longest walltime taken: a year. SLURM keeps limits in minutes and wraps past 2**32 of
# them (sbatch --time=9999999999:00:00 ran with 2977802 days), and squeue shows limits over
# 365 days as INVALID (SLURM 22.05); no queue of either scheduler is meant for longer jobs.
MAX_WALLTIME_S = 365 * 86400
# One job is one node (select=1, --nodes=1); no node has more cores or GPUs than these.
# SLURM keeps --cpus-per-task in 16 bits: 65534 ran as 1 CPU, 100000 as 34464.
MAX_CPUS_PER_JOB = 4096
MAX_GPUS_PER_JOB = 64


def parse_walltime(text: str) -> int:
    """'H:MM:SS', the form PBS Pro and SLURM both read the same way (a bare number is
    seconds to PBS, minutes to SLURM), to seconds: above zero, at most MAX_WALLTIME_S."""
    match = re.fullmatch(r"([0-9]+):([0-5][0-9]):([0-5][0-9])", text.strip())
    seconds = (int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3])) if match else 0
    if not 0 < seconds <= MAX_WALLTIME_S:
        raise UserError(f"--walltime={text!r}: expected H:MM:SS above zero and at most "
                        f"{MAX_WALLTIME_S // 3600}:00:00 (a year), e.g. 4:00:00")
    return seconds


def parse_size_mb(option: str, text: str) -> int:
    """'16gb', '500mb', '16G' (PBS and SLURM spellings) to megabytes."""
    match = re.fullmatch(r"(\d+)\s*([kmgt])b?", text.strip().lower())
    if not match or int(match[1]) == 0:
        raise UserError(f"{option}={text!r}: expected a size with a unit, e.g. 16gb or 500mb")
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2}[match[2]]
    return max(1, int(int(match[1]) * factor))


def parse_scratch_mb(text: str) -> int | None:
    """--scratch: a size as `parse_size_mb` reads it, or none (or 0): no scratch asked for
    (PBS: no scratch_local, which only MetaCentrum knows; the job works in $TMPDIR)."""
    if text.strip().lower() in ("none", "0"):
        return None
    try:
        return parse_size_mb("--scratch", text)
    except UserError:
        raise UserError(f"--scratch={text!r}: expected a size with a unit, e.g. 20gb, or none "
                        "(no scratch asked for)") from None


def read_setup(text: str | None) -> tuple[str | None, Path | None]:
    """--setup FILE: the file's text (its trailing blank lines dropped) and its absolute path;
    (None, None) without the option. UserError for a file bash could not read as lines."""
    if text is None:
        return None, None
    path = Path(text).resolve()
    try:
        lines = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise UserError(f"--setup={text!r}: expected a file of shell lines each job runs first, "
                        f"e.g. `module load cuda` ({why})") from None
    if "\0" in lines or "\r" in lines:
        raise UserError(f"--setup={text!r}: " + ("a NUL byte: not a text file" if "\0" in lines
                        else "Windows line ends (CR), which bash reads as part of each "
                        "command: convert it with dos2unix"))
    number = literal_key_line(lines)
    if number is not None:  # job scripts are printed, copied, kept; the key is never shown
        raise UserError(f"--setup={text!r}: line {number} sets WANDB_API_KEY to a literal "
                        "value, and no job script holds the key: `wandb login` writes it to "
                        "~/.netrc, where the jobs' W&B reads it, or read it when the job runs: "
                        "export WANDB_API_KEY=\"$(cat ~/.wandb_key)\"")
    number = literal_login_line(lines)
    if number is not None:  # `wandb login <key>` stores the key in the script the same way
        raise UserError(f"--setup={text!r}: line {number} runs `wandb login` with a literal "
                        "key, and no job script holds the key: run `wandb login` once where "
                        "you submit (it writes ~/.netrc, where the jobs' W&B reads it), or "
                        "read it when the job runs: wandb login \"$(cat ~/.wandb_key)\"")
    number = key_shaped_line(lines)
    if number is not None:  # a key set another way (MY=...; echo ... > ~/.key) is kept as well
        raise UserError(f"--setup={text!r}: line {number} holds a literal shaped like a W&B "
                        "API key (40 hex digits, local-..., wandb_v1_...), and no job script "
                        "holds the key: `wandb login` writes it to ~/.netrc, where the jobs' "
                        "W&B reads it, or read it when the job runs: export "
                        "WANDB_API_KEY=\"$(cat ~/.wandb_key)\" (a commit id there: read it "
                        "when the job runs too, $(git rev-parse HEAD))")
    return lines.rstrip("\n"), path


# WANDB_API_KEY= or += anywhere in a --setup text: after export, declare -x, env, in a
# comment (which the job script keeps as well), in another name ending so (MY_WANDB_API_KEY),
# or ${WANDB_API_KEY:=value}, whose value ends at the brace
KEY_ASSIGNMENT = re.compile(r"(\$\{)?WANDB_API_KEY(\+|:?)=")
# what ends an unquoted shell word
WORD_END = " \t\n;&|<>)"


def literal_key_line(text: str) -> int | None:
    """The number (from 1) of the first line of `text` (shell lines) assigning WANDB_API_KEY a
    value with a literal part, which could be the key: `WANDB_API_KEY=0123...`, in single or
    double quotes, `"abc$X"`. None when every assignment reads its value when it runs, from
    expansions alone (`"$(cat ~/.wandb_key)"`, `$(< ~/.key)`, `${MY_KEY}`, backticks, a
    `${MY_KEY:?...}` message) or assigns nothing (`WANDB_API_KEY=`): those store no key."""
    for match in KEY_ASSIGNMENT.finditer(text):
        if _scan_word(text, match.end(), WORD_END + ("}" if match[1] else ""))[1]:
            return text.count("\n", 0, match.start()) + 1
    return None


# `wandb login` as a command: wandb, python -m wandb, <venv>/bin/wandb, with_venv.sh wandb
WANDB_LOGIN = re.compile(r"(?:^|(?<=[\s;&|(/`]))wandb[ \t]+login(?=[\s;&|)#]|$)", re.M)
LOGIN_VALUED = ("--host", "--base-url")  # wandb login's options that take a value (a URL)


def literal_login_line(text: str) -> int | None:
    """The number (from 1) of the first line of `text` (shell lines) that runs `wandb login`
    (`--relogin`, `python -m wandb login`, `./util/with_venv.sh wandb login`) with a key that
    has a literal part (`wandb login 0123...`, quoted or not), which the job script would
    then hold; in a comment (kept in the script too), only an argument that reads as a key
    (32 or more letters, digits, - or _), not prose. None when every such key is read when
    the job runs (`wandb login "$(cat ~/.wandb_key)"`, `$MY_KEY`) or there is none."""
    for match in WANDB_LOGIN.finditer(text):
        start = text.rfind("\n", 0, match.start()) + 1
        comment = re.search(r"(^|\s)#", text[start:match.start()]) is not None
        if _literal_login_key(text, match.end(), comment):
            return text.count("\n", 0, match.start()) + 1
    return None


def _literal_login_key(text: str, at: int, comment: bool) -> bool:
    """Whether the key argument of a `wandb login` whose arguments start at text[at] holds a
    literal part: its first word that is no option (nor --host's URL), up to the command's
    end (a newline, ;, &, |, ), a redirection or a comment)."""
    skip = False  # the word after --host is its URL
    while True:
        while at < len(text) and text[at] in " \t":
            at += 1
        if at >= len(text) or text[at] in ";&|\n)<>#" or re.match(r"\d+[<>]", text[at:at + 12]):
            return False
        end, literal = _scan_word(text, at, WORD_END)
        word = text[at:end]
        if skip or word == "--":
            skip = False
        elif word.startswith("-"):
            skip = word in LOGIN_VALUED
        else:
            return literal and (not comment or re.fullmatch(r"[\w-]{32,}", word) is not None)
        at = end


# What W&B's API keys look like. wandb's own check (wandb/sdk/lib/wbauth/validation.py,
# check_api_key) takes an optional `<prefix>-` and then 40 or more letters, digits or _;
# wandb.ai gave out 40 hex digits, W&B Server's keys start `local-`, and the keys issued since
# wandb 0.22.3 start `wandb_v1_` (about 86 characters: docs.wandb.ai, "Why does my API key
# fail with 'must be 40 characters long'?"). W&B's own prefixes are refused anywhere.
OWN_PREFIX_KEY = re.compile(r"(?<![\w-])(?:wandb_v1_|local-)(?=\w*\d)\w{40,}")
# 40 hex digits as a word of their own, bare or after an on-prem `<prefix>-`: a classic key or
# a git commit id, refused only where the line is about the key (KEY_CONTEXT); never right
# after @ (pip's and git's `...@<commit>`) nor after a `git` command word (git checkout <id>)
HEX_KEY = re.compile(r"(?<![\w@-])(?:[A-Za-z][\w-]*-)?[0-9a-f]{40}(?![\w-])")
KEY_CONTEXT = re.compile(r"wandb|netrc|api.?key|(?<![\w-])key(?![\w-])", re.I)
GIT_COMMAND = re.compile(r"(?:^|[\s;&|(`])git\s")
HERE_DOCUMENT = re.compile(r"(?<!<)<<(-?)(?!<)\s*(['\"]?)(\w+)\2")


def key_shaped_line(text: str) -> int | None:
    """The number (from 1) of the first line of `text` (shell lines) that holds a literal
    shaped like a W&B API key, however it would reach W&B (`MY=<key>; export
    WANDB_API_KEY=$MY`, `$(echo <key>)`, a here-string, `echo <key> > ~/.key`, a ~/.netrc
    written inline): `wandb_v1_...` or `local-...` anywhere (OWN_PREFIX_KEY); 40 hex digits
    (HEX_KEY) on a line that names W&B, its netrc or a key (KEY_CONTEXT), in a here-document
    opened on such a line, or assigned to a variable or written to a file that such a line
    reads. None otherwise: a commit id in `git checkout <id>` or `pip install ...@<id>`, or on
    a line about anything else, is no key."""
    lines = text.split("\n")
    about_key = _about_key(lines)
    for number, line in enumerate(lines, 1):
        if OWN_PREFIX_KEY.search(line):
            return number
        git = GIT_COMMAND.search(line)
        for match in HEX_KEY.finditer(line):
            if git and git.start() < match.start():
                continue
            if about_key[number - 1] or _read_for_key(line, match, lines, about_key):
                return number
    return None


def _about_key(lines: list[str]) -> list[bool]:
    """For each line: whether it names W&B, its netrc or a key (KEY_CONTEXT), or lies in a
    here-document (`cat > ~/.netrc <<EOF`) opened on such a line."""
    about: list[bool] = []
    delimiter, tabs = None, False
    for line in lines:
        if delimiter is not None:
            about.append(True)
            if (line.lstrip("\t") if tabs else line) == delimiter:
                delimiter = None
            continue
        about.append(KEY_CONTEXT.search(line) is not None)
        opened = HERE_DOCUMENT.search(line)
        if about[-1] and opened:
            delimiter, tabs = opened[3], opened[1] == "-"
    return about


def _read_for_key(line: str, match: re.Match, lines: list[str], about_key: list[bool]) -> bool:
    """Whether the literal `match` on `line` goes into a variable (`MY=<key>`) or a file
    (`echo <key> > ~/k`) that a line about the key reads (`$MY`, `${MY}`; the file's name)."""
    name = re.search(r"([A-Za-z_]\w*)=[\"']?$", line[:match.start()])
    target = re.search(r"\d?>>?\s*(['\"]?)([^\s;&|'\"<>]+)\1", line[match.end():])
    reads = ([rf"\$\{{?{name[1]}(?!\w)"] if name else []) + (
        [re.escape(target[2])] if target else [])
    return any(re.search(pattern, other) for pattern in reads
               for other, about in zip(lines, about_key) if about and other != line)


def setup_sets_key(text: str | None) -> bool:
    """True when a line of the --setup text that is no comment assigns WANDB_API_KEY (which
    read_setup takes only from expansions: the job reads the key when it runs)."""
    return any(KEY_ASSIGNMENT.search(line) and not line.lstrip().startswith("#")
               for line in (text or "").splitlines())


def _scan_word(text: str, at: int, stop: str) -> tuple[int, bool]:
    """Reads shell text from `at` to the first character in `stop` outside quotes and
    expansions: (that index, whether any literal character came before it). `stop` '"':
    the inside of double quotes, where quotes of the other kind are literal characters."""
    literal = False
    while at < len(text) and text[at] not in stop:
        char = text[at]
        if char in "$`":
            at, was_literal = _scan_expansion(text, at)
            literal = literal or was_literal
        elif char == '"' and stop != '"':
            at, was_literal = _scan_word(text, at + 1, '"')
            literal, at = literal or was_literal, at + 1
        elif char == "'" and stop != '"':
            end = text.find("'", at + 1)
            end = len(text) if end < 0 else end
            literal, at = literal or end > at + 1, end + 1  # '' is no literal
        else:  # a letter, a backslash escape, a quote within double quotes
            literal, at = True, at + (2 if char == "\\" else 1)
    return at, literal


def _scan_expansion(text: str, at: int) -> tuple[int, bool]:
    """The expansion at text[at] ($ or a backtick): (the index after it, whether it holds a
    literal that becomes part of the value: $'...' quoting, a `${X:-default}` default)."""
    if text[at] == "`":
        end = text.find("`", at + 1)
        return (len(text) if end < 0 else end + 1), False
    rest = text[at + 1:at + 2]
    if rest == "(":
        return _closing(text, at + 1, "(", ")"), False
    if rest == "'":  # $'...': ANSI-C quoting, a literal
        end = re.compile(r"(\\.|[^'])*'").match(text, at + 2)
        return (end.end() if end else len(text)), True
    if rest == '"':  # $"...": a translated double-quoted string
        end, literal = _scan_word(text, at + 2, '"')
        return end + 1, literal
    if rest == "{":
        name = re.compile(r"\$\{[#!]?([A-Za-z_]\w*|[0-9]+|[@*#?$!-])(:?[-=+])?").match(text, at)
        if name and name[2]:  # a default or alternative value: a word of its own
            end, literal = _scan_word(text, name.end(), "}")
            return end + 1, literal
        return _closing(text, at + 1, "{", "}"), False  # ${X}, ${X:?message}, ${X%pattern}
    name = re.compile(r"\$([A-Za-z_]\w*|[0-9@*#?$!-])").match(text, at)
    return (name.end(), False) if name else (at + 1, True)  # a lone $ is a literal $


def _closing(text: str, at: int, opening: str, closing: str) -> int:
    """The index after the `closing` bracket that matches the `opening` one at text[at],
    skipping quoted text; len(text) when none does."""
    depth = 0
    while at < len(text):
        char = text[at]
        if char in "'\"":
            end = text.find(char, at + 1)
            at = len(text) if end < 0 else end
        elif char == "\\":
            at += 1
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return len(text)


def setup_directives(setup: str | None, directive: str, indented: bool
                     ) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """The `directive` lines (#PBS, #SBATCH) of a --setup text as the scheduler reads them.
    Returns (obeyed, ignored): (line number from 1, words) of each directive before the
    text's first command (only comment lines of ours come before the text in a job script,
    so the scheduler obeys these), and (line number, line) of each one after it, which qsub
    and sbatch read as a comment: both stop reading directives at the first line that is
    neither blank nor a comment (`man sbatch`; OpenPBS's pbs_isexecutable). `indented`: a
    directive may follow spaces (qsub), else it starts its line (sbatch)."""
    obeyed: list[tuple[int, list[str]]] = []
    ignored: list[tuple[int, str]] = []
    prefix = re.compile((r"\s*" if indented else "") + re.escape(directive) + r"(\s|$)")
    command_seen = False
    for number, line in enumerate((setup or "").splitlines(), 1):
        if prefix.match(line):
            if command_seen:
                ignored.append((number, line.strip()))
                continue
            rest = line.split(directive, 1)[1]
            try:
                words = shlex.split(rest, comments=True)
            except ValueError:  # an unclosed quote: the scheduler's own reading is its own
                words = rest.split()
            obeyed.append((number, words))
        elif line.strip() and not line.lstrip().startswith("#"):
            command_seen = True
    return obeyed, ignored


def format_hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

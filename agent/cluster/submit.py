"""`./run_sweep.sh SWEEP --pbs N` or `--slurm N`: agents as batch jobs (PBS Pro, SLURM).

The command-line side: the options, the order of checks (everything before anything is
written), and writing the scripts under data/jobs/<time>/ for qsub or sbatch. The schedulers
themselves are classes in `agent.cluster.schedulers`, their bash in templates/.

Where the agents of a job may run depends on the sweep. A W&B sweep is shared through W&B's
server: N jobs on any nodes. A local sweep is one SQLite file, safe only for the agents of one
machine, so:
- PBS jobs run in $SCRATCHDIR on a copy of the sweep, whose ended runs they merge back
  (store_copy.py). Two such jobs at once would train the same configurations, each on its
  own copy, so `--pbs N` with N > 1 on a local sweep is refused with one line saying what
  works instead: a W&B sweep, or one job with more GPUs (`--gpus-per-job K` runs K agents on
  one node). A user asking for N jobs expects them to run side by side; running them one
  after another silently would not be that.
- SLURM jobs run in the submit directory (shared storage) on the sweep itself, which is right
  on one node (a lab server under SLURM, the test cluster). The first task of the array
  records its node; a task that lands on another node leaves at once, saying why. Not
  refused, as tasks on one node share the sweep; `--slurm N`, N > 1, is noted at submission.
The job's Python is either this virtualenv (it must sit on storage the nodes see) or the one
inside an Apptainer/Singularity image built from docker/Dockerfile (`--container x.sif`); the
code is this repository's in both cases, so the two modes run the same code.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from agent.cluster.jobs import JobSpec, setup_sets_key
from agent.cluster.schedulers import SCHEDULERS, Scheduler
from agent.commands import module_command, script
from agent.sweep.store import SWEEPS_DIR, SweepStore
from agent.sweep.target import (
    SweepTarget,
    check_wandb_sweep,
    create_local_sweep,
    resolve_target,
    sweep_notes,
)
from util.errors import UserError, brief

JOBS_DIR = Path("data") / "jobs"
# Jobs one submission may ask for: SLURM's default MaxArraySize (1001) allows task ids up to
# 1000; and every job of a PBS submission is a script rendered and a qsub call before any runs.
MAX_JOBS = 1000


# --- options -------------------------------------------------------------------------------
def add_submit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch jobs (instead of starting agents here)")
    group.add_argument("--pbs", type=whole_number, metavar="N", help="submit N PBS Pro jobs "
                       "(qsub)")
    group.add_argument("--slurm", type=whole_number, metavar="N", help="submit a SLURM job "
                       "array of N tasks (sbatch)")
    group.add_argument("--walltime", help="H:MM:SS per job (default 4:00:00)")
    group.add_argument("--gpus-per-job", type=whole_number, help="GPUs per job, one agent "
                       "each (default 1; 0: CPU agents, --agents of them)")
    group.add_argument("--cpus-per-job", type=whole_number, help="CPU cores per job (default "
                       "4 per GPU, or one per CPU agent)")
    group.add_argument("--mem", help="memory per job, e.g. 16gb (default)")
    group.add_argument("--scratch", help="PBS: local scratch per job, e.g. 20gb (default); "
                       "SLURM: --tmp; none: no scratch asked for (PBS: the job works in "
                       "$TMPDIR)")
    group.add_argument("--queue", help="PBS queue (default gpu when GPUs are asked for)")
    group.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    group.add_argument("--account", help="the account the jobs are charged to (SLURM "
                       "--account, PBS -A; default: the scheduler's for you)")
    group.add_argument("--setup", metavar="FILE", help="shell lines each job runs first "
                       "(module load ...), copied into the job scripts; #PBS/#SBATCH lines at "
                       "its top are directives too")
    group.add_argument("--container", metavar="IMAGE.sif", help="run the agents in this "
                       "Apptainer/Singularity image instead of the virtualenv")
    group.add_argument("--dry-run", action="store_true", help="with --pbs/--slurm: print "
                       "the job scripts, write and submit nothing; alone: check a sweep YAML "
                       "as a launch would and print what it would run, creating nothing")


JOB_OPTIONS = ("pbs", "slurm", *Scheduler.JOB_OPTIONS)  # the rest is repeated by the jobs' hint

# What each text option of a batch job takes: one word, which goes into a #PBS/#SBATCH
# directive (qsub and sbatch read those themselves: no quoting, a space ends the value, a
# leading - reads as an option, `#PBS -q -x`) or into the job's own command line. The paths
# (--setup, --container) are made absolute and quoted, so only a control character (a
# newline would end the script's line) is refused there.
TEXT_OPTIONS = {"walltime": "H:MM:SS, e.g. 4:00:00",
                "mem": "a size with a unit, e.g. 16gb or 500mb",
                "scratch": "a size with a unit, e.g. 20gb, or none",
                "queue": "a queue name such as gpu or gpu@pbs-m1.metacentrum.cz",
                "partition": "a partition name such as gpu",
                "account": "an account name such as proj-123"}
PATH_OPTIONS = {"setup": "the path of a file of shell lines",
                "container": "the path of an Apptainer/Singularity image"}


def whole_number(text: str) -> int:
    """An argparse `type`: an integer written as ASCII digits (a - before them makes a
    negative one, which the option's range then refuses by name). int() alone would take
    ' 4', '+4', '4_0' or Arabic-Indic digits."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected a whole number such as 4, got {text!r}")
    return int(text)


def check_option_values(args: argparse.Namespace) -> None:
    """The text and path options given (TEXT_OPTIONS, PATH_OPTIONS) hold what a job script
    can: UserError, one line naming the option, the value and what it takes. Each option's
    own parser checks the rest (a walltime's form, a queue name's characters)."""
    for name, takes in {**TEXT_OPTIONS, **PATH_OPTIONS}.items():
        value = getattr(args, name)
        if value is None:
            continue
        if not value.strip():
            problem = "no value (leave the option out for the default)"
        elif re.search(r"[\x00-\x1f\x7f]", value):
            problem = "a newline or another control character"
        elif name in PATH_OPTIONS:
            continue
        elif re.search(r"\s", value):
            problem = "a space, which would end the value in a job directive"
        elif value.startswith("-"):
            problem = "a leading -, which the scheduler would read as an option"
        else:
            continue
        raise UserError(f"--{name}={value!r}: {problem}; expected {takes}")


def given_job_options(args: argparse.Namespace) -> list[str]:
    """The batch-job options on the command line, as written there (--dry-run, --mem)."""
    return ((["--dry-run"] if args.dry_run else [])
            + [f"--{name.replace('_', '-')}" for name in JOB_OPTIONS
               if getattr(args, name) is not None])


def requested(args: argparse.Namespace) -> bool:
    """True when any batch-job option was given (then `submit_from_args` handles the call);
    --dry-run alone is the launcher's own: it checks a sweep file and creates nothing."""
    return given_job_options(args) not in ([], ["--dry-run"])


# --- from the command line to submitted jobs -----------------------------------------------
def new_job_dir() -> Path:
    """data/jobs/<date-time>, with a suffix when two submissions share a second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = JOBS_DIR / stamp, 1
    while candidate.exists():
        n += 1
        candidate = JOBS_DIR / f"{stamp}-{n}"
    return candidate


def find_command(scheduler: Scheduler) -> str:
    command = shutil.which(scheduler.command)
    if command is None:
        raise UserError(f"{scheduler.command} not found on PATH: submit from a "
                        f"{scheduler.title} login node, or add --dry-run to see the job scripts")
    return command


class SubmitFailed(UserError):
    """The scheduler refused a job script; `submitted`: the job ids it took before it."""

    def __init__(self, message: str, submitted: list[str]):
        super().__init__(message)
        self.submitted = submitted


def submit(scripts: dict[str, str], scheduler: Scheduler, spec: JobSpec,
           dry_run: bool) -> list[str]:
    """Print the scripts (dry run), or write them to spec.job_dir and submit each; the job
    ids."""
    job_dir = spec.job_dir
    if dry_run:
        for name, text in scripts.items():
            print(f"# ---- {job_dir / name} (dry run: not written, not submitted) ----")
            print(text)
        return []
    command = find_command(scheduler)
    job_dir.mkdir(parents=True)
    ids = []
    for name, text in scripts.items():
        path = job_dir / name
        path.write_text(text)
        path.chmod(0o755)
        done = subprocess.run(scheduler.submit_argv(command, path, spec), capture_output=True,
                              text=True)
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[0]
            raise SubmitFailed(f"{scheduler.command} {path.name} failed ({why})", ids)
        ids.append(scheduler.job_id(done.stdout))
    (job_dir / "job_ids.txt").write_text("\n".join(ids) + "\n")
    return ids


def resolve_job_target(text: str, project: str | None, scheduler: Scheduler, count: int,
                       dry_run: bool, setup: str | None = None, gpus: int = 1) -> SweepTarget:
    """The sweep the jobs work on; bad files, unreachable W&B sweeps and runs that need a GPU
    the jobs (`gpus` each) do not ask for stop here, before anything is written."""
    target, config = resolve_target(text, project), None
    if target.kind == "yaml":
        from agent.sweep.config import load_sweep_config

        config = load_sweep_config(target.path)
        scheduler.check_program(str(target.path), config)
        check_job_devices(str(target.path), config, gpus)
    elif target.kind == "wandb":
        if not dry_run:
            config = check_wandb_sweep(target)
            scheduler.check_program(f"sweep {text}", config)
            check_job_devices(f"sweep {text}", config, gpus)
        note = key_note(scheduler, setup)
        if note:
            print(note, file=sys.stderr)
        return target
    elif not dry_run:  # a dry run writes nothing (not even -shm): no note on the key then
        store = SweepStore(target.store_path, read_only=True)
        try:
            config = store.sweep().config
        finally:
            store.close()  # a job merges into the store once every connection is closed
        if scheduler.checks_program:
            scheduler.check_program(f"sweep {target.path.name}", config)
        check_job_devices(f"sweep {target.path.name}", config, gpus)
    notes = [scheduler.check_local_sweep(count),
             key_note(scheduler, setup, local_runs=True)
             if config is not None and runs_log_to_wandb(config) else None]
    for note in filter(None, notes):
        print(note, file=sys.stderr)
    return target


def check_job_devices(where: str, config: dict, gpus: int) -> None:
    """UserError (one line) when CPU jobs (`gpus` 0: their script sets CUDA_VISIBLE_DEVICES
    empty) are asked for a sweep whose runs of our trainer can take device=cuda: each job's
    launcher would refuse it (launch.check_sweep_devices) only once queued and started."""
    from agent.sweep.config import possible_values
    from agent.sweep.program import runs_our_trainer

    try:
        wanted = possible_values(config, "device") if runs_our_trainer(config) else None
    except (UserError, ValueError, TypeError, OSError):  # its runs say what is wrong
        return
    if gpus or not wanted or "cuda" not in wanted:
        return
    place = "parameters.device" if "device" in (config.get("parameters") or {}) else \
        "command"
    raise UserError(f"{where}: {place}: device=cuda needs a GPU, and --gpus-per-job 0 asks "
                    "for CPU jobs: give --gpus-per-job 1 (or more), or use device auto or cpu")


# WANDB_MODE values (which the jobs get, PASSED_SETTINGS) under which runs need no key
KEYLESS_MODES = ("offline", "dryrun", "disabled")


def runs_log_to_wandb(config: dict) -> bool:
    """True when the runs of the local sweep `config` log to W&B online given a key (the
    trial's wandb_sink.chosen_mode): our trainer with `wandb` among the sinks its runs can
    take (the default's; a distribution may draw any), under a WANDB_MODE that needs a key.
    Another program's runs write offline runs (agent/sweep/program.py run_program)."""
    from agent.sweep.config import possible_values
    from agent.sweep.program import runs_our_trainer

    if os.environ.get("WANDB_MODE") in KEYLESS_MODES:
        return False
    try:
        if not runs_our_trainer(config):
            return False
        sinks = possible_values(config, "sinks")
    except (UserError, ValueError, TypeError, OSError):  # its runs say what is wrong
        return False
    return sinks is None or any(value is None or "wandb" in value for value in sinks)


def key_note(scheduler: Scheduler, setup: str | None = None,
             local_runs: bool = False) -> str | None:
    """A note when the W&B key is only in this shell's environment and the scheduler's jobs
    do not get that environment (`key_kept_from_jobs`; the key is never written into a
    script): they would find no key. None when a netrc file (NETRC, else ~/.netrc) exists or
    the jobs get the key. `setup`: the --setup text, whose directives count. `local_runs`:
    the jobs work on a local sweep whose runs log to W&B (`runs_log_to_wandb`), which
    without a key log offline (wandb_sink.chosen_mode), or fail where WANDB_MODE asks for
    W&B's server."""
    if not os.environ.get("WANDB_API_KEY"):
        return None
    why = key_kept_from_jobs(scheduler, setup)
    if why is None:
        return None
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    if netrc.is_file():
        return None
    mode = os.environ.get("WANDB_MODE") or ""
    shown = mode if mode.isprintable() and len(mode) <= 20 else brief(mode, 20)
    cannot = ("the jobs cannot reach W&B" if not local_runs
              else "the jobs' runs log to W&B offline (upload them with `wandb sync`)"
              if not mode else f"the jobs' runs fail (WANDB_MODE={shown} needs a key)")
    return (f"note: WANDB_API_KEY is set in this shell, but {why} and no {netrc} holds a key "
            "for them: run `./util/with_venv.sh wandb login` once (it writes ~/.netrc), or "
            f"{cannot}")


def key_kept_from_jobs(scheduler: Scheduler, setup: str | None = None) -> str | None:
    """Why the scheduler's jobs do not get this shell's WANDB_API_KEY (words for key_note), or
    None when they do. qsub passes the environment only with -V, or the key with -v naming it
    (neither on our command line; a `#PBS -V` at the --setup text's top is a directive it
    obeys). sbatch passes it all unless its --export is NONE, NIL or a list of names without
    ALL or the key; SBATCH_EXPORT sets that and wins over a script's `#SBATCH --export` (`man
    sbatch`: environment variables override the script's options), which the --setup text
    may hold. Directives after the text's first command are comments (`setup_directives`).
    A --setup text that sets the key itself (from a file, another variable) gives it to them."""
    if setup_sets_key(setup):
        return None
    obeyed, _ = scheduler.setup_directives(setup)
    if scheduler.kind == "pbs":
        if any(_pbs_passes_key(words) for _, words in obeyed):
            return None
        return "PBS jobs do not get its environment (qsub passes it with -V only)"
    export, source = os.environ.get("SBATCH_EXPORT"), "SBATCH_EXPORT={}"
    if export is None:
        for _, words in obeyed:
            for at, word in enumerate(words):
                if word.startswith("--export="):
                    export = word.split("=", 1)[1]
                elif word == "--export" and at + 1 < len(words):
                    export = words[at + 1]
        source = "the --setup file's `#SBATCH --export={}`"
    if export is None:
        return None  # sbatch's default: --export=ALL
    names = _export_names(export)
    if "ALL" in (name.upper() for name in names) or "WANDB_API_KEY" in names:
        return None
    shown = export if export.isprintable() and len(export) <= 40 else brief(export, 40)
    return f"{source.format(shown)} keeps it from SLURM jobs"


def _pbs_passes_key(words: list[str]) -> str | None:
    """How the words of one #PBS directive pass this shell's WANDB_API_KEY to the job: 'all'
    for -V (the whole environment), 'key' for -v naming it; None when they do not."""
    for at, word in enumerate(words):
        names = (words[at + 1] if word == "-v" and at + 1 < len(words)
                 else word[2:] if word.startswith("-v") else "")
        if word == "-V":
            return "all"
        if "WANDB_API_KEY" in _export_names(names):
            return "key"
    return None


def shown_key_note(scheduler: Scheduler, setup: str | None, given: str | None) -> str | None:
    """A note when a directive at the --setup text's top hands this shell's WANDB_API_KEY to
    qsub (`#PBS -V`, `#PBS -v WANDB_API_KEY`): PBS keeps the value in the job's Variable_List,
    which `qstat -f` prints to whoever may query the job on that server (POSIX qsub: -V adds
    every variable of qsub's environment to Variable_List). The user's choice, so a note and
    no refusal. None without a key in this shell, and for SLURM: sbatch passes the
    environment by default (--export=ALL) and `scontrol show job` shows no values of it;
    only `sacct -j ID --env-vars` does, where the site stores job environments
    (AccountingStoreFlags=job_env in slurm.conf), which a script cannot tell."""
    if scheduler.kind != "pbs" or not os.environ.get("WANDB_API_KEY"):
        return None
    obeyed, _ = scheduler.setup_directives(setup)
    passing = [(number, _pbs_passes_key(words)) for number, words in obeyed]
    number, how = next(((number, how) for number, how in passing if how), (0, None))
    if how is None:
        return None
    line = brief((setup or "").splitlines()[number - 1].strip(), 40)
    what = ("this shell's environment to the jobs, WANDB_API_KEY with it," if how == "all"
            else "this shell's WANDB_API_KEY to the jobs")
    return (f"note: --setup={given!r}: line {number} ({line}) passes {what} and PBS keeps it "
            "in each job's Variable_List, which `qstat -f` shows to whoever may query the "
            "job: to keep the key out of it, run `./util/with_venv.sh wandb login` once (it "
            "writes ~/.netrc, where the jobs' W&B reads it) and pass the variables the jobs "
            "need by name (#PBS -v NAME,...)")


def _export_names(listed: str) -> list[str]:
    """The variable names of an export list (sbatch's --export, qsub's -v): NAME or
    NAME=value, comma-separated."""
    return [item.strip().split("=", 1)[0] for item in listed.split(",")]


def ignored_directives_note(scheduler: Scheduler, setup: str | None,
                            given: str | None) -> str | None:
    """A note naming the --setup file's directive lines that come after a command: qsub and
    sbatch read them as comments, while whoever wrote them expects them obeyed. Not moved
    above the commands: the job script holds the file's text as it is, the scheduler's own
    rule is the one every script of that cluster follows, and a line moved would run in
    another order than written (`#SBATCH --chdir` after a `cd`)."""
    _, ignored = scheduler.setup_directives(setup)
    if not ignored:
        return None
    numbers = ", ".join(str(number) for number, _ in ignored)
    first = brief(ignored[0][1], 40)
    many = len(ignored) > 1
    lines, they, them = ("lines", "they are", "them") if many else ("line", "it is", "it")
    return (f"note: --setup={given!r}: {lines} {numbers} ({first}{', ...' if many else ''}) "
            f"{'come' if many else 'comes'} after a command, and {scheduler.command} reads no "
            f"{scheduler.directive} directive after the first command: {they} ignored; move "
            f"{them} to the file's top, above its commands, to have {them} obeyed")


def local_sweep_for_jobs(target: SweepTarget, dry_run: bool) -> Path | None:
    """The local sweep's directory (made from the YAML unless this is a dry run); None for a
    W&B sweep."""
    if target.kind == "local":
        return target.path.resolve()
    if target.kind != "yaml":
        return None
    if dry_run:
        local = (Path("data") / "sweeps" / "NEW-SWEEP-ID").resolve()
        print(f"# dry run: would create a local sweep from {target.path} as {local}")
        for note in sweep_notes(target.path):  # as creating it would say them, as comments
            print(textwrap.fill(note, 80, initial_indent="# ", subsequent_indent="#   ",
                                break_on_hyphens=False))
        return local
    # announced once its jobs are submitted: a refused submission removes it again
    return create_local_sweep(target.path, announce=False).directory.resolve()


def _after_failure(failure: SubmitFailed, job_dir: Path, made: Path | None,
                   local: Path | None, new_folders: list[Path] | None = None) -> str:
    """The line for a refused submission. With no job submitted, what this submission wrote
    is removed (its scripts, the sweep it made from a YAML, and those of `new_folders`, the
    folders it created, deepest first, that are left empty): nothing is left half-made.
    Otherwise all stays, and the line names the jobs and the sweep to go on with."""
    if not failure.submitted:
        shutil.rmtree(job_dir, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        for folder in new_folders or []:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return f"{failure}; no job was submitted and nothing was kept"
    more = f"{script('run_sweep.sh')} {local.name} ..." if local is not None else ""
    where = f"; the sweep is {local.name} (more jobs: {more})" \
        if local is not None else ""
    return (f"{failure}; submitted before it: {', '.join(failure.submitted)} (scripts and logs "
            f"in {job_dir}/){where}")


def _queued_behind_note(after: list[str], scheduler: Scheduler) -> str:
    """The line saying that the new job is queued behind `after` (Scheduler.queued_behind)."""
    jobs, of, are = ((f"job {after[0]}", "an earlier submission", "is") if len(after) == 1
                     else (f"jobs {', '.join(after)}", "earlier submissions", "are"))
    return (f"note: {jobs} of {of} on this local sweep {are} queued or running: the new job "
            f"goes behind in the queue ({scheduler.command} -W depend=afterany:"
            f"{':'.join(after)}), where it would wait for the sweep in its own walltime")


def _gpu_hint(failure: SubmitFailed, spec: JobSpec) -> str:
    """How to ask for no GPU, when the scheduler refused the GPUs asked for (SLURM's 'Invalid
    generic resource' on a cluster without them: --gpus-per-job is 1 unless told)."""
    if spec.gpus and "generic resource" in str(failure):
        return (f" (the jobs asked for {spec.gpus} GPU(s) each: on a cluster without GPUs, "
                "--gpus-per-job 0 runs CPU agents)")
    return ""


def submit_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The launcher's --pbs/--slurm branch: validate, make the sweep if needed, submit."""
    argv = sys.argv[1:] if argv is None else argv
    if args.pbs is not None and args.slurm is not None:
        raise UserError("--pbs and --slurm: batch jobs go to one scheduler, give exactly one "
                        "of --pbs N or --slurm N")
    if args.pbs is None and args.slurm is None:
        # name what was counted: `--dry-run` alone reads as "show what would start here"
        given = given_job_options(args)
        what = ("a batch-job option, which needs" if len(given) == 1
                else "batch-job options, which need")
        raise UserError(f"{', '.join(given)}: {what} exactly one of --pbs N or --slurm N "
                        f"(leave {'it' if len(given) == 1 else 'them'} out to start agents "
                        "here)")
    scheduler = SCHEDULERS["pbs" if args.pbs is not None else "slurm"]
    count = getattr(args, scheduler.kind)
    if not 1 <= count <= MAX_JOBS:
        raise UserError(f"--{scheduler.kind} {count}: expected 1 to {MAX_JOBS} jobs")
    check_option_values(args)
    job_dir = new_job_dir().resolve()
    # the folders a refused submission removes again if it made them (data/sweeps, data/jobs
    # and data/ itself), not one that was there before, empty or not
    new_folders = [folder.resolve() for folder in (SWEEPS_DIR, JOBS_DIR, JOBS_DIR.parent)
                   if not folder.exists()]
    # Every check before anything is written: options, then the target, then the command.
    checked = scheduler.job_spec(args, count, args.target, None, job_dir, argv)
    notes = [ignored_directives_note(scheduler, checked.setup, args.setup),
             shown_key_note(scheduler, checked.setup, args.setup)]
    for note in filter(None, notes):
        print(note, file=sys.stderr)
    target = resolve_job_target(args.target, args.project, scheduler, count, args.dry_run,
                                checked.setup, checked.gpus)
    if not args.dry_run:
        find_command(scheduler)
    local = local_sweep_for_jobs(target, args.dry_run)
    sweep = scheduler.sweep_in_job(local) if local is not None else args.target
    spec = scheduler.job_spec(args, count, sweep, local, job_dir, argv)
    spec.after = scheduler.queued_behind(local, job_dir.parent)
    if spec.after:
        print(_queued_behind_note(spec.after, scheduler), file=sys.stderr)
    try:
        ids = submit(scheduler.scripts(spec), scheduler, spec, args.dry_run)
    except SubmitFailed as failure:
        raise UserError(_after_failure(failure, job_dir, local if target.kind == "yaml"
                                       else None, local, new_folders)
                        + _gpu_hint(failure, spec)) from None
    if ids:
        if target.kind == "yaml" and local is not None:
            name = SweepStore(local / "sweep.db").sweep().name
            print(f"Created local sweep {local.name} ({name}) in {local}")
        print(f"Submitted {scheduler.title} job(s) {', '.join(ids)}; scripts and logs in "
              f"{job_dir}/ (watch: {scheduler.watch})")
        if local is not None:
            print(f"Progress: {module_command('agent.status')} {local}"
                  + scheduler.status_note)
    return 0

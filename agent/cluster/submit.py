"""`./run_sweep.sh SWEEP --pbs N` or `--slurm N`: agents as batch jobs (PBS Pro, SLURM).

Pure functions turn the options into job-script text (`pbs_script`, `slurm_script`);
`submit` writes the scripts under data/jobs/<time>/ and hands them to qsub or sbatch.

Where the agents of a job may run depends on the sweep. A W&B sweep is shared through W&B's
server: N jobs on any nodes. A local sweep is one SQLite file, safe only for the agents of one
machine, so:
- PBS jobs run in $SCRATCHDIR on a copy of the sweep, copied back when the job ends. Two such
  jobs at once would each overwrite the other's results, so `--pbs N` with N > 1 on a local
  sweep is refused with one line saying what works instead: a W&B sweep, or one job with more
  GPUs (`--gpus-per-job K` runs K agents on one node). A user asking for N jobs expects them
  to run side by side; running them one after another silently would not be that.
- SLURM jobs run in the submit directory (shared storage) on the sweep itself, which is right
  on one node (a lab server under SLURM, the test cluster). The first task of the array
  records its node; a task that lands on another node leaves at once, saying why.
The job's Python is either this virtualenv (it must sit on storage the nodes see) or the one
inside an Apptainer/Singularity image built from docker/Dockerfile (`--container x.sif`); the
code is this repository's in both cases, so the two modes run the same code.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.sweep.target import (SweepTarget, check_wandb_sweep, create_local_sweep,
                                resolve_target)
from util.errors import UserError

CODE_DIR = Path(__file__).resolve().parents[2]
JOBS_DIR = Path("data") / "jobs"
COMMANDS = {"pbs": "qsub", "slurm": "sbatch"}
# Settings of the submitting shell that a job keeps (qsub passes no environment). Never the
# API key: a job finds it at run time in its environment or in the netrc file W&B reads
# (~/.netrc, or the file NETRC names).
PASSED_SETTINGS = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "NETRC")
# Agents get SIGTERM this long before the walltime (a tenth of it when shorter): enough for
# the trial to stop at once and for the job to copy its results back before the scheduler's
# own SIGTERM and, seconds later, SIGKILL.
STOP_MARGIN_S = 300
# Left out of the code copied to scratch: environments, results and history.
NOT_CODE = ("./.venv", "./data", "./wandb", "./reports", "./.git", "./.pytest_cache",
            "__pycache__")
# data/ parts not copied to scratch: the sweep and the checkpoints are handled on their own,
# logs and job files are outputs.
NOT_INPUT_DATA = ("sweeps", "runs", "logs", "jobs")
IMAGE_PYTHON = "/app/.venv/bin/python"  # where docker/Dockerfile puts the environment


@dataclass
class JobSpec:
    """Everything a job script needs; built from the command line by `job_spec`."""
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
    container: Path | None
    python: str
    code_dir: Path
    submit_dir: Path
    job_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    command_line: str = ""


# --- options -------------------------------------------------------------------------------
def add_submit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch jobs (instead of starting agents here)")
    group.add_argument("--pbs", type=int, metavar="N", help="submit N PBS Pro jobs (qsub)")
    group.add_argument("--slurm", type=int, metavar="N", help="submit a SLURM job array of "
                       "N tasks (sbatch)")
    group.add_argument("--walltime", help="H:MM:SS per job (default 4:00:00)")
    group.add_argument("--gpus-per-job", type=int, help="GPUs per job, one agent each "
                       "(default 1; 0: CPU agents, --agents of them)")
    group.add_argument("--cpus-per-job", type=int, help="CPU cores per job (default 4 per "
                       "GPU, or one per CPU agent)")
    group.add_argument("--mem", help="memory per job, e.g. 16gb (default)")
    group.add_argument("--scratch", help="PBS: local scratch per job, e.g. 20gb (default); "
                       "SLURM: --tmp")
    group.add_argument("--queue", help="PBS queue (default gpu when GPUs are asked for)")
    group.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    group.add_argument("--container", metavar="IMAGE.sif", help="run the agents in this "
                       "Apptainer/Singularity image instead of the virtualenv")
    group.add_argument("--dry-run", action="store_true", help="print the job scripts; "
                       "write and submit nothing")


def requested(args: argparse.Namespace) -> bool:
    """True when any batch-job option was given (then `submit_from_args` handles the call)."""
    names = ("pbs", "slurm", "walltime", "gpus_per_job", "cpus_per_job", "mem", "scratch",
             "queue", "partition", "container")
    return args.dry_run or any(getattr(args, name) is not None for name in names)


def parse_walltime(text: str) -> int:
    """'H:MM:SS' (any number of hours) to seconds."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d)", text.strip())
    seconds = (int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3])) if match else 0
    if seconds <= 0:
        raise UserError(f"--walltime={text!r}: expected H:MM:SS above zero, e.g. 4:00:00")
    return seconds


def parse_size_mb(option: str, text: str) -> int:
    """'16gb', '500mb', '16G' (PBS and SLURM spellings) to megabytes."""
    match = re.fullmatch(r"(\d+)\s*([kmgt])b?", text.strip().lower())
    if not match or int(match[1]) == 0:
        raise UserError(f"{option}={text!r}: expected a size with a unit, e.g. 16gb or 500mb")
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2}[match[2]]
    return max(1, int(int(match[1]) * factor))


def format_hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_slurm_time(seconds: int) -> str:
    """SLURM's days-hours:minutes:seconds (its H:MM:SS form is meant for under a day)."""
    days, rest = divmod(seconds, 86400)
    return f"{days}-{format_hms(rest).zfill(8)}" if days else format_hms(seconds)


def format_pbs_size(mb: int) -> str:
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


# --- the job scripts (pure) ----------------------------------------------------------------
def stop_after_s(walltime_s: int) -> int:
    return walltime_s - min(STOP_MARGIN_S, max(1, walltime_s // 10))


def _q(value) -> str:
    return shlex.quote(str(value))


def _agents_command(spec: JobSpec, code: str, binds: list[str]) -> str:
    """The launcher on the job's node. `code` and `binds` are shell expressions: where the
    code is, and (container) the directories the image must see."""
    launch = " ".join(_q(a) for a in ["-m", "agent.launch", spec.sweep, *spec.launch_args])
    if spec.container is None:
        return f'env PYTHONPATH="{code}" {_q(spec.python)} {launch}'
    nv = "--nv " if spec.gpus else ""  # the host's NVIDIA driver inside the image
    return (f'"$apptainer" exec {nv}--bind {",".join(binds)} --pwd "$PWD" '
            f'--env PYTHONPATH="{code}" {_q(spec.container)} {IMAGE_PYTHON} {launch}')


def _preamble(spec: JobSpec) -> list[str]:
    lines = ["set -uo pipefail", "trap 'exit 143' TERM INT  # until the agents run", "",
             f"code_dir={_q(spec.code_dir)}",
             f"job_dir={_q(spec.job_dir)}"]
    for name, value in spec.settings.items():  # the job's own environment wins
        lines.append(f'[ -n "${{{name}+set}}" ] || export {name}={_q(value)}')
    if spec.gpus == 0:
        lines.append('export CUDA_VISIBLE_DEVICES=""  # a CPU job: leave the node\'s GPUs alone')
    if spec.container is not None:
        lines += ['apptainer="$(command -v apptainer || command -v singularity)" || '
                  '{ echo "error: neither apptainer nor singularity on this node" >&2; exit 2; }']
    return lines


def _run_agents(spec: JobSpec, code: str, binds: list[str]) -> list[str]:
    """Start the agents in the background, pass SIGTERM on, stop them before the walltime."""
    margin = spec.walltime_s - stop_after_s(spec.walltime_s)
    return [
        "# In the background, so that this shell passes SIGTERM (the scheduler's walltime or",
        "# qdel/scancel) on at once; a foreground child would hold the trap until it ended.",
        f"# `timeout` stops the agents {margin} s before the walltime so that the results are",
        "# safe before the scheduler's own SIGTERM and SIGKILL. Either way the current run",
        "# ends `preempted` with its checkpoint, and the next agent resumes it.",
        f"timeout --signal=TERM {stop_after_s(spec.walltime_s)} "
        f"{_agents_command(spec, code, binds)} &",
        "agents=$!",
        "trap 'kill -TERM \"$agents\" 2>/dev/null' TERM INT",
        "while :; do",
        '  wait "$agents"; status=$?',
        '  kill -0 "$agents" 2>/dev/null || break  # a signal cut the wait short: wait again',
        "done",
        "trap - TERM INT",
        'if [ "$status" = 124 ]; then',
        f'  echo "agents stopped {margin} s before the walltime; the next job resumes '
        'the preempted run" >&2',
        "  status=0",
        "fi",
    ]


def pbs_script(spec: JobSpec, index: int) -> str:
    """Job `index` (1-based): agents in $SCRATCHDIR on a copy of the code (and of a local
    sweep); logs, offline runs, dataset cache and sweep store copied back on exit."""
    select = f"select=1:ncpus={spec.cpus}" + (f":ngpus={spec.gpus}" if spec.gpus else "")
    select += f":mem={format_pbs_size(spec.mem_mb)}"
    if spec.scratch_mb:
        select += f":scratch_local={format_pbs_size(spec.scratch_mb)}"
    head = ["#!/bin/bash", f"#PBS -N {spec.name}"]
    if spec.queue:
        head.append(f"#PBS -q {spec.queue}")
    head += [f"#PBS -l {select}", f"#PBS -l walltime={format_hms(spec.walltime_s)}",
             "#PBS -j oe", f"#PBS -o {spec.job_dir}/pbs-{index}.out",
             f"# Job {index} of {spec.jobs}, written by: {spec.command_line}",
             f"# Submit again with: qsub {spec.job_dir}/pbs-{index}.sh", ""]
    body = _preamble(spec) + [
        f'submit_dir="${{PBS_O_WORKDIR:-{spec.submit_dir}}}"',
        '[ -n "${SCRATCHDIR:-}" ] || { echo "error: no \\$SCRATCHDIR (ask for scratch_local '
        'in -l select)" >&2; exit 2; }',
        'work="$SCRATCHDIR/sweep-job"',
    ]
    if spec.local_sweep is not None:
        body += [f"sweep_dir={_q(spec.local_sweep)}",
                 f'sweep_copy="$work/data/sweeps/"{_q(spec.local_sweep.name)}']
    body += [
        "copied_in=0", "",
        "copy_back() {",
        "  # Results go back to the submit directory; scratch is emptied only when they did.",
        "  local failed=0",
        "  cd /",
        '  rm -f "$work/data/runs"  # the link to the shared checkpoints, not the checkpoints',
    ]
    if spec.local_sweep is not None:
        body += [
            '  if [ "$copied_in" = 1 ] && [ -d "$sweep_copy" ]; then',
            "    # The store is replaced as a whole: an old -wal file left beside a newer",
            "    # sweep.db would be replayed into it.",
            '    rm -rf "$sweep_dir.incoming" "$sweep_dir.old"',
            '    cp -a "$sweep_copy" "$sweep_dir.incoming" &&',
            '      mv "$sweep_dir" "$sweep_dir.old" && mv "$sweep_dir.incoming" "$sweep_dir" &&',
            '      rm -rf "$sweep_dir.old" || failed=1',
            '    rm -rf "$work/data/sweeps"',
            "  fi",
        ]
    body += [
        '  if [ "$copied_in" = 1 ]; then',
        "    # -u: only what is new or changed (logs, offline runs, a new dataset cache)",
        '    cp -a -u "$work/data/." "$submit_dir/data/" || failed=1',
        '    if [ -d "$work/wandb" ]; then',
        '      mkdir -p "$submit_dir/wandb" &&',
        '        cp -a -u "$work/wandb/." "$submit_dir/wandb/" || failed=1',
        "    fi",
        "  fi",
        '  if [ "$failed" = 0 ]; then rm -rf "$work"',
        '  else echo "error: copying results back failed; they are in $(hostname):$work" >&2; fi',
        "}",
        "trap copy_back EXIT", "",
        'mkdir -p "$work/data" "$submit_dir/data/runs" || exit 1',
        "# The code, without environments and results",
        f"tar -C \"$code_dir\" {' '.join(f'--exclude={p}' for p in NOT_CODE)} -cf - . "
        '| tar -C "$work" -xf - || exit 1',
        "# Datasets and their decoded cache (read by every trial)",
        'if [ -d "$submit_dir/data" ]; then',
        f"  tar -C \"$submit_dir/data\" {' '.join(f'--exclude=./{p}' for p in NOT_INPUT_DATA)}"
        ' -cf - . | tar -C "$work/data" -xf - || exit 1',
        "fi",
        "# Checkpoints stay on shared storage: a preempted run's checkpoint must be there for",
        "# the next job, and one write per epoch is light.",
        'ln -s "$submit_dir/data/runs" "$work/data/runs"',
    ]
    if spec.local_sweep is not None:
        body += ['mkdir -p "$work/data/sweeps" && cp -a "$sweep_dir" "$sweep_copy" || exit 1']
    body += ["copied_in=1", "", 'cd "$work"']
    body += _run_agents(spec, "$work", ['"$work"', '"$submit_dir"']) + ['exit "$status"']
    return "\n".join(head + body) + "\n"


def slurm_script(spec: JobSpec) -> str:
    """One job array of `spec.jobs` tasks, each running agents in the submit directory."""
    head = ["#!/bin/bash", f"#SBATCH --job-name={spec.name}",
            f"#SBATCH --array=0-{spec.jobs - 1}", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
            f"#SBATCH --cpus-per-task={spec.cpus}", f"#SBATCH --mem={spec.mem_mb}M",
            f"#SBATCH --time={format_slurm_time(spec.walltime_s)}"]
    if spec.gpus:
        head.append(f"#SBATCH --gres=gpu:{spec.gpus}")
    if spec.scratch_mb:
        head.append(f"#SBATCH --tmp={spec.scratch_mb}M")
    if spec.queue:
        head.append(f"#SBATCH --partition={spec.queue}")
    head += [f"#SBATCH --output={spec.job_dir}/slurm-%A_%a.out",
             f"#SBATCH --chdir={spec.submit_dir}",
             f"# Written by: {spec.command_line}",
             f"# Submit again with: sbatch {spec.job_dir}/slurm.sh", ""]
    body = _preamble(spec) + [f'cd {_q(spec.submit_dir)} || exit 1']
    if spec.local_sweep is not None and spec.jobs > 1:
        body += [
            "# A local sweep is one SQLite file: safe for the agents of one node only. The",
            "# first task records its node; a task on another node leaves.",
            '( set -C; hostname > "$job_dir/node" ) 2>/dev/null',
            'if [ "$(cat "$job_dir/node")" != "$(hostname)" ]; then',
            '  echo "error: this local sweep runs on $(cat "$job_dir/node"); agents on other'
            ' nodes need a W&B sweep" >&2',
            "  exit 3",
            "fi",
        ]
    binds = ['"$code_dir"', '"$PWD"'] + ([_q(spec.local_sweep)] if spec.local_sweep else [])
    body += _run_agents(spec, "$code_dir", binds) + ['exit "$status"']
    return "\n".join(head + body) + "\n"


# --- from the command line to submitted jobs -----------------------------------------------
def job_spec(args: argparse.Namespace, kind: str, count: int, sweep: str,
             local_sweep: Path | None, job_dir: Path, argv: list[str]) -> JobSpec:
    """Validated options as a JobSpec (UserError, one line, for anything wrong)."""
    gpus = 1 if args.gpus_per_job is None else args.gpus_per_job
    if gpus < 0:
        raise UserError(f"--gpus-per-job={gpus}: expected 0 or more")
    agents = gpus * args.agents_per_gpu if gpus else args.agents
    cpus = args.cpus_per_job if args.cpus_per_job is not None else (4 * gpus or agents)
    if cpus < 1:
        raise UserError(f"--cpus-per-job={cpus}: expected 1 or more")
    if kind == "pbs" and args.partition:
        raise UserError("--partition is SLURM's; PBS takes --queue")
    if kind == "slurm" and args.queue:
        raise UserError("--queue is PBS's; SLURM takes --partition")
    if args.gpus:
        raise UserError("--gpus picks GPUs of this machine; a job gets --gpus-per-job of its "
                        "node's")
    container = None
    if args.container:
        container = Path(args.container).resolve()
        if not container.is_file():
            raise UserError(f"--container={args.container!r}: no such image file (build one "
                            "with `apptainer build sweep.sif docker-daemon://...`, see "
                            "README.md, Agents anywhere)")
    launch_args = ["--agents-per-gpu", str(args.agents_per_gpu)] if gpus else [
        "--agents", str(args.agents)]
    for option, value in (("--count", args.count), ("--project", args.project),
                          ("--heartbeat", args.heartbeat),
                          ("--heartbeat-timeout", args.heartbeat_timeout)):
        if value:
            launch_args += [option, str(value)]
    queue = args.queue if kind == "pbs" else args.partition
    if queue is not None and not re.fullmatch(r"[\w.@-]+", queue):
        raise UserError(f"--{'queue' if kind == 'pbs' else 'partition'}={queue!r}: expected "
                        "a name such as gpu or gpu@pbs-m1.metacentrum.cz")
    if kind == "pbs" and queue is None and gpus:
        queue = "gpu"  # MetaCentrum's GPU queue
    if re.search(r"\s", str(Path.cwd())):  # job directives cannot quote a path
        raise UserError(f"submit directory {str(Path.cwd())!r}: PBS and SLURM job directives "
                        "cannot hold a path with spaces; submit from a path without them")
    scratch = args.scratch if args.scratch is not None else ("20gb" if kind == "pbs" else None)
    name = re.sub(r"[^A-Za-z0-9_.-]", "", f"sweep-{Path(sweep).name}")[:15]
    return JobSpec(
        name=name, sweep=sweep, local_sweep=local_sweep, launch_args=launch_args, jobs=count,
        walltime_s=parse_walltime(args.walltime or "4:00:00"), gpus=gpus, cpus=cpus,
        mem_mb=parse_size_mb("--mem", args.mem or "16gb"),
        scratch_mb=parse_size_mb("--scratch", scratch) if scratch else None, queue=queue,
        container=container, python=sys.executable, code_dir=CODE_DIR,
        submit_dir=Path.cwd(), job_dir=job_dir.resolve(),
        settings={k: os.environ[k] for k in PASSED_SETTINGS if os.environ.get(k)},
        command_line=" ".join(["./run_sweep.sh", *map(_q, argv)]).replace("\n", " "))


def new_job_dir() -> Path:
    """data/jobs/<date-time>, with a suffix when two submissions share a second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = JOBS_DIR / stamp, 1
    while candidate.exists():
        n += 1
        candidate = JOBS_DIR / f"{stamp}-{n}"
    return candidate


def find_command(kind: str) -> str:
    command = shutil.which(COMMANDS[kind])
    if command is None:
        raise UserError(f"{COMMANDS[kind]} not found on PATH: submit from a {kind.upper()} "
                        "login node, or add --dry-run to see the job scripts")
    return command


def submit(scripts: dict[str, str], kind: str, dry_run: bool, job_dir: Path) -> list[str]:
    """Print the scripts (dry run), or write them to job_dir and submit each; the job ids."""
    if dry_run:
        for name, text in scripts.items():
            print(f"# ---- {job_dir / name} (dry run: not written, not submitted) ----")
            print(text)
        return []
    command = find_command(kind)
    job_dir.mkdir(parents=True)
    ids = []
    for name, text in scripts.items():
        path = job_dir / name
        path.write_text(text)
        path.chmod(0o755)
        argv = [command, "--parsable", str(path)] if kind == "slurm" else [command, str(path)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[0]
            raise UserError(f"{COMMANDS[kind]} {path} failed ({why}); submitted before it: "
                            f"{', '.join(ids) or 'none'}")
        ids.append(done.stdout.strip().split(";")[0])
    (job_dir / "job_ids.txt").write_text("\n".join(ids) + "\n")
    return ids


def resolve_job_target(text: str, project: str | None, kind: str, count: int,
                       dry_run: bool) -> SweepTarget:
    """The sweep the jobs work on; bad files and unreachable W&B sweeps stop here, before
    anything is written."""
    target = resolve_target(text, project)
    if target.kind == "yaml":
        from agent.sweep.config import load_sweep_config

        load_sweep_config(target.path)
    elif target.kind == "wandb":
        if not dry_run:
            check_wandb_sweep(target)
        return target
    if kind == "pbs" and count > 1:
        raise UserError(f"--pbs {count} on a local sweep: its store is one SQLite file for one "
                        "machine, and PBS jobs may land on different nodes; use --pbs 1 "
                        "--gpus-per-job K (K agents on one node) or a W&B sweep (wandb sweep "
                        "FILE)")
    return target


def submit_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The launcher's --pbs/--slurm branch: validate, make the sweep if needed, submit."""
    argv = sys.argv[1:] if argv is None else argv
    if (args.pbs is None) == (args.slurm is None):
        raise UserError("batch-job options need exactly one of --pbs N or --slurm N")
    kind, count = ("pbs", args.pbs) if args.pbs is not None else ("slurm", args.slurm)
    if count < 1:
        raise UserError(f"--{kind} {count}: expected 1 or more jobs")
    job_dir = new_job_dir().resolve()
    # Every check before anything is written: options, then the target, then the command.
    job_spec(args, kind, count, args.target, None, job_dir, argv)
    target = resolve_job_target(args.target, args.project, kind, count, args.dry_run)
    if not args.dry_run:
        find_command(kind)
    local = target.path.resolve() if target.kind == "local" else None
    if target.kind == "yaml":
        if args.dry_run:
            local = (Path("data") / "sweeps" / "NEW-SWEEP-ID").resolve()
            print(f"# dry run: would create a local sweep from {target.path} as {local}")
        else:
            local = create_local_sweep(target.path).directory.resolve()
    if local is not None:
        # PBS jobs work on a copy in scratch (data/sweeps/<id> there); SLURM on the store.
        sweep = f"data/sweeps/{local.name}" if kind == "pbs" else str(local)
    else:
        sweep = args.target
    spec = job_spec(args, kind, count, sweep, local, job_dir, argv)
    scripts = ({f"pbs-{i}.sh": pbs_script(spec, i) for i in range(1, count + 1)}
               if kind == "pbs" else {"slurm.sh": slurm_script(spec)})
    ids = submit(scripts, kind, args.dry_run, job_dir)
    if ids:
        watch = "qstat -u $USER" if kind == "pbs" else "squeue --me"
        print(f"Submitted {kind.upper()} job(s) {', '.join(ids)}; scripts and logs in "
              f"{job_dir}/ (watch: {watch})")
        if local is not None:
            print(f"Progress: ./util/with_venv.sh python -m agent.status {local}"
                  + (" (updated when the job ends: it works on a copy in scratch)"
                     if kind == "pbs" else ""))
    return 0

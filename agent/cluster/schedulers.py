"""PBS Pro and SLURM as two classes on one base: options -> JobSpec -> script text -> submit
command. What differs (directives, where the job works, how a job id comes back) is in the
subclasses and their templates (templates/pbs.sh, templates/slurm.sh); the rest is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from agent.cluster.jobs import (
    MAX_CPUS_PER_JOB,
    MAX_GPUS_PER_JOB,
    MERGE_EVERY_S,
    JobSpec,
    format_hms,
    parse_scratch_mb,
    parse_size_mb,
    parse_walltime,
    read_setup,
    setup_directives,
)
from agent.cluster.scripts import needs_no_quoting, render, shell_word
from util.errors import UserError

CODE_DIR = Path(__file__).resolve().parents[2]
# Settings of the submitting shell that a job keeps (qsub passes no environment). Never the
# API key: a job finds it at run time in its environment or in the netrc file W&B reads
# (~/.netrc, or the file NETRC names).
PASSED_SETTINGS = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "NETRC")
IMAGE_PYTHON = "/app/.venv/bin/python"  # where docker/Dockerfile puts the environment


class Scheduler:
    """A batch system: `job_spec` (options to JobSpec), `scripts` (JobSpec to job-script
    text), `submit_argv` and `job_id` (the submit command and what it prints)."""
    kind = ""           # pbs or slurm: the option --pbs N / --slurm N
    title = ""          # as users write it
    command = ""        # what submits a script
    template = ""       # under templates/
    directive = ""      # what starts a directive line of a job script (#PBS, #SBATCH)
    indented_directives = False  # whether the scheduler reads one after leading spaces
    queue_option = ""   # the option naming a queue or partition
    default_scratch: str | None = None
    checks_program = False  # whether check_program has anything to check
    watch = ""          # how to watch the jobs
    status_note = ""    # said after the progress command

    @property
    def queue_dest(self) -> str:
        return self.queue_option.lstrip("-").replace("-", "_")

    # --- options -> JobSpec ---------------------------------------------------------------
    def job_spec(self, args: argparse.Namespace, count: int, sweep: str,
                 local_sweep: Path | None, job_dir: Path, argv: list[str]) -> JobSpec:
        """Validated options as a JobSpec (UserError, one line, for anything wrong)."""
        gpus, cpus, launch_args = self.agents(args)
        container = self.container(args.container)
        walltime_s = parse_walltime(args.walltime or "4:00:00")
        queue = self.queue(args, gpus, walltime_s)
        scratch = args.scratch if args.scratch is not None else self.default_scratch
        setup, setup_path = read_setup(args.setup)
        spec = JobSpec(
            name=re.sub(r"[^A-Za-z0-9_.-]", "", f"sweep-{Path(sweep).name}")[:15],
            sweep=sweep, local_sweep=local_sweep, launch_args=launch_args, jobs=count,
            walltime_s=walltime_s, gpus=gpus, cpus=cpus,
            mem_mb=parse_size_mb("--mem", args.mem or "16gb"),
            scratch_mb=parse_scratch_mb(scratch) if scratch else None, queue=queue,
            account=self.account(args.account), container=container, python=sys.executable,
            code_dir=CODE_DIR, submit_dir=Path.cwd(), job_dir=job_dir.resolve(),
            settings={k: os.environ[k] for k in PASSED_SETTINGS if os.environ.get(k)},
            # a comment line in the script: one line, whatever the arguments hold
            command_line=["./run_sweep.sh", *(re.sub(r"[\x00-\x1f\x7f]", " ", a)
                                              for a in argv)],
            setup=setup, setup_path=setup_path, job_options=self.job_options(args, count))
        for what, path in (("submit directory", spec.submit_dir), ("job directory",
                                                                  spec.job_dir)):
            if not needs_no_quoting(path):  # job directives cannot quote a path
                raise UserError(f"{what} {str(path)!r}: {self.title} job directives cannot "
                                "hold a path with spaces, quotes or shell characters; submit "
                                "from a path without them")
        self.scripts(spec)  # a value no script can hold stops here, before anything is made
        return spec

    JOB_OPTIONS = ("walltime", "gpus_per_job", "cpus_per_job", "mem", "scratch", "queue",
                   "partition", "account", "container", "setup")

    def job_options(self, args: argparse.Namespace, count: int) -> str:
        """The batch-job options given, as a command-line tail (" --pbs 1 --walltime
        24:00:00"); the container's and the set-up file's paths absolute, as the job finds
        them."""
        tail = f" --{self.kind} {count}"
        for name in self.JOB_OPTIONS:
            value = getattr(args, name)
            if value is not None:
                value = (self.container(value) if name == "container"
                         else Path(value).resolve() if name == "setup" else value)
                tail += f" --{name.replace('_', '-')} {shlex.quote(str(value))}"
        return tail

    def agents(self, args: argparse.Namespace) -> tuple[int, int, list[str]]:
        """GPUs and CPU cores per job, and the options of the launcher inside it."""
        gpus = 1 if args.gpus_per_job is None else args.gpus_per_job
        if not 0 <= gpus <= MAX_GPUS_PER_JOB:
            raise UserError(f"--gpus-per-job={gpus}: expected 0 to {MAX_GPUS_PER_JOB} (the "
                            "GPUs of one node)")
        agents = gpus * args.agents_per_gpu if gpus else args.agents
        cpus = args.cpus_per_job if args.cpus_per_job is not None else (4 * gpus or agents)
        if not 1 <= cpus <= MAX_CPUS_PER_JOB:
            raise UserError(f"--cpus-per-job={cpus}: expected 1 to {MAX_CPUS_PER_JOB} (the "
                            "cores of one node)")
        if args.gpus:
            raise UserError("--gpus picks GPUs of this machine; a job gets --gpus-per-job of "
                            "its node's")
        # Each counts agents of one kind only: the other was dropped without a word, so
        # `--pbs 1 --agents 4`, meant as 4 CPU agents, queued a GPU job (MetaCentrum's gpu
        # queue) of one agent
        if gpus and args.agents != 1:
            raise UserError(f"--agents {args.agents}: agents on the CPU, and the jobs ask for "
                            f"{gpus} GPU(s) each (--gpus-per-job, 1 unless given), one agent "
                            f"on each: give --gpus-per-job 0 for {args.agents} CPU agents a "
                            "job, or --agents-per-gpu N for N agents on each GPU")
        if not gpus and args.agents_per_gpu != 1:
            raise UserError(f"--agents-per-gpu {args.agents_per_gpu} with --gpus-per-job 0: a "
                            "CPU job runs --agents N agents")
        launch_args = (["--agents-per-gpu", str(args.agents_per_gpu)] if gpus
                       else ["--agents", str(args.agents)])
        for option, value in (("--count", args.count), ("--project", args.project),
                              ("--heartbeat", args.heartbeat),
                              ("--heartbeat-timeout", args.heartbeat_timeout),
                              ("--pack", None if args.pack in (None, "1") else args.pack)):
            if value:
                launch_args += [option, str(value)]
        return gpus, cpus, launch_args

    def container(self, image: str | None) -> Path | None:
        if not image:
            return None
        path = Path(image).resolve()
        if not os.path.isfile(path):  # False, not an error, for a name too long
            raise UserError(f"--container={image!r}: no such image file (build one with "
                            "`apptainer build sweep.sif docker-daemon://...`, see README.md, "
                            "Agents anywhere)")
        return path

    def queue(self, args: argparse.Namespace, gpus: int, walltime_s: int) -> str | None:
        """This scheduler's queue option, checked; the other scheduler's is refused."""
        for other in SCHEDULERS.values():
            if other is not self and getattr(args, other.queue_dest) is not None:
                raise UserError(f"{other.queue_option} is {other.title}'s; {self.title} "
                                f"takes {self.queue_option}")
        queue = getattr(args, self.queue_dest)
        # a directive holds it unquoted, and a leading - would read as an option (`-q -x`)
        if queue is not None and not re.fullmatch(r"\w[\w.@-]*", queue):
            raise UserError(f"{self.queue_option}={queue!r}: expected a name such as gpu or "
                            "gpu@pbs-m1.metacentrum.cz (letters, digits and . _ - @, not "
                            "starting with - or .)")
        return queue

    @staticmethod
    def account(account: str | None) -> str | None:
        """--account, checked: a directive holds it unquoted, and a leading - would read as
        an option of qsub's -A."""
        if account is not None and not re.fullmatch(r"\w[\w.@+-]*", account):
            raise UserError(f"--account={account!r}: expected an account name such as "
                            "proj-123 (letters, digits and . _ - @ +, not starting with - or .)")
        return account

    def setup_directives(self, setup: str | None
                         ) -> tuple[list[list[str]], list[tuple[int, str]]]:
        """This scheduler's directives in a --setup text: `jobs.setup_directives`."""
        return setup_directives(setup, self.directive, self.indented_directives)

    def check_local_sweep(self, count: int) -> str | None:
        """UserError when `count` jobs cannot share one local sweep; a note (one line) when
        they share it only in part."""
        return None

    def check_program(self, where: str, sweep_config: dict) -> None:
        """UserError when the jobs cannot run the program of `sweep_config` (named `where`);
        asked only where `checks_program`."""

    def queued_behind(self, local_sweep: Path | None, jobs_dir: Path) -> list[str]:
        """The jobs of earlier submissions (scripts under `jobs_dir`) that a new job on
        `local_sweep` is to be queued behind: none unless the scheduler's jobs wait for each
        other on a local sweep."""
        return []

    def sweep_in_job(self, local_sweep: Path) -> str:
        """The launcher's target for a local sweep, as the job sees it."""
        return str(local_sweep)

    # --- JobSpec -> script text -> submit command ------------------------------------------
    def scripts(self, spec: JobSpec) -> dict[str, str]:
        """File name -> job-script text."""
        raise NotImplementedError

    def render(self, spec: JobSpec, **values) -> str:
        """This scheduler's template filled with the spec (every value shell-quoted)."""
        return render(self.template, **vars(spec), **values,
                      stop_after_s=spec.stop_after_s,
                      margin_s=spec.walltime_s - spec.stop_after_s,
                      launch=["-m", "agent.launch", spec.sweep, *spec.launch_args],
                      image_python=IMAGE_PYTHON, python_bin=str(Path(spec.python).parent))

    def submit_argv(self, command: str, script: Path, spec: JobSpec) -> list[str]:
        return [command, str(script)]

    def job_id(self, stdout: str) -> str:
        return stdout.strip()


GPU_QUEUE_S = 24 * 3600  # the longest job MetaCentrum's `gpu` queue takes


class PBS(Scheduler):
    """PBS Pro (MetaCentrum): one script per job; each job works in $SCRATCHDIR on a copy of
    the code and of a local sweep, merges the runs it ended into the sweep's store as it goes
    (store_copy.py), and copies logs back when it ends."""
    kind, title, command, template = "pbs", "PBS", "qsub", "pbs.sh"
    directive, indented_directives = "#PBS", True  # OpenPBS's pbs_ispbsdir skips spaces
    queue_option = "--queue"
    default_scratch = "20gb"
    watch = "qstat -u $USER"
    status_note = (f" (every {MERGE_EVERY_S} s: the job merges its copy in scratch into "
                   "the sweep's store)")
    # Left out of the code copied to scratch: environments, results and history.
    NOT_CODE = ("./.venv", "./data", "./wandb", "./reports", "./.git", "./.pytest_cache",
                "./.ruff_cache", "./.hypothesis", "__pycache__", "*.sif", ".env")
    # data/ parts not copied to scratch: the sweep and the checkpoints are handled on their
    # own, logs and job files are outputs.
    NOT_INPUT_DATA = ("sweeps", "runs", "logs", "jobs")

    def queue(self, args: argparse.Namespace, gpus: int, walltime_s: int) -> str | None:
        """MetaCentrum's GPU queues where GPUs are asked for and no --queue given: `gpu`
        takes jobs of up to 24 h, `gpu_long` up to 336 h (MetaCentrum's GPU clusters page);
        qsub refuses a walltime over the queue's."""
        queue = super().queue(args, gpus, walltime_s)
        if queue is not None or not gpus:
            return queue
        return "gpu_long" if walltime_s > GPU_QUEUE_S else "gpu"

    def check_local_sweep(self, count: int) -> str | None:
        # Two jobs on copies of one store would train the same configurations, and
        # running them one after another silently is not what N jobs promise.
        if count > 1:
            raise UserError(f"--pbs {count} on a local sweep: its store is one SQLite file for "
                            "one machine, and PBS jobs may land on different nodes; use --pbs 1 "
                            "--gpus-per-job K (K agents on one node) or a W&B sweep (wandb "
                            "sweep FILE)")
        return None

    checks_program = True

    def check_program(self, where: str, sweep_config: dict) -> None:
        # A job's agents run in $SCRATCHDIR on a copy of this project (the code, without
        # NOT_CODE): a relative program path is found there only if it is a file of the
        # project; an absolute one is read where it is (shared storage), as given
        from agent.sweep.program import runs_our_trainer

        program = sweep_config.get("program")
        if not isinstance(program, str) or runs_our_trainer(sweep_config):
            return
        path = Path(program)
        a_file = path.suffix == ".py" or len(path.parts) > 1  # not a module for `-m`
        if a_file and not path.is_absolute() and not (CODE_DIR / path).is_file():
            raise UserError(f"{where}: program {program!r} is no file of this project "
                            f"({CODE_DIR}), and a PBS job runs from a copy of the project in "
                            "$SCRATCHDIR: put the program in the project's folder, give its "
                            "absolute path on storage the nodes share, or use --slurm (its "
                            "jobs run in the submit directory)")

    def sweep_in_job(self, local_sweep: Path) -> str:
        return f"data/sweeps/{local_sweep.name}"  # the copy in scratch

    def queued_behind(self, local_sweep: Path | None, jobs_dir: Path) -> list[str]:
        """The jobs of earlier submissions on this local sweep (their pbs-1.sh names its
        directory) that qstat still knows as queued, running or held: a second job would wait
        for the first inside its own walltime, its node and GPUs idle (store_copy's
        wait_for_other_job); queued behind them (afterany) it starts once they end and goes
        on with the sweep. [] for a W&B sweep, or without qstat (no way to tell)."""
        qstat = shutil.which("qstat")
        if local_sweep is None or qstat is None:
            return []
        wanted = f"sweep_dir={shell_word(local_sweep)}"
        earlier = []
        for script in sorted(jobs_dir.glob("*/pbs-1.sh")):
            if script.with_suffix(".out").exists():
                continue  # PBS writes a job's log as it ends: no qstat for each one of a study
            try:
                if wanted in script.read_text().splitlines():
                    earlier += (script.parent / "job_ids.txt").read_text().split()
            except (OSError, UnicodeDecodeError):  # a submission refused, or not ours
                continue
        alive = []
        for job in dict.fromkeys(earlier):
            try:  # qstat ends with 0 for a job it lists; ended or unknown ones are errors
                listed = subprocess.run([qstat, job], capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if listed.returncode == 0:
                alive.append(job)
        return alive

    def submit_argv(self, command: str, script: Path, spec: JobSpec) -> list[str]:
        # on the command line, not in the script: resubmitted by hand later, it would name
        # jobs long gone
        after = ["-W", f"depend=afterany:{':'.join(spec.after)}"] if spec.after else []
        return [command, *after, str(script)]

    def scripts(self, spec: JobSpec) -> dict[str, str]:
        return {f"pbs-{index}.sh": self.render(
                    spec, index=index, walltime=format_hms(spec.walltime_s),
                    mem=self.size(spec.mem_mb),
                    scratch=self.size(spec.scratch_mb) if spec.scratch_mb else None,
                    not_code=self.NOT_CODE, not_input_data=self.NOT_INPUT_DATA,
                    merge_every_s=MERGE_EVERY_S)
                for index in range(1, spec.jobs + 1)}

    @staticmethod
    def size(mb: int) -> str:
        return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


class SLURM(Scheduler):
    """SLURM: one job array of N tasks, each running agents in the submit directory (shared
    storage) on the sweep itself; tasks of a local sweep stay on one node."""
    kind, title, command, template = "slurm", "SLURM", "sbatch", "slurm.sh"
    directive = "#SBATCH"  # at the start of its line (sbatch's _opt_batch_script)
    queue_option = "--partition"
    watch = "squeue --me"

    def check_local_sweep(self, count: int) -> str | None:
        # Not refused: tasks that share a node (a lab server, a one-node cluster) share the
        # sweep. On a multi-node cluster the others leave with exit 3 (templates/slurm.sh);
        # said before they queue, not found out in their logs.
        if count == 1:
            return None
        return (f"note: --slurm {count} on a local sweep: its store is one SQLite file on one "
                "node, so array tasks that land on another node than the first leave at once "
                "(exit 3, said in their logs); --slurm 1 --gpus-per-job K runs K agents on one "
                "node, and a W&B sweep (wandb sweep FILE) spreads over nodes")

    def scripts(self, spec: JobSpec) -> dict[str, str]:
        return {"slurm.sh": self.render(spec, sbatch_options=self.options(spec))}

    def options(self, spec: JobSpec) -> list[str]:
        """sbatch's options for `spec`: the script's #SBATCH lines, and sbatch's command line
        too. sbatch's input environment variables (SBATCH_TIMELIMIT, SBATCH_PARTITION,
        SBATCH_ACCOUNT, SBATCH_MEM_PER_NODE, SBATCH_ARRAY_INX, ...: `man sbatch`) override a
        script's directives, and its command line overrides them: so the jobs get what the
        script says (a --walltime given is the job's time limit) whatever the shell exports.
        Every value is a word no directive needs to quote (checked in `job_spec`)."""
        log = f"{spec.job_dir}/slurm-%A_%a.out"
        options = [f"--job-name={spec.name}", f"--array=0-{spec.jobs - 1}", "--nodes=1",
                   "--ntasks=1", f"--cpus-per-task={spec.cpus}", f"--mem={spec.mem_mb}M",
                   f"--time={self.time(spec.walltime_s)}"]
        options += [f"--gres=gpu:{spec.gpus}"] if spec.gpus else []
        options += [f"--tmp={spec.scratch_mb}M"] if spec.scratch_mb else []
        options += [f"--partition={spec.queue}"] if spec.queue else []
        options += [f"--account={spec.account}"] if spec.account else []
        # both streams into the one log the submission names (SBATCH_ERROR would split them),
        # appended to: a task requeued (preemption, `scontrol requeue`) writes it again, and
        # the site's default (JobFileAppend=0) empties what its first start printed
        return [*options, f"--output={log}", f"--error={log}", "--open-mode=append",
                f"--chdir={spec.submit_dir}"]

    def submit_argv(self, command: str, script: Path, spec: JobSpec) -> list[str]:
        return [command, "--parsable", *self.options(spec), str(script)]

    def job_id(self, stdout: str) -> str:
        return stdout.strip().split(";")[0]  # --parsable: id[;cluster]

    @staticmethod
    def time(seconds: int) -> str:
        """SLURM's days-hours:minutes:seconds (its H:MM:SS form is meant for under a day)."""
        days, rest = divmod(seconds, 86400)
        return f"{days}-{format_hms(rest).zfill(8)}" if days else format_hms(seconds)


SCHEDULERS: dict[str, Scheduler] = {scheduler.kind: scheduler for scheduler in (PBS(), SLURM())}

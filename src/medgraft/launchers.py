"""Where a command's jobs run: here in turn, or as a Slurm job array through submitit.

A job is a medgraft command line (``["train", "--config", ...]``) with a name and a check of
its result on disk, so that a rerun does only what is missing: the local launcher runs each
unfinished job in this process; the Slurm one submits the unfinished ones as one job array
(each job's log in ``OUTPUT/slurm/``, their ids in ``OUTPUT/slurm/jobs.json``), waits for
them (or, ``--no-wait``, prints their ids and returns: the same command later gathers, and
submits nothing while they are pending or running) and reports each job that did not finish
with its state and log. Both pin the same torch thread count, so a job computes the same
scores wherever it ran. ``medgraft predict`` splits its inputs into shards, one task each.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from medgraft.config.flags import as_flags
from medgraft.config.schema import LaunchOptions, PredictLaunchOptions, PredictOptions
from medgraft.errors import MedgraftError
from medgraft.files import atomic_write_text

if TYPE_CHECKING:
    from medgraft.inference.batch import BatchReport

Runner = Callable[[list[str]], None]
"""Runs one medgraft command line in this process (``medgraft.cli.run_command``)."""

SLURM_FOLDER = "slurm"
JOBS_FILE = "jobs.json"
CASES_PER_SHARD = 25
"""``predict --launcher slurm`` without ``--shards``: one array task per this many inputs."""
ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT",
}  # fmt: skip
"""Slurm job states of a job that may still finish: a rerun waits for it, submitting nothing."""
POLL_SECONDS = (1.0, 30.0)
"""First and longest pause between two looks at the jobs' states (one ``squeue`` call each)."""


@dataclass(frozen=True)
class Job:
    """A medgraft command line to run, named uniquely within its launch, and whether its
    result is already on disk (a finished run, the masks of a shard)."""

    name: str
    argv: list[str]
    finished: Callable[[], bool]


@dataclass
class JobFailure:
    name: str
    job_id: str
    state: str
    log: Path
    error: str = ""

    def line(self) -> str:
        error = f": {self.error}" if self.error else ""
        return f"job {self.job_id} ({self.name}) {self.state}{error}; log: {self.log}"


@dataclass
class LaunchReport:
    """What became of a launch's jobs: those still pending or running (``--no-wait``, by Slurm
    job id) and those that ended without their result."""

    waiting: list[str] = field(default_factory=list)
    failed: list[JobFailure] = field(default_factory=list)

    def raise_failures(self) -> None:
        if self.failed:
            lines = "\n".join(failure.line() for failure in self.failed)
            raise MedgraftError(f"{len(self.failed)} job(s) did not finish:\n{lines}")


def job_threads(options: LaunchOptions) -> int:
    """The torch threads of every job: ``--threads``, else ``--cpus``; run here, at most this
    machine's cores (more threads than cores only slow a job down)."""
    if options.threads is not None:
        return options.threads
    if options.launcher == "local":
        return min(options.cpus, os.cpu_count() or 1)
    return options.cpus


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``threads`` while a job runs (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_job(runner: Runner, argv: list[str], threads: int) -> None:
    """One job, here or in a Slurm job (submitit pickles this function with its arguments)."""
    print("medgraft " + " ".join(argv), flush=True)
    with pinned_threads(threads):
        runner(argv)


class Launcher(Protocol):
    def run(self, jobs: list[Job]) -> LaunchReport:
        """Run (or submit) the unfinished ``jobs``; report those that did not finish."""
        ...


@dataclass
class LocalLauncher:
    """Each unfinished job in turn, in this process: an error stops the launch, as one
    command's error would."""

    runner: Runner
    threads: int

    def run(self, jobs: list[Job]) -> LaunchReport:
        for job in jobs:
            if not job.finished():
                run_job(self.runner, job.argv, self.threads)
        return LaunchReport()


def make_launcher(options: LaunchOptions, output: Path, runner: Runner) -> Launcher:
    """The launcher ``options`` choose, for a command writing into ``output``."""
    if options.launcher == "slurm":
        return SlurmLauncher(Path(output) / SLURM_FOLDER, options, runner)
    return LocalLauncher(runner, job_threads(options))


@dataclass
class SlurmLauncher:
    """The unfinished jobs as one Slurm job array (submitit), their ids kept in ``folder``.

    Whether a job is still pending or running is the controller's word (``squeue``, which
    lists each task of an array): ``sacct`` hears of a job seconds later, and of an array task
    cancelled before it started, never. ``sacct`` names the state a job ended in.
    """

    folder: Path
    options: LaunchOptions
    runner: Runner

    def run(self, jobs: list[Job]) -> LaunchReport:
        from medgraft.runtime import stdout

        missing = [job for job in jobs if not job.finished()]
        records, queued = self._records(), queue_states()
        active = {job.name: self._attach(job, records, queued) for job in missing}
        to_submit = [job for job in missing if active[job.name] is None]
        active |= self._submit(to_submit, records)
        if not self.options.wait:
            ids = [active[job.name].job_id for job in missing]
            if ids:
                stdout.print(
                    f"{len(ids)} Slurm job(s) pending or running: {' '.join(ids)}; the same "
                    "command gathers them once they have finished"
                )
            return LaunchReport(waiting=ids)
        last_seen = wait_for([active[job.name].job_id for job in missing])
        return LaunchReport(
            failed=[
                self._failure(job, active[job.name], last_seen)
                for job in missing
                if not job.finished()
            ]
        )

    def _records(self) -> dict[str, dict]:
        path = self.folder / JOBS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _attach(self, job: Job, records: dict[str, dict], queued: dict[str, str]):
        """The Slurm job last submitted for ``job`` while it is still pending or running."""
        import submitit

        record = records.get(job.name)
        state = queued.get(record["job_id"]) if record else None
        if state not in ACTIVE_STATES:
            return None
        if record["argv"] != job.argv:
            raise MedgraftError(
                f"{self.folder / JOBS_FILE}: Slurm job {record['job_id']} ({job.name}) is still "
                f"{state.lower()} with other options; wait for it or cancel it (scancel "
                f"{record['job_id']})"
            )
        return submitit.SlurmJob(folder=self.folder / "%j", job_id=record["job_id"])

    def _submit(self, jobs: list[Job], records: dict[str, dict]) -> dict:
        """``jobs`` as one array; their ids recorded before anything else can fail."""
        from medgraft.runtime import console

        if not jobs:
            return {}
        import submitit
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        executor = submitit.SlurmExecutor(folder=self.folder / "%j", python=sys.executable)
        executor.update_parameters(**self._sbatch_parameters())
        threads = job_threads(self.options)
        try:
            submitted = executor.map_array(
                run_job, [self.runner] * len(jobs), [job.argv for job in jobs],
                [threads] * len(jobs),
            )  # fmt: skip
        except (FailedJobError, FailedSubmissionError) as exc:
            raise MedgraftError(f"sbatch refused the jobs: {str(exc).strip()}") from None
        for job, slurm_job in zip(jobs, submitted, strict=True):
            records[job.name] = {"job_id": slurm_job.job_id, "argv": job.argv}
        atomic_write_text(self.folder / JOBS_FILE, json.dumps(records, indent=1))
        console.print(
            f"submitted {len(jobs)} Slurm job(s): "
            + ", ".join(f"{s.job_id} ({j.name})" for j, s in zip(jobs, submitted, strict=True))
            + f"; logs in {self.folder}"
        )
        return {job.name: slurm_job for job, slurm_job in zip(jobs, submitted, strict=True)}

    def _sbatch_parameters(self) -> dict:
        options = self.options
        parameters = {
            "job_name": "medgraft",
            "time": options.time,
            "cpus_per_task": options.cpus,
            "stderr_to_stdout": True,
        }
        if options.partition:
            parameters["partition"] = options.partition
        if options.gpus:
            parameters["gpus_per_node"] = options.gpus
        if options.mem_gb:
            parameters["mem"] = f"{options.mem_gb}GB"
        return parameters

    def _failure(self, job: Job, slurm_job, last_seen: dict[str, str]) -> JobFailure:
        """Why ``job`` has no result: the state it ended in (``sacct``'s, else the last the
        controller showed) and, when it raised, its error's last line."""
        state = slurm_job.get_info(mode="force").get("State", "").split(" ")[0]
        state = state or last_seen.get(slurm_job.job_id, "ENDED")
        error = ""
        if slurm_job.paths.result_pickle.exists():
            exception = slurm_job.exception()
            lines = [line for line in str(exception or "").splitlines() if line.strip("- ")]
            error = next((line for line in reversed(lines) if "Error" in line), "")
        return JobFailure(job.name, slurm_job.job_id, state, slurm_job.paths.stdout, error.strip())


def queue_states() -> dict[str, str]:
    """The state of each of this user's jobs the controller still lists, by job id (an array's
    tasks one by one, ``12_3``)."""
    import subprocess

    command = ["squeue", "--noheader", "--array", "--me", "--format", "%i|%T"]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MedgraftError(f"--launcher slurm: cannot run squeue ({exc})") from None
    if answer.returncode != 0:
        raise MedgraftError(f"--launcher slurm: squeue failed: {answer.stderr.strip()}")
    return dict(line.split("|", 1) for line in answer.stdout.split())


def wait_for(job_ids: list[str]) -> dict[str, str]:
    """Until none of ``job_ids`` is pending or running (one ``squeue`` per look, pauses growing
    to 30 s); the last state the controller showed of each."""
    pause, last_seen = POLL_SECONDS[0], {}
    while True:
        queued = queue_states()
        last_seen |= {job_id: queued[job_id] for job_id in job_ids if job_id in queued}
        if not any(queued.get(job_id) in ACTIVE_STATES for job_id in job_ids):
            return last_seen
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_SECONDS[1])


def shard_count(options: PredictLaunchOptions, inputs: int) -> int:
    """``--shards``, else one per ``CASES_PER_SHARD`` inputs; never more than the inputs."""
    wanted = options.shards or math.ceil(inputs / CASES_PER_SHARD)
    return max(1, min(wanted, inputs))


def predict_in_shards(
    models: list[Path],
    input_path: Path,
    output: Path,
    typed: dict,
    launch: PredictLaunchOptions,
    runner: Runner,
) -> tuple[BatchReport | None, LaunchReport]:
    """``medgraft predict`` as shards of the inputs, one job each, all writing into ``output``;
    then one ``summary.csv`` and ``report.html`` from the shards' records. ``typed`` are the
    prediction flags typed, passed on to every shard."""
    from medgraft.inference.batch import input_cases, merge_shards, shard_finished

    input_path, output = Path(input_path).resolve(), Path(output).resolve()
    inputs = input_cases(input_path)
    count = shard_count(launch, len(inputs))
    shared = [word for model in models for word in ("--model", str(Path(model).resolve()))]
    shared += [
        "--input",
        str(input_path),
        "--output",
        str(output),
        *as_flags(typed, PredictOptions),
    ]
    jobs = [
        Job(
            f"shard-{index}-of-{count}",
            ["predict", "--shard", f"{index}/{count}", *shared],
            lambda index=index: shard_finished(output, (index, count), inputs),
        )
        for index in range(count)
    ]
    launched = make_launcher(launch, output, runner).run(jobs)
    if launched.waiting:
        return None, launched
    try:
        return merge_shards(output, inputs, count), launched
    except MedgraftError:
        launched.raise_failures()  # the jobs that wrote no record, with their logs
        raise

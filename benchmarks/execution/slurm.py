"""`depthbench run --executor slurm`: every missing run is one element of a Slurm job array, through submitit.

The results directory is the single source of truth, as for local runs: a job trains (checkpointing every epoch
beside its record), writes its record atomically and exits; a rerun of the same command submits only what has no
record. Nothing here needs Slurm's accounting (`sacct`): while waiting, a run is done when its record is on disk, and
a job that has left `squeue` without writing one is either cancelled (no record: a rerun resumes it from its last
epoch) or failed (a failed record with Slurm's state, reason and exit code from `scontrol show job`, the job's error
and the path of its log).

Preemption and time limits: submitit asks Slurm for a signal (USR2) before the limit and on it requeues the job
(the job function is `Checkpointable`); a job requeued by Slurm itself (preemption with requeue) or resubmitted after
`scancel` starts the same run again, and training continues from the checkpoint of its last complete epoch.

Bookkeeping beside each record `seed<N>.json` (no record glob matches these): `seed<N>.checkpoint.pt` (training
state) and `seed<N>.slurm` (JSON: the job id and its log paths, written at submission, removed with the record).
submitit's own files (sbatch scripts, pickles, logs `<job>_0_log.out/.err`) go to `<results>/.slurm/` by default.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
import torch

import benchmarks
from benchmarks.data.tasks import get_task
from benchmarks.execution.cluster import LOGS, SlurmSettings, job_marker, read_marker, scontrol_job, squeue_states
from benchmarks.execution.partition import fit_to_partition, hopeless
from benchmarks.execution.preflight import pick_device
from benchmarks.execution.runs import Job, RunBook, RunSettings, checkpoint_for, record_run, run_one
from benchmarks.io import write_atomic
from benchmarks.protocols import Protocol
from benchmarks.store.provenance import now, retyped_command, run_provenance
from benchmarks.store.records import Record, RecordError, load_record, record_path, save_record


class SlurmRun(submitit.helpers.Checkpointable):
    """One run inside a Slurm job: what the local runner does for it, then the record written atomically.

    `Checkpointable`: on submitit's preemption/time-limit signal the job is requeued with the same arguments, and the
    new attempt continues the training from the checkpoint of its last epoch."""

    def __init__(self, protocol: Protocol, results_dir: Path, data_dir: str | None, device: str,
                 keep_checkpoints: bool, command: str) -> None:
        self.protocol, self.results_dir, self.data_dir = protocol, Path(results_dir), data_dir
        self.device, self.keep_checkpoints, self.command = device, keep_checkpoints, command

    def __call__(self, task_name: str, model_name: str, seed: int) -> tuple[str, str, str | None]:
        path = record_path(self.results_dir, model_name, task_name, self.protocol.task_hash(task_name), seed)
        info = job_info()
        done = _record_of_job(path, self.results_dir, info["job_id"])
        if done is not None:  # requeued after this very job wrote the record: nothing left to do
            return str(path), done.status, done.error
        # Slurm sends SIGTERM before it kills a job (scancel, the time limit itself, a preemption): stop at once, as
        # the last epoch is checkpointed, rather than compute for KillWait more seconds (submitit ignores SIGTERM and
        # requeues on its own signal, USR2, which it still handles).
        signal.signal(signal.SIGTERM, _stop)
        if "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))  # the CPUs Slurm gave the job
        device = pick_device(self.device, self.protocol)
        task = get_task(task_name)
        data = task.load(self.data_dir, limit=self.protocol.data_limit)
        print(f"depthbench: {task_name} {model_name} seed {seed} in Slurm job {info['job_id']} on {info['node']} "
              f"(attempt {info['restarts'] + 1}); record: {path}", flush=True)
        record = run_one(self.protocol, task, data, model_name, seed, device, checkpoint=checkpoint_for(path))
        record.provenance["slurm"] = info
        record.provenance["command"] = self.command  # what was typed on the login node, not submitit's entry point
        if record.status == "failed":
            record.error = f"{record.error} (Slurm job {info['job_id']}, log {info['stderr']})"
        record_run(RunSettings(self.protocol, self.results_dir, keep_checkpoints=self.keep_checkpoints), record)
        job_marker(path).unlink(missing_ok=True)
        return str(path), record.status, record.error


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def job_info() -> dict[str, Any]:
    """Which Slurm job this is, where it logs, and how often it has been restarted (requeue, preemption)."""
    env = submitit.JobEnvironment()
    return {"job_id": env.job_id, "node": socket.gethostname(), "stdout": str(env.paths.stdout),
            "stderr": str(env.paths.stderr), "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}


def _record_of_job(path: Path, root: Path, job_id: str) -> Record | None:
    try:
        record = load_record(path, root)
    except RecordError:
        return None
    return record if record.provenance.get("slurm", {}).get("job_id") == job_id else None


def _executor(settings: SlurmSettings, folder: Path, device: torch.device) -> submitit.AutoExecutor:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise RuntimeError("--executor slurm: Slurm's sbatch/srun are not on PATH here; run from a Slurm login node, "
                           "or use the local executor (the default)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=settings.max_timeouts,
                                     slurm_python=shlex.quote(sys.executable))
    # The job imports the same depthbench as this process: its source root first on PYTHONPATH, and the job starts
    # in this directory (relative paths in a setup line mean what they mean here).
    source_root = Path(benchmarks.__file__).resolve().parents[1]
    setup = [f"export PYTHONPATH={shlex.quote(str(source_root))}${{PYTHONPATH:+:$PYTHONPATH}}", *settings.setup]
    executor.update_parameters(
        name="depthbench", timeout_min=settings.time_minutes, cpus_per_task=settings.cpus_per_job,
        gpus_per_node=settings.gpus(device) or None, mem_gb=settings.mem_gb, slurm_partition=settings.partition,
        slurm_array_parallelism=settings.array_parallelism, slurm_setup=setup,
        slurm_additional_parameters={"chdir": os.getcwd(), **settings.sbatch})
    return executor


class SlurmExecutor:
    """`depthbench run --executor slurm` (the Executor of benchmarks/execution/executors.py): the jobs go to Slurm as
    one job array, then, with `settings.wait`, are followed until each has a record, was cancelled, or failed."""

    def __init__(self, settings: SlurmSettings) -> None:
        self.settings = settings

    def run(self, jobs: Sequence[Job], book: RunBook) -> None:
        """Submit `jobs` as one job array (runs already queued or running in Slurm are not submitted twice), then,
        with `settings.wait`, follow them until each has a record, was cancelled, or failed."""
        # The parent loads each task once first: the jobs then read the caches it filled
        todo = [job for job in jobs if book.data_for(job.task) is not None]
        settings, protocol, device = self.settings, book.settings.protocol, book.settings.device
        data_dir = book.settings.data_dir
        results_dir = Path(book.settings.results_dir).resolve()
        live = squeue_states()
        queued, submit = [], []
        for job in todo:
            marker = read_marker(job.path)
            if marker and live is not None and marker.get("job_id") in live:
                queued.append((job, marker))
            else:
                submit.append(job)
        for job, marker in queued:
            book.bar.say(f"{job.label} is already in Slurm as job {marker['job_id']} "
                         f"({live[marker['job_id']][0].lower()}); not submitted again")
        follow: list[tuple[str, Job, dict]] = [(marker["job_id"], job, marker) for job, marker in queued]
        if submit:
            settings = fit_to_partition(settings, device, book.bar.say)  # a request the partition cannot meet
            # waits forever
            folder = Path(settings.logs or results_dir / LOGS).resolve()
            run = SlurmRun(protocol, results_dir, None if data_dir is None else str(Path(data_dir).resolve()),
                           str(device), book.settings.keep_checkpoints, retyped_command(sys.argv))
            try:
                array = _executor(settings, folder, device).map_array(
                    run, [j.task.name for j in submit], [j.model for j in submit], [j.seed for j in submit])
            except submitit.core.utils.FailedJobError as error:
                raise RuntimeError(f"sbatch refused the job array: {str(error).strip().splitlines()[-1]} (check "
                                   "--slurm-partition, --slurm-option and the cluster's limits)") from None
            for slurm_job, job in zip(array, submit):
                marker = {"job_id": slurm_job.job_id, "stdout": str(slurm_job.paths.stdout),
                          "stderr": str(slurm_job.paths.stderr), "submitted": now()}
                write_atomic(job_marker(job.path), json.dumps(marker, indent=1) + "\n")
                follow.append((slurm_job.job_id, job, marker))
            book.bar.say(f"submitted {len(array)} runs to Slurm as job array {array[0].job_id.split('_')[0]} "
                         f"({settings.describe(device)}); logs in {folder}")
        if not settings.wait:
            book.summary.submitted.extend(job.path for _, job, _ in follow)
            return
        try:
            _follow(follow, book, results_dir, protocol, settings.poll_seconds)
        except KeyboardInterrupt:
            book.bar.say("stopped waiting; the submitted jobs go on in Slurm and write their records: `depthbench "
                         "status` follows them, `scancel --name depthbench` cancels them")
            raise


def _follow(follow: list[tuple[str, Job, dict]], book: RunBook, results_dir: Path, protocol: Protocol,
            poll_seconds: float) -> None:
    """Wait until every followed run has a record from its job, or its job has left the queue without one."""
    summary, bar = book.summary, book.bar
    pending = {job_id: (job, marker) for job_id, job, marker in follow}
    started: set[str] = set()
    gone_once: set[str] = set()  # absent from squeue at one poll: concluded at the next (a record may be landing)
    told: set[str] = set()  # pending reasons already said aloud
    while pending:
        live = squeue_states(list(pending))
        for job_id, (job, marker) in list(pending.items()):
            path, label = job.path, job.label
            state, reason = (live or {}).get(job_id, ("", ""))
            if state == "RUNNING" and job_id not in started:
                started.add(job_id)
                bar.start(label)
            record = _record_of_job(path, results_dir, job_id)
            if record is not None:
                book.finished(job, path, record.status, record.error, record.provenance.get("phase_seconds", {}))
                del pending[job_id]
            elif state == "PENDING" and (never := hopeless(reason)) is not None:
                del pending[job_id]
                summary.unfinished[label] = _give_up(job_id, path, reason, *never)
                bar.say(f"{label}: {summary.unfinished[label]}")
            elif state == "PENDING" and reason not in _ROUTINE and reason not in told:
                told.add(reason)
                bar.say(f"Slurm keeps {label} (job {job_id}) pending for reason {reason}; waiting for it to lift "
                        "(`squeue --me` shows all)")
            elif live is not None and job_id not in live:
                if job_id not in gone_once:
                    gone_once.add(job_id)
                    continue
                del pending[job_id]
                info = scontrol_job(job_id)
                if info.get("JobState", "").startswith("CANCELLED"):
                    summary.unfinished[label] = (f"Slurm job {job_id} was cancelled; rerun the same command to "
                                                 "resume it from its last epoch")
                    bar.say(f"{label}: {summary.unfinished[label]}")
                    continue
                failed = _failed_record(protocol, job, job_id, info, marker)
                save_record(results_dir, failed)
                job_marker(path).unlink(missing_ok=True)
                book.finished(job, path, "failed", failed.error, {})
        if pending:
            time.sleep(poll_seconds)


# Pending reasons of a queue at work, not worth a line each
_ROUTINE = {"", "None", "Priority", "Resources", "BeginTime", "Dependency", "JobArrayTaskLimit", "Cleaning", "Prolog"}


def _give_up(job_id: str, path: Path, reason: str, meaning: str, flags: str) -> str:
    """Cancel a job that can never start (no record, no marker: the same command resubmits it) and say why."""
    try:
        done = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
        cancelled = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        cancelled = False
    if not cancelled:  # still queued: keep the marker, so that a rerun does not submit the run a second time
        return (f"Slurm job {job_id} can never start: pending for reason {reason} ({meaning}); cancelling it "
                f"failed, so `scancel {job_id}` it, change {flags}, and rerun the same command")
    job_marker(path).unlink(missing_ok=True)
    return (f"Slurm job {job_id} could never start: pending for reason {reason} ({meaning}); it was cancelled: "
            f"change {flags} and rerun the same command")


def _failed_record(protocol: Protocol, job: Job, job_id: str, info: dict[str, str], marker: dict[str, Any]) -> Record:
    """The record of a job that ended without writing one (killed, out of memory, crashed interpreter, node failure,
    a Python error outside the run): Slurm's state, reason and exit code, the job's last error line and its log. The
    checkpoint is kept: `--retry-failed` continues from it."""
    state = info.get("JobState", "unknown (no longer known to Slurm)")
    reason, code = info.get("Reason", "unknown"), info.get("ExitCode", "unknown")
    last = _job_error(marker)
    error = (f"Slurm job {job_id} ended {state} without a record (reason {reason}, exit code {code})"
             f"{': ' + last if last else ''}; log {marker.get('stderr')}")
    record = Record(model=job.model, task=job.task.name, seed=job.seed, protocol=protocol.header(job.task.name),
                    status="failed", error=error, flags=["error"])
    record.provenance = {**run_provenance(torch.device("cpu"), marker.get("submitted") or now()),
                         "recorded_by": "the submitting depthbench: the job left no record",
                         "slurm": {"job_id": job_id, "state": state, "reason": reason, "exit_code": code,
                                   "stdout": marker.get("stdout"), "stderr": marker.get("stderr")}}
    return record


def _job_error(marker: dict[str, Any]) -> str:
    """The job's own last word: the last line of its stderr that is not Slurm's or submitit's bookkeeping (a Python
    exception outside the run ends with its message there; a hard crash may leave nothing)."""
    try:
        text = Path(marker.get("stderr", "")).read_text(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith(("submitit ", "srun: ", "slurmstepd"))]
    return lines[-1] if lines else ""

"""Slurm without submitit: the settings of `depthbench run --executor slurm` (defaults, a TOML config, flags) and
what depthbench reads of a cluster's state (`squeue`, `scontrol show job`; never `sacct`, which needs accounting).

Kept apart from `slurm.py` so that `depthbench status` and the command line's options load neither submitit nor
torch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

LOGS = ".slurm"  # submitit's folder, under the results directory unless `logs` says otherwise


@dataclass(frozen=True)
class SlurmSettings:
    """How each run is submitted. The defaults (docs/cluster.md, `depthbench run --help`) suit one small model per GPU;
    `--slurm-config FILE` (a TOML file with a [slurm] table of these names) and the --slurm-* flags change them."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_job: int | None = None  # None: 1 when the tier runs on CUDA, 0 on the CPU
    cpus_per_job: int = 4
    time_minutes: int = 240  # per job; a run that needs longer is requeued from its checkpoint (max_timeouts)
    array_parallelism: int = 64  # array elements running at once
    mem_gb: float | None = None  # None: the partition's default
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch options, e.g. {"account": "lab", "qos": "x"}
    setup: tuple[str, ...] = ()  # shell lines run in the job before Python (module load, source venv/bin/activate)
    logs: Path | None = None  # None: <results>/.slurm
    max_timeouts: int = 10  # requeues after hitting the time limit; preemptions do not count
    wait: bool = True  # wait for the jobs and report as a local run does; False: submit and return
    poll_seconds: float = 5.0  # how often a waiting `depthbench run` looks at the store and squeue
    # the names above that the user chose (--slurm-config, flags): a chosen value the partition cannot give is an
    # error naming its flag, a default is lowered to what the partition gives (partition.fit_to_partition)
    chosen: frozenset[str] = frozenset()

    def gpus(self, device: torch.device) -> int:
        return self.gpus_per_job if self.gpus_per_job is not None else int(device.type == "cuda")

    def describe(self, device: torch.device) -> str:
        extra = "".join(f", --{k}={v}" for k, v in sorted(self.sbatch.items()))
        memory = f", {self.mem_gb:g} GB" if self.mem_gb else ""
        return (f"partition {self.partition or '(default)'}, {self.gpus(device)} GPU and {self.cpus_per_job} CPUs "
                f"per job{memory}, {self.time_minutes} min, at most {self.array_parallelism} at once{extra}")


_KEYS = {f.name for f in fields(SlurmSettings)} - {"wait", "chosen"}


def load_settings(config: Path | None = None, **flags: Any) -> SlurmSettings:
    """Settings from the defaults, then `config` (TOML, a [slurm] table), then the flags that were given (None: not
    given). Unknown keys and wrong types are errors naming the file and the valid keys."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            table = tomllib.loads(Path(config).read_text(encoding="utf-8")).get("slurm")
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"--slurm-config {config}: {error}") from None
        if not isinstance(table, dict):
            raise ValueError(f"--slurm-config {config}: no [slurm] table; write e.g.\n[slurm]\npartition = \"gpu\"\n"
                             "time_minutes = 240")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ValueError(f"--slurm-config {config}: unknown key(s) {', '.join(unknown)}; valid keys: "
                             f"{', '.join(sorted(_KEYS))}")
        values.update(table)
    values.update({key: value for key, value in flags.items() if value is not None})
    where = f" (in {config} or the flags)" if config else ""
    if not isinstance(values.get("sbatch", {}), dict):
        raise ValueError(f"slurm sbatch options must be a table of name = \"value\" pairs, got "
                         f"{values['sbatch']!r}{where}")
    if not isinstance(values.get("setup", []), list | tuple):
        raise ValueError(f"slurm setup must be a list of shell lines, got {values['setup']!r}{where}")
    settings = SlurmSettings(**{**values, "sbatch": dict(values.get("sbatch", {})),
                                "setup": tuple(values.get("setup", ())), "chosen": frozenset(values)})
    _check(settings, config)
    return settings


def _check(settings: SlurmSettings, config: Path | None) -> None:
    where = f" (in {config} or the flags)" if config else ""
    positive = {"cpus_per_job": settings.cpus_per_job, "time_minutes": settings.time_minutes,
                "array_parallelism": settings.array_parallelism}
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"slurm {name} must be a whole number >= 1, got {value!r}{where}")
    for name in ("gpus_per_job", "max_timeouts"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"slurm {name} must be a whole number >= 0, got {value!r}{where}")
    for name in ("mem_gb", "poll_seconds"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            raise ValueError(f"slurm {name} must be a number > 0, got {value!r}{where}")
    if settings.partition is not None and not isinstance(settings.partition, str):
        raise ValueError(f"slurm partition must be a string, got {settings.partition!r}{where}")
    if not all(isinstance(k, str) and isinstance(v, str | int) for k, v in settings.sbatch.items()):
        raise ValueError(f"slurm sbatch options must be name = \"value\" pairs, got {settings.sbatch!r}{where}")
    if not all(isinstance(line, str) for line in settings.setup):
        raise ValueError(f"slurm setup must be a list of shell lines, got {list(settings.setup)!r}{where}")


def parse_option(text: str) -> tuple[str, str]:
    """`--slurm-option KEY=VALUE` (sbatch's long option without the dashes, e.g. account=lab, qos=high)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or key.strip().startswith("-"):
        raise ValueError(f"--slurm-option wants KEY=VALUE with sbatch's long option name, e.g. account=mylab, got "
                         f"{text!r}")
    return key.strip(), value.strip()


def job_marker(path: Path) -> Path:
    """The submission note of the run whose record is `path`: `seed<N>.slurm` beside it."""
    return Path(path).with_name(f"{Path(path).stem}.slurm")


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(job_marker(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def squeue_states(job_ids: Sequence[str] | None = None) -> dict[str, tuple[str, str]] | None:
    """Slurm's view of live jobs, `{job id: (state, reason)}` with array elements as `<array>_<index>`; None when
    squeue is missing or fails (then nothing may be concluded from a job's absence)."""
    if shutil.which("squeue") is None:
        return None
    command = ["squeue", "-h", "-r", "-o", "%i|%T|%r"]
    if job_ids:
        command += ["-j", ",".join(sorted({str(j).split("_")[0] for j in job_ids}))]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue -j with ids that have all left the queue fails with "Invalid job id" on some versions
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Reason, ExitCode, StdErr, ...); {} once Slurm has forgotten the job
    (MinJobAge, 5 minutes by default) or where scontrol is missing."""
    if shutil.which("scontrol") is None:
        return {}
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    info = {}
    for word in out.stdout.split():
        key, sep, value = word.partition("=")
        if sep and key not in info:
            info[key] = value
    return info


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The --executor and --slurm-* options of `depthbench run`."""
    d = SlurmSettings()
    group = run.add_argument_group(
        "Slurm", "--executor slurm submits each missing run as one element of a Slurm job array (submitit); settings "
        "come from the defaults below, then --slurm-config, then these flags. docs/cluster.md: 'Running on a cluster'.")
    group.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local: run here (default); slurm: submit to the Slurm cluster of this login node")
    group.add_argument("--slurm-config", type=Path, metavar="FILE",
                       help="TOML file with a [slurm] table: partition, gpus_per_job, cpus_per_job, time_minutes, "
                            "array_parallelism, mem_gb, sbatch = {account = \"...\"}, setup = [\"module load ...\"], "
                            "logs, max_timeouts, poll_seconds")
    group.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's default partition)")
    group.add_argument("--slurm-gpus", type=int, metavar="N",
                       help="GPUs per job (default: 1 when the tier runs on CUDA, else 0)")
    group.add_argument("--slurm-cpus", type=int, metavar="N", help=f"CPUs per job (default {d.cpus_per_job})")
    group.add_argument("--slurm-time", type=int, metavar="MIN",
                       help=f"time limit per job in minutes (default {d.time_minutes}); a run that needs longer is "
                            f"requeued and continues from its last epoch (up to {d.max_timeouts} times)")
    group.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                       help=f"array elements running at once (default {d.array_parallelism})")
    group.add_argument("--slurm-mem-gb", type=float, metavar="GB", help="memory per job (default: the partition's)")
    group.add_argument("--slurm-option", action="append", metavar="KEY=VALUE", default=[],
                       help="extra sbatch option, repeatable: --slurm-option account=mylab --slurm-option qos=high")
    group.add_argument("--slurm-logs", type=Path, metavar="DIR",
                       help=f"submitit's folder: sbatch scripts, pickles, job logs (default: <results>/{LOGS}/)")
    group.add_argument("--no-wait", action="store_true",
                       help="submit and return instead of waiting for the jobs (`depthbench status` follows them; "
                            "rerun the same command afterwards for the table)")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep each finished run's training checkpoint (<record>.checkpoint.pt; default: removed)")


def settings_from_args(args: argparse.Namespace) -> SlurmSettings | None:
    """The Slurm settings of `depthbench run`'s arguments; None for the local executor (where any --slurm-* flag is
    an error, not silently ignored)."""
    given = {"partition": args.slurm_partition, "gpus_per_job": args.slurm_gpus, "cpus_per_job": args.slurm_cpus,
             "time_minutes": args.slurm_time, "array_parallelism": args.slurm_array_parallelism,
             "mem_gb": args.slurm_mem_gb, "logs": args.slurm_logs}
    if args.executor != "slurm":
        if args.slurm_config or args.slurm_option or args.no_wait or any(v is not None for v in given.values()):
            raise ValueError("--slurm-* options and --no-wait apply to --executor slurm only; add --executor slurm")
        return None
    settings = load_settings(args.slurm_config, **given)
    options = dict(parse_option(text) for text in args.slurm_option)
    return SlurmSettings(**{**settings.__dict__, "sbatch": {**settings.sbatch, **options},
                            "wait": not args.no_wait})

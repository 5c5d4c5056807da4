"""What a Slurm partition can give one job, read before submitting (`sinfo`, `scontrol show partition`), and the
pending reasons that no amount of waiting resolves.

A request the partition cannot meet would wait in the queue forever (a 4-CPU job on 2-CPU nodes stays PENDING with
reason PartitionConfig, and Slurm says nothing more). So at submission a default that asks too much is lowered to
what the partition gives, said aloud; a value the user chose (a flag or --slurm-config) is refused with the flag to
change, since silently running with fewer resources than asked is worse than asking again. While waiting, a job
pending for one of the reasons in `hopeless` is cancelled and reported with the reason and the flag to change.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from benchmarks.execution.cluster import SlurmSettings

if TYPE_CHECKING:
    import torch

FLAGS = {"partition": "--slurm-partition", "cpus_per_job": "--slurm-cpus", "gpus_per_job": "--slurm-gpus",
         "mem_gb": "--slurm-mem-gb", "time_minutes": "--slurm-time"}
REQUEST_FLAGS = "--slurm-cpus, --slurm-mem-gb, --slurm-gpus or --slurm-partition"


@dataclass(frozen=True)
class PartitionLimits:
    """The most one job can get in a partition, on its best node: CPUs, memory (MB; None: no limit known), GPUs,
    the time limit (minutes; None: unlimited), and sinfo's availability (up, down, drain, inact); whether the
    partition gives a job without a memory request a default (else Slurm asks a whole node's memory for it), and
    that node memory."""

    name: str
    cpus: int
    memory_mb: int | None
    gpus: int
    minutes: int | None
    state: str
    max_mem_per_cpu_mb: int | None = None
    default_memory: bool = True
    node_memory_mb: int | None = None


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"--executor slurm: Slurm's {command[0]} is not on PATH here; run from a Slurm login node")
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"--executor slurm: `{' '.join(command)}` did not answer within 2 minutes; is the "
                           "cluster's controller up?") from None
    if out.returncode != 0:
        raise RuntimeError(f"--executor slurm: `{' '.join(command)}` failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def slurm_minutes(text: str) -> int | None:
    """Slurm's time format ([days-]hours:minutes:seconds, minutes:seconds, minutes) in whole minutes, rounded down;
    None for "infinite"/"UNLIMITED"."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "none", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds // 60


def _gpus(gres: str) -> int:
    """GPUs in sinfo's %G, e.g. "gpu:4", "gpu:a100:4(S:0-1),shard:8", "(null)"."""
    total = 0
    for entry in gres.split(","):
        fields = re.sub(r"\(.*?\)", "", entry).split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def _limit(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def read_partition(name: str | None) -> PartitionLimits:
    """The limits of partition `name` (None: the cluster's default one). ValueError for an unknown partition, or
    when the cluster has no default and none was named."""
    nodes: dict[str, list[tuple[int, int, int, int | None, str]]] = {}
    default = None
    for line in _run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l|%a"]).splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        partition, cpus, memory, gres, time_limit, state = fields
        if partition.endswith("*"):
            partition = default = partition[:-1]
        memory_mb = int(memory.rstrip("+")) if memory.rstrip("+").isdigit() else 0
        nodes.setdefault(partition, []).append((int(cpus.rstrip("+") or 0), memory_mb, _gpus(gres),
                                                slurm_minutes(time_limit), state))
    known = ", ".join(sorted(nodes)) or "none"
    if name is None and default is None:
        raise ValueError(f"this Slurm cluster has no default partition: choose one with --slurm-partition (its "
                         f"partitions: {known})")
    name = name or default
    if name not in nodes:
        raise ValueError(f"--slurm-partition {name}: no such partition on this cluster (sinfo lists: {known})")
    config = {}
    for word in _run(["scontrol", "show", "partition", "-o", name]).split():
        key, sep, value = word.partition("=")
        if sep:
            config[key] = value
    cpus = max(n[0] for n in nodes[name])
    if _limit(config.get("MaxCPUsPerNode")):
        cpus = min(cpus, int(config["MaxCPUsPerNode"]))
    memory = max(n[1] for n in nodes[name]) or None
    if _limit(config.get("MaxMemPerNode")):
        memory = min(memory or int(config["MaxMemPerNode"]), int(config["MaxMemPerNode"]))
    states = {n[4] for n in nodes[name]}
    defaults = [config.get(key) for key in ("DefMemPerNode", "DefMemPerCPU", "DefMemPerGPU")]
    if not any(_limit(value) for value in defaults):  # the cluster-wide default, where the partition sets none
        cluster = re.findall(r"^(DefMemPer\w+)\s*=\s*(\S+)", _run(["scontrol", "show", "config"]), re.MULTILINE)
        defaults += [value for _, value in cluster]
    return PartitionLimits(name=name, cpus=cpus, memory_mb=memory, gpus=max(n[2] for n in nodes[name]),
                           minutes=nodes[name][0][3], state="up" if "up" in states else sorted(states)[0],
                           max_mem_per_cpu_mb=_limit(config.get("MaxMemPerCPU")),
                           default_memory=any(_limit(value) for value in defaults),
                           node_memory_mb=max(n[1] for n in nodes[name]) or None)


def fit_to_partition(settings: SlurmSettings, device: torch.device, say: Callable[[str], None],
                     limits: PartitionLimits | None = None) -> SlurmSettings:
    """`settings` within what the partition gives one job: a default lowered (said aloud), a chosen value that
    exceeds it refused (ValueError naming the flag)."""
    limits = limits or read_partition(settings.partition)
    where = f"partition {limits.name}"
    changes: dict[str, float] = {}

    def too_much(key: str, asked: int | float, most: int, unit: str, why: str = "") -> None:
        if key in settings.chosen:
            raise ValueError(f"{FLAGS[key]} {asked:g}: {where} gives one job at most {most} {unit}{why}; ask for "
                             f"{most} or less with {FLAGS[key]}, or choose another partition with --slurm-partition")
        changes[key] = most
        say(f"asking {most} {unit} per job, not the default {asked:g}: {where} gives no more{why} ({FLAGS[key]} "
            "chooses)")

    if settings.cpus_per_job > limits.cpus:
        too_much("cpus_per_job", settings.cpus_per_job, limits.cpus, "CPUs")
    gpus = settings.gpus(device)
    if gpus > limits.gpus:
        if limits.gpus == 0:
            cause = f"{FLAGS['gpus_per_job']} {gpus}" if "gpus_per_job" in settings.chosen else \
                f"the runs are on {device.type}"
            raise ValueError(f"each job would ask for {gpus} GPU(s) ({cause}), but {where} has no GPUs (no gpu in "
                             "sinfo's GRES): choose a partition with GPUs (--slurm-partition), or run on the CPU "
                             "(--device cpu)")
        too_much("gpus_per_job", gpus, limits.gpus, "GPUs")
    cpus = changes.get("cpus_per_job", settings.cpus_per_job)
    memory_cap = limits.memory_mb
    if limits.max_mem_per_cpu_mb:
        memory_cap = min(memory_cap or limits.max_mem_per_cpu_mb * cpus, limits.max_mem_per_cpu_mb * cpus)
    if settings.mem_gb is not None and memory_cap and settings.mem_gb * 1024 > memory_cap:
        raise ValueError(f"--slurm-mem-gb {settings.mem_gb:g}: {where} gives one job at most "
                         f"{memory_cap / 1024:.3g} GB; ask for that or less with --slurm-mem-gb, leave it out for the "
                         "partition's default, or choose another partition with --slurm-partition")
    own_memory = {"mem", "mem-per-cpu", "mem-per-gpu"} & set(settings.sbatch)  # --slurm-option: the user's call
    if (settings.mem_gb is None and not own_memory and not limits.default_memory and memory_cap
            and memory_cap < (limits.node_memory_mb or 0)):
        # No default memory: Slurm asks a whole node's for a job without a request, more than the partition allows
        changes["mem_gb"] = memory_cap / 1024
        say(f"asking {memory_cap / 1024:.3g} GB per job: {where} sets no default memory, and a whole node's "
            f"({limits.node_memory_mb / 1024:.3g} GB, what Slurm asks without one) exceeds its limit "
            "(--slurm-mem-gb chooses)")
    if limits.minutes is not None and settings.time_minutes > limits.minutes:
        too_much("time_minutes", settings.time_minutes, limits.minutes, "minutes",
                 " (a run that needs longer is requeued and continues from its last epoch)")
    if limits.state != "up":
        say(f"{where} is {limits.state}: the jobs wait in the queue until it is up")
    return replace(settings, **changes) if changes else settings


# Pending reasons that waiting never resolves (Slurm's job reason codes, slurm.schedmd.com/job_reason_codes.html):
# the request breaks a limit of the partition, the account or the QOS per job or per node, or names something that
# does not exist. Not here: aggregate and count limits (AssocGrp*, QOSGrp*, AssocMaxJobsLimit, *PerUser,
# *PerAccount, JobArrayTaskLimit), which lift as other jobs end; Resources and Priority; ReqNodeNotAvail, PartitionDown
# and held jobs, which an administrator may resolve.
_NEVER = {
    "PartitionConfig": ("the request exceeds a limit of the partition", REQUEST_FLAGS),
    "PartitionNodeLimit": ("the job's node count is outside the partition's limits (or its nodes are down or "
                           "drained)", "--slurm-partition"),
    "PartitionTimeLimit": ("the time limit exceeds the partition's", "--slurm-time"),
    "MaxMemPerLimit": ("the memory asked exceeds the partition's per-CPU or per-node maximum",
                       "--slurm-mem-gb, --slurm-cpus or --slurm-option mem-per-cpu"),
    "BadConstraints": ("the job's requirements can never be satisfied", f"--slurm-option or {REQUEST_FLAGS}"),
    "InvalidAccount": ("the job's account is invalid", "--slurm-option account=NAME"),
    "AccountNotAllowed": ("the account may not use this partition", "--slurm-option account=NAME or "
                                                                    "--slurm-partition"),
    "InvalidQOS": ("the job's QOS is invalid", "--slurm-option qos=NAME"),
    "QOSNotAllowed": ("the QOS is not allowed for the account or partition", "--slurm-option qos=NAME or "
                                                                            "--slurm-partition"),
    "ReservationDeleted": ("the reservation asked for no longer exists", "--slurm-option reservation=NAME"),
    "DependencyNeverSatisfied": ("a dependency will never be satisfied", "--slurm-option dependency=..."),
}
_PER_JOB = re.compile(r"^(Assoc|QOS)(Max\w*?(PerJob|PerNode)\w*|Min\w+)$")
_RESOURCE_FLAGS = (("Minutes", "--slurm-time or --slurm-cpus"), ("Cpu", "--slurm-cpus"), ("Mem", "--slurm-mem-gb"),
                   ("GRES", "--slurm-gpus"), ("Wall", "--slurm-time"), ("Node", "--slurm-partition"))


def hopeless(reason: str) -> tuple[str, str] | None:
    """(what the pending reason means, the flags that change it) for a reason that never resolves; else None."""
    if reason in _NEVER:
        return _NEVER[reason]
    if _PER_JOB.match(reason):
        limit = "a minimum" if re.match(r"(Assoc|QOS)Min", reason) else "a per-job or per-node limit"
        owner = "association" if reason.startswith("Assoc") else "QOS"
        flags = next((flag for key, flag in _RESOURCE_FLAGS if key in reason), REQUEST_FLAGS)
        return f"the request breaks {limit} of the {owner}", f"{flags} (or --slurm-option qos=/account=)"
    return None

"""The tests' own Slurm cluster: started for the session by .ci/start-slurm under a fresh directory (its own
slurm.conf, ClusterName, ports, munged, state), stopped afterwards, and checked before any submission.

The tests never touch a cluster they did not start: a login node's `sinfo` answers for a production queue, so the
Slurm commands of the tests run only with SLURM_CONF pointing at this cluster's configuration, which must carry
.ci/start-slurm's marker line and name a cluster whose controller answers with that very name. Everywhere else
(tests/conftest.py) SLURM_CONF names no cluster at all. Starting one needs Slurm and munge installed and root (or
passwordless sudo): skipped outside CI where that is missing, failed in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data_on_disk import REPO, skip_or_fail
from waiting import SAFETY_NET_S

START = REPO / ".ci" / "start-slurm"
MARKER = "# depthbench private test cluster, written by .ci/start-slurm; do not edit"
TOOLS = ("sinfo", "sbatch", "srun", "squeue", "scontrol", "scancel", "slurmctld", "slurmd", "munged")


class ForeignCluster(AssertionError):
    """SLURM_CONF leads to a cluster these tests did not start: nothing may be submitted to it."""


def _root_prefix() -> list[str] | None:
    """How to run a command as root here: directly, through passwordless sudo, or not at all (None)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def check_own(conf: Path) -> str:
    """The name of the cluster behind `conf` once it is sure to be ours; ForeignCluster otherwise."""
    conf = Path(conf)
    if os.environ.get("SLURM_CONF") != str(conf):
        raise ForeignCluster(f"SLURM_CONF is {os.environ.get('SLURM_CONF')!r}, not the tests' own {conf}")
    text = conf.read_text(encoding="utf-8") if conf.is_file() else ""
    if not text.startswith(MARKER + "\n"):
        raise ForeignCluster(f"{conf} was not written by .ci/start-slurm (no marker line): not the tests' cluster")
    written = re.search(r"^ClusterName=(depthbench-[0-9a-f]+)$", text, re.MULTILINE)
    if written is None:
        raise ForeignCluster(f"{conf} names no cluster of .ci/start-slurm's (ClusterName=depthbench-<random>)")
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=SAFETY_NET_S)
    answered = re.search(r"^ClusterName\s*=\s*(\S+)", shown.stdout, re.MULTILINE)
    if answered is None or answered.group(1) != written.group(1):
        raise ForeignCluster(f"the controller behind {conf} answers as cluster "
                             f"{answered.group(1) if answered else '(none)'}, not {written.group(1)}: another "
                             f"cluster listens on its port ({(shown.stderr or '').strip()})")
    return written.group(1)


@contextmanager
def own_cluster() -> Iterator[Path]:
    """Start a private cluster, yield its slurm.conf (with SLURM_CONF set to it), stop and remove it."""
    missing = [tool for tool in TOOLS if not (shutil.which(tool) or Path("/usr/sbin", tool).exists())]
    if missing:
        skip_or_fail(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y "
                     "--no-install-recommends slurm-wlm munge")
    root = _root_prefix()
    if root is None:
        skip_or_fail("the tests' own Slurm cluster needs root or passwordless sudo (slurmd starts jobs as the "
                     "submitting user)")
    directory = Path(tempfile.mkdtemp(prefix="depthbench-slurm-"))
    conf = directory / "slurm.conf"
    previous = os.environ.get("SLURM_CONF")
    try:
        started = subprocess.run([str(START), str(directory)], capture_output=True, text=True, timeout=SAFETY_NET_S)
        if started.returncode != 0:
            skip_or_fail(f".ci/start-slurm could not start the tests' cluster: {started.stderr.strip()}")
        os.environ["SLURM_CONF"] = str(conf)
        check_own(conf)
        yield conf
    finally:
        if conf.is_file():
            subprocess.run([str(START), "--stop", str(directory)], capture_output=True, timeout=SAFETY_NET_S)
        subprocess.run([*(root or []), "rm", "-rf", str(directory)], capture_output=True)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous

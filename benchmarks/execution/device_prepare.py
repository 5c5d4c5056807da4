"""`depthbench device prepare`: everything a GPU session carries, staged in git-ignored folders of this checkout,
and the exact call to make.

The device machine starts bare each session, reaches no network, and gets only this checkout (tracked and untracked
files that git does not ignore) plus the ignored paths the call names in `carry`, 64 MiB in all
(/work/.library/device/README.md). So this command:
- downloads, as wheels for its Python (3.12, manylinux x86-64), the packages the run needs that its image lacks
  (`DEVICE_MISSING`; its image has torch, torchvision, torchdiffeq, numpy, scipy, scikit-learn, pandas, sympy...)
  into `.whl/`, or copies them from a local folder (`wheels_from`, no network);
- stages the tier's data into `.data/gpu/`: Fashion-MNIST's four IDX .gz files and the CIFAR-10 JPEG archive
  (checked: IDX sizes, the archive's sha256), and the records already done of the tier (so the session skips
  them); linked where the file system allows, else copied;
- checks that the whole fits, dropping in reverse priority (records, then cifar10-jpeg) what does not, and says so;
- writes `.data/gpu/manifest.json` (the commit the records will name: the device's copy has no .git) and prints the
  carry list and the command.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.io import atomic_output, write_atomic

LIMIT_MIB = 64.0  # what travels: the working tree plus the carried paths
MARGIN_MIB = 2.0  # room for files that appear between preparing and the call (a log, a new record)
WHEELS, STAGE = Path(".whl"), Path(".data/gpu")
# Run-time imports absent from the device image (KINDS.md's package list), with those of their needs it lacks:
# torchattacks; torchode (the adaptive models' per-example solves) needs torchtyping, which needs typeguard < 3.
DEVICE_MISSING = ("torchattacks", "torchode", "torchtyping", "typeguard")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
DEFAULT_COMMAND = "bash .device/run --max-minutes 9"
MIB = 2**20


@dataclass
class Prepared:
    carry: list[str]
    command: str
    sizes_mib: dict[str, float]
    staged_tasks: list[str]
    dropped: list[str] = field(default_factory=list)
    wheels: list[str] = field(default_factory=list)
    records: int = 0

    @property
    def total_mib(self) -> float:
        return sum(self.sizes_mib.values())

    def text(self) -> str:
        sizes = ", ".join(f"{name} {mib:.1f}" for name, mib in self.sizes_mib.items())
        lines = [f"depthbench: staged for a GPU session: tasks {', '.join(self.staged_tasks) or 'none'}; "
                 f"wheels {', '.join(self.wheels) or 'none'}; {self.records} records already done",
                 f"depthbench: what travels: {self.total_mib:.1f} MiB of {LIMIT_MIB:g} ({sizes})"]
        lines += [f"depthbench: LEFT OUT (does not fit): {what}" for what in self.dropped]
        lines += ["", "device run call (one call; timeout_s leaves a minute for packing):",
                  f"  carry:     {json.dumps(self.carry)}", f"  command:   {self.command}", "  timeout_s: 600", "",
                  "then, here: depthbench device import <the archive it returns> && depthbench publish && "
                  "depthbench leaderboard"]
        return "\n".join(lines)


def tree_bytes(root: Path) -> int:
    """What travels without `carry`: tracked files and untracked files git does not ignore."""
    names = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / os.fsdecode(n)).stat().st_size for n in names if n and (root / os.fsdecode(n)).is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else 0


def _place(source: Path, target: Path) -> None:
    """`target` becomes the content of `source`: a hard link where possible (no space), else an atomic copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.stat().st_size == source.stat().st_size and \
            target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)


def wheels(root: Path, wheels_from: Path | None, download: bool) -> list[str]:
    """The wheels of DEVICE_MISSING, at the versions installed here, in root/.whl (one version each)."""
    from importlib import metadata

    folder = root / WHEELS
    folder.mkdir(exist_ok=True)
    names = []
    for package in DEVICE_MISSING:
        version = metadata.version(package)
        stem = f"{package.replace('-', '_')}-{version}-"
        for old in folder.glob(f"{package.replace('-', '_')}-*.whl"):
            if not old.name.startswith(stem):
                old.unlink()  # two versions of one package stop the whole install there
        found = sorted(folder.glob(f"{stem}*.whl"))
        if not found and wheels_from is not None:
            for wheel in sorted(Path(wheels_from).glob(f"{stem}*.whl")):
                _place(wheel, folder / wheel.name)
        elif not found and download:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--python-version", "3.12", "--implementation", "cp", "-d", str(folder),
                       *(arg for p in PLATFORMS for arg in ("--platform", p)), f"{package}=={version}"]
            subprocess.run(command, check=True)
        found = sorted(folder.glob(f"{stem}*.whl"))
        if not found:
            raise FileNotFoundError(f"no wheel of {package} {version} for the device: run `depthbench device prepare` "
                                    "where pip can download, or pass --wheels-from a folder holding it")
        names += [w.name for w in found]
    return names


def _fashion_source(data_dirs: list[Path]) -> Path | None:
    from benchmarks.data.tasks import _SYSTEM_IDX_DIRS

    for folder in [*(d / "fashion-mnist" for d in data_dirs), *(d / "FashionMNIST" / "raw" for d in data_dirs),
                   *_SYSTEM_IDX_DIRS["fashion-mnist"]]:
        if all((folder / f"{f}.gz").is_file() or (folder / f).is_file() for f in FASHION_FILES):
            return folder
    return None


def stage_fashion(data_dirs: list[Path], stage: Path) -> None:
    from benchmarks.data.tasks import DataMissingError, _check_idx_file

    source = _fashion_source(data_dirs)
    if source is None:
        raise DataMissingError(f"fashion-mnist: no IDX files in {', '.join(map(str, data_dirs))} or "
                               "/usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`)")
    for name in FASHION_FILES:
        target = stage / "fashion-mnist" / f"{name}.gz"
        if (source / f"{name}.gz").is_file():
            _place(source / f"{name}.gz", target)
        elif not target.is_file():  # an unpacked file travels compressed
            with atomic_output(target) as tmp, open(source / name, "rb") as fin, gzip.open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        _check_idx_file(target)


def stage_cifar(data_dirs: list[Path], stage: Path) -> None:
    from benchmarks.data.tasks import CIFAR10_JPEG_SHA256, DataCorruptError, DataMissingError

    source = next((d / "cifar10-jpeg.tar.xz" for d in data_dirs if (d / "cifar10-jpeg.tar.xz").is_file()), None)
    if source is None:
        raise DataMissingError(f"cifar10-jpeg: no cifar10-jpeg.tar.xz in {', '.join(map(str, data_dirs))}; pass "
                               "--data-dir with the folder holding it (e.g. ../shared/data)")
    target = stage / "cifar10-jpeg.tar.xz"
    _place(source, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != CIFAR10_JPEG_SHA256:
        target.unlink()
        raise DataCorruptError(f"cifar10-jpeg: {source} has sha256 {digest}, not {CIFAR10_JPEG_SHA256}")


def stage_records(stores: list[Path], stage: Path, tier: str) -> int:
    """The tier's records already in `stores` (its current hash per task), so the session does not redo them."""
    from benchmarks.protocols import get_protocol
    from benchmarks.store.records import iter_records

    protocol, target, count = get_protocol(tier), stage / "results", 0
    shutil.rmtree(target, ignore_errors=True)
    for store in stores:
        if not Path(store).is_dir():
            continue
        for path, record in iter_records(store):
            if record.task in protocol.recipes and record.protocol["hash"] == protocol.task_hash(record.task):
                _place(path, target / path.relative_to(store))
                count += 1
    return count


def prepare(root: Path, data_dirs: list[Path], *, tier: str = "standard", stores: list[Path] | None = None,
            wheels_from: Path | None = None, download: bool = True, allow_dirty: bool = False,
            command: str = DEFAULT_COMMAND, limit_mib: float = LIMIT_MIB) -> Prepared:
    """Stage everything (see the module docstring) and return what to call the device with."""
    root = Path(root).resolve()
    if not (root / "zoo").is_dir() or not (root / "benchmarks").is_dir() or not (root / ".git").exists():
        raise ValueError(f"{root} is not a depthbench checkout: run `depthbench device prepare` in the checkout the "
                         "device tool sends (its root)")
    state = git_state(root)
    if state["git_dirty"] and not allow_dirty:
        raise ValueError("zoo/, benchmarks/ or pyproject.toml have uncommitted changes: the device's records would "
                         "name a commit that did not run; commit first (or --allow-dirty for a trial)")
    stage = root / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    wheel_names = wheels(root, wheels_from, download)
    tasks, dropped = [], []
    budget = (limit_mib - MARGIN_MIB) * MIB - tree_bytes(root) - folder_bytes(root / WHEELS)
    staged = {"fashion-mnist": (stage_fashion, stage / "fashion-mnist"),
              "cifar10-jpeg": (stage_cifar, stage / "cifar10-jpeg.tar.xz")}
    for task, (stage_task, where) in staged.items():  # the session's priority order: fashion-mnist first
        stage_task([Path(d) for d in data_dirs], stage)
        size = folder_bytes(where) if where.is_dir() else where.stat().st_size
        if size > budget:
            shutil.rmtree(where) if where.is_dir() else where.unlink()
            dropped.append(f"{task} ({size / MIB:.1f} MiB; {max(budget, 0) / MIB:.1f} MiB left)")
            continue
        budget -= size
        tasks.append(task)
    records = stage_records(stores or [], stage, tier)
    if folder_bytes(stage / "results") > budget:
        dropped.append(f"the {records} records already done (the session would redo them)")
        shutil.rmtree(stage / "results")
        records = 0
    carry = [WHEELS.as_posix(), STAGE.as_posix()]
    if ignored(root, carry) != carry:
        raise ValueError(f"{', '.join(set(carry) - set(ignored(root, carry)))} must be git-ignored (.gitignore): "
                         "carried paths that git tracks would travel twice")
    manifest = {"commit": state["git_commit"], "git_dirty": state["git_dirty"], "tier": tier,
                "code_files": state["code_files"], "code_sha256": code_fingerprint(root, state["code_files"]),
                "tasks": tasks, "wheels": wheel_names, "records": records}
    write_atomic(stage / "manifest.json", json.dumps(manifest, indent=2))
    sizes = {"working tree": tree_bytes(root) / MIB, ".whl": folder_bytes(root / WHEELS) / MIB,
             ".data/gpu": folder_bytes(stage) / MIB}
    return Prepared(carry, command, sizes, tasks, dropped, wheel_names, records)


CODE = ("zoo", "benchmarks", "pyproject.toml")  # what the records' commit vouches for


def code_fingerprint(root: Path, files: list[str]) -> str:
    """sha256 over the names and bytes of `files` (relative to `root`): the device's copy has no .git, so the
    session compares this with the manifest's to know the code that runs is the commit the records will name."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + (Path(root) / name).read_bytes() + b"\0")
    return digest.hexdigest()


def git_state(root: Path) -> dict[str, Any]:
    """The commit the session's records will name, and whether the code that runs differs from it (the tracked
    files the provenance's own check looks at)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
    files = [name for name in git("ls-files", "--", *CODE).splitlines() if (Path(root) / name).is_file()]
    return {"git_commit": git("rev-parse", "HEAD").strip(), "git_dirty": bool(status.strip()), "code_files": files}


def ignored(root: Path, paths: list[str]) -> list[str]:
    """Those of `paths` that git ignores (a carried path must be: else it would travel, and count, twice)."""
    return [p for p in paths
            if subprocess.run(["git", "-C", str(root), "check-ignore", "-q", p]).returncode == 0]


def as_json(prepared: Prepared) -> dict[str, Any]:
    return {"carry": prepared.carry, "command": prepared.command, "timeout_s": 600,
            "sizes_mib": prepared.sizes_mib, "total_mib": prepared.total_mib, "tasks": prepared.staged_tasks,
            "dropped": prepared.dropped, "wheels": prepared.wheels, "records": prepared.records}

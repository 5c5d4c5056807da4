"""Benchmark tasks: datasets with fixed train/val/test splits and their robustness grids.

Every image task carves its validation split out of the training set with a constant seed, so model selection never
sees `test` and two loads give identical tensors. Nothing is downloaded unless `download=True` is passed; a missing
dataset raises `DataMissingError` saying where it was looked for and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tarfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from benchmarks.io import atomic_output

SPLIT_SEED = 20200805  # constant seed of every split; independent of the global RNG
VAL_SIZE = 5000  # validation images carved from the training set of the large image tasks
PENDULUM_DELTA = 0.25  # time between the input state x and the target state y of the pendulum task
CIFAR10_JPEG_SHA256 = "e016f210c3d329e3663f2bb56e83a128dbf717c38412103f9d663c7700c8dc1b"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# IDX directories installed by system packages (Debian's dataset-fashion-mnist); searched after the data root.
_SYSTEM_IDX_DIRS: dict[str, tuple[Path, ...]] = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
_IMAGE_EPS, _IMAGE_NOISE = (0.05, 0.1, 0.2), (0.1, 0.2, 0.3)
_CIFAR_EPS, _CIFAR_NOISE = (2 / 255, 4 / 255, 8 / 255), (0.02, 0.05, 0.1)


class DataMissingError(FileNotFoundError):
    """A dataset is not on disk; the message names what was looked for and how to get it."""


class DataCorruptError(ValueError):
    """A dataset is on disk but damaged or not the published one; the message names the file and how to fix it."""


class UnknownTaskError(KeyError, ValueError):
    """`get_task` was given a name that is not registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Split:
    """One split: uint8 (N, C, H, W) images or float32 (N, d) vectors, with int64 labels or float32 targets."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def inputs(self) -> torch.Tensor:
        """Model inputs: images as float32 in [0, 1] (the unit of the eps/sigma grids), vectors unchanged."""
        return self.x.float().div_(255.0) if self.x.dtype == torch.uint8 else self.x

    def head(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class TaskData:
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    attack_eps: tuple[float, ...]
    noise_sigmas: tuple[float, ...]
    description: str
    source: str
    _loader: Callable[..., TaskData] = field(repr=False, compare=False)
    _checker: Callable[[str | Path | None], None] | None = field(default=None, repr=False, compare=False)

    def check(self, data_dir: str | Path | None = None) -> None:
        """Raise `DataMissingError` / `DataCorruptError` unless the task's files are on disk and intact, without
        loading them: the runner checks every task of a run before the first training starts."""
        if self._checker is not None:
            self._checker(data_dir)
    # The radius robust accuracy is quoted at (8/255 on CIFAR): where the full suite, AutoAttack included, runs.
    headline_eps: float | None = None

    def load(self, data_dir: str | Path | None = None, *, download: bool = False, limit: int | None = None) -> TaskData:
        """Load the three splits; `limit` keeps a deterministic prefix of at most that many examples per split."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit}")
        data = self._loader(data_dir, download=download, limit=limit)
        if limit is not None:
            data = TaskData(data.train.head(limit), data.val.head(limit), data.test.head(limit))
        dtype = torch.uint8 if len(self.input_shape) == 3 else torch.float32
        for split in (data.train, data.val, data.test):
            if tuple(split.x.shape[1:]) != self.input_shape or split.x.dtype != dtype:
                raise RuntimeError(f"{self.name}: loader returned x {split.x.dtype} {tuple(split.x.shape)}")
        return data


def data_root(data_dir: str | Path | None = None) -> Path:
    """Where datasets live: `data_dir`, else $DEPTHBENCH_DATA, else ~/.cache/depthbench/data."""
    chosen = data_dir if data_dir is not None else os.environ.get("DEPTHBENCH_DATA") or "~/.cache/depthbench/data"
    return Path(chosen).expanduser()


def cache_root() -> Path:
    """Where derived files (decoded JPEGs, unpacked IDX files) go: $DEPTHBENCH_CACHE, else ~/.cache/depthbench/cache."""
    return Path(os.environ.get("DEPTHBENCH_CACHE") or "~/.cache/depthbench/cache").expanduser()


def _generator(seed: int = SPLIT_SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _carve_val(x: torch.Tensor, y: torch.Tensor, test: Split) -> TaskData:
    """Validation = a fixed random 10% (at most VAL_SIZE) of the training set; both parts in permuted order."""
    perm = torch.randperm(len(x), generator=_generator())
    n_val = min(VAL_SIZE, len(x) // 10)
    val, train = perm[:n_val], perm[n_val:]
    return TaskData(Split(x[train], y[train]), Split(x[val], y[val]), test)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_output(path) as tmp:
        write(tmp)


# ---------------------------------------------------------------- digits


def _load_digits(data_dir: str | Path | None, *, download: bool, limit: int | None) -> TaskData:
    """scikit-learn's bundled digits (no download): 1,197 train / 200 val / 400 test by a fixed permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=_generator())
    test, val, train = perm[:400], perm[400:600], perm[600:]
    return TaskData(Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test]))


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (torchvision)


def _is_idx_dir(path: Path, gz_ok: bool = True) -> bool:
    return all((path / f).is_file() or (gz_ok and (path / f"{f}.gz").is_file()) for f in _IDX_FILES)


def _materialise_idx(src: Path, raw: Path) -> None:
    """Unpack an IDX directory into torchvision's `raw/` layout; a stamp file skips the work when src is unchanged."""
    files = {f: (src / f if (src / f).is_file() else src / f"{f}.gz") for f in _IDX_FILES}
    stamp = json.dumps({f: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for f, p in files.items()})
    stamp_file = raw / ".depthbench-source.json"
    if stamp_file.is_file() and stamp_file.read_text() == stamp and _is_idx_dir(raw, gz_ok=False):
        return
    for name, p in files.items():
        opener = gzip.open if p.suffix == ".gz" else open

        def unpack(tmp: Path, p: Path = p, opener: Callable = opener) -> None:
            with opener(p, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)

        _atomic_write(raw / name, unpack)
    _atomic_write(stamp_file, lambda tmp: tmp.write_text(stamp))


def _idx_file(path: Path) -> Path:
    return path if path.is_file() else path.with_name(f"{path.name}.gz")


def _check_idx_file(path: Path) -> None:
    """The file holds one whole IDX array: its header's dimensions account for every byte (a truncated file, a
    broken gzip stream or trailing garbage all fail), read in one streaming pass."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08:
                raise DataCorruptError(f"{path} is not an IDX file of unsigned bytes (its header is {head!r})")
            dims = handle.read(4 * head[3])
            expected = int(np.prod(np.frombuffer(dims, dtype=">u4"))) if len(dims) == 4 * head[3] else -1
            size = 0
            while chunk := handle.read(1 << 22):
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise DataCorruptError(f"{path} is damaged ({type(error).__name__}: {error}); get the file again") from None
    if size != expected:
        raise DataCorruptError(f"{path} is damaged: its header announces {expected} bytes of data, it holds {size} "
                               "(truncated copy?); get the file again")


def _mnist_loader(name: str, tv_class: str, apt_package: str | None
                  ) -> tuple[Callable[..., TaskData], Callable[[str | Path | None], None]]:
    def find(data_dir: str | Path | None, download: bool) -> tuple[Path, Path | None]:
        """(torchvision root, IDX source to unpack or None); raises DataMissingError when there is neither."""
        root = data_root(data_dir)
        tv_raw = root / tv_class / "raw"
        candidates = [root / name, tv_raw, *_SYSTEM_IDX_DIRS.get(name, ())]
        if _is_idx_dir(tv_raw, gz_ok=False):
            return root, None
        if (src := next((d for d in candidates if _is_idx_dir(d)), None)) is not None:
            return cache_root() / "torchvision", src
        if download:
            return root, None
        apt = f"`apt-get install {apt_package}`, or " if apt_package else ""
        raise DataMissingError(
            f"{name}: no data found. Looked for the IDX files {', '.join(_IDX_FILES)} (optionally .gz) in "
            f"{', '.join(str(c) for c in candidates)}. To get it: {apt}put the files in {root / name}, or set "
            f"DEPTHBENCH_DATA / --data-dir to a directory holding them, or pass --download (download=True) to "
            f"let torchvision download {tv_class} into {root}."
        )

    def check(data_dir: str | Path | None) -> None:
        tv_root, src = find(data_dir, download=False)
        folder = src if src is not None else tv_root / tv_class / "raw"
        for file in _IDX_FILES:
            _check_idx_file(_idx_file(folder / file))

    def load(data_dir: str | Path | None, *, download: bool, limit: int | None) -> TaskData:
        """Find torchvision's layout or an IDX directory (unpacked into the cache); download only if asked."""
        import torchvision.datasets as tvd

        cls = getattr(tvd, tv_class)
        root = data_root(data_dir)
        tv_root, src = find(data_dir, download)
        if src is not None:
            _materialise_idx(src, tv_root / tv_class / "raw")
        train = cls(root=str(tv_root), train=True, download=download and tv_root == root)
        test = cls(root=str(tv_root), train=False, download=False)
        test_split = Split(test.data.unsqueeze(1), test.targets.long())
        return _carve_val(train.data.unsqueeze(1), train.targets.long(), test_split)

    return load, check


# ---------------------------------------------------------------- CIFAR-10 (torchvision, original pickled batches)

_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


def _check_cifar10(data_dir: str | Path | None) -> None:
    """Every batch file present, with the md5 torchvision publishes for it."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    root = data_root(data_dir)
    base = root / CIFAR10.base_folder
    if not all((base / f).is_file() for f in _CIFAR_FILES):
        raise DataMissingError(
            f"cifar10: {base} with {', '.join(_CIFAR_FILES)} not found. Pass --download (download=True) to let "
            f"torchvision download CIFAR-10 into {root}, or set DEPTHBENCH_DATA / --data-dir to a directory holding "
            f"cifar-10-batches-py (unpacked from cifar-10-python.tar.gz)."
        )
    for file, md5 in (*CIFAR10.train_list, *CIFAR10.test_list):
        if not check_integrity(str(base / file), md5):
            raise DataCorruptError(f"cifar10: {base / file} is damaged (its md5 is not {md5}); delete {base} and "
                                   "pass --download, or unpack cifar-10-python.tar.gz again")


def _load_cifar10(data_dir: str | Path | None, *, download: bool, limit: int | None) -> TaskData:
    """torchvision's CIFAR10 on `<data_root>/cifar-10-batches-py`; md5-checked by torchvision."""
    from torchvision.datasets import CIFAR10

    root = data_root(data_dir)
    if not download:
        _check_cifar10(data_dir)
    try:
        train, test = (CIFAR10(root=str(root), train=t, download=download and t) for t in (True, False))
    except RuntimeError as err:
        raise DataCorruptError(
            f"cifar10: torchvision rejected {root / CIFAR10.base_folder} ({err}); delete it and pass --download."
        ) from err

    def as_chw(d: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(d).permute(0, 3, 1, 2).contiguous()

    test_split = Split(as_chw(test.data), torch.tensor(test.targets, dtype=torch.int64))
    return _carve_val(as_chw(train.data), torch.tensor(train.targets, dtype=torch.int64), test_split)


# ---------------------------------------------------------------- CIFAR-10 JPEG re-encoding (tar.xz, cached)


def _jpeg_source(root: Path) -> Path | None:
    archive, folder = root / "cifar10-jpeg.tar.xz", root / "cifar10-jpeg"
    return archive if archive.is_file() else folder if (folder / "train").is_dir() else None


_SHA256_SEEN: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest: a run hashes an archive once


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_SEEN:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _SHA256_SEEN[key] = h.hexdigest()
    return _SHA256_SEEN[key]


def _check_jpeg_archive(src: Path) -> str:
    """The archive's sha256, which must be the published one: another archive would give other numbers under the
    same task name, and a truncated copy would fail half-way through decoding."""
    digest = _sha256(src)
    if digest != CIFAR10_JPEG_SHA256:
        raise DataCorruptError(
            f"cifar10-jpeg: {src} is not the published archive: its sha256 is {digest}, expected "
            f"{CIFAR10_JPEG_SHA256} ({src.stat().st_size:,} bytes; a truncated or interrupted copy?). Copy "
            "cifar10-jpeg.tar.xz again and compare `sha256sum` with the expected value.")
    return digest


def _jpeg_key(src: Path) -> str:
    """Cache key: sha256 of the archive (or of the file list, sizes and mtimes of an unpacked folder)."""
    if src.is_file():
        return hashlib.sha256(f"v1:{_check_jpeg_archive(src)}".encode()).hexdigest()
    paths = sorted(p for p in src.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(src)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return hashlib.sha256(f"v1:{json.dumps(stats)}".encode()).hexdigest()


def _read_jpegs(src: Path) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """All JPEG bytes keyed by (split, class), read in one forward pass (tar.xz does not seek cheaply)."""
    files: dict[tuple[str, str], list[tuple[str, bytes]]] = {}

    def add(rel: str, read: Callable[[], bytes]) -> None:
        parts = PurePosixPath(rel).parts
        if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-1].lower().endswith((".jpg", ".jpeg")):
            files.setdefault((parts[-3], parts[-2]), []).append((parts[-1], read()))

    if src.is_file():
        try:
            with tarfile.open(src, "r:*") as tar:
                for member in tar:
                    if member.isfile() and (f := tar.extractfile(member)) is not None:
                        add(member.name, f.read)
        except (EOFError, OSError, tarfile.TarError, lzma.LZMAError) as error:
            raise DataCorruptError(f"cifar10-jpeg: {src} is damaged ({type(error).__name__}: {error}); copy "
                                   f"cifar10-jpeg.tar.xz again (sha256 {CIFAR10_JPEG_SHA256})") from None
    else:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                add(p.relative_to(src).as_posix(), p.read_bytes)
    return files


def _jpeg_plan(files: dict[tuple[str, str], list[tuple[str, bytes]]]) -> dict[str, list[tuple[int, bytes]]]:
    """(label, jpeg) per split in canonical order: round-robin over classes, so any prefix is class-balanced and a
    `limit` load equals the prefix of a full load. Val = a fixed random 10% of each class's training files."""
    classes = sorted({c for _, c in files})
    if tuple(classes) != CIFAR10_CLASSES:
        raise ValueError(f"cifar10-jpeg: expected class folders {CIFAR10_CLASSES}, found {tuple(classes)}")
    keyed: dict[str, list[tuple[int, int, bytes]]] = {"train": [], "val": [], "test": []}
    for label, c in enumerate(classes):
        train = sorted(files.get(("train", c), []), key=lambda t: t[0])
        perm = torch.randperm(len(train), generator=_generator(SPLIT_SEED + label)).tolist()
        n_val = len(train) // 10
        keyed["val"] += [(r, label, train[i][1]) for r, i in enumerate(perm[:n_val])]
        keyed["train"] += [(r, label, train[i][1]) for r, i in enumerate(perm[n_val:])]
        test = sorted(files.get(("test", c), []), key=lambda t: t[0])
        keyed["test"] += [(r, label, blob) for r, (_, blob) in enumerate(test)]
    return {s: [(lab, b) for _, lab, b in sorted(v, key=lambda t: (t[0], t[1]))] for s, v in keyed.items()}


def _decode(items: list[tuple[int, bytes]]) -> Split:
    """JPEG bytes -> uint8 (N, 3, H, W) with PIL (torchvision.io's decoders are deprecated since 0.29)."""
    from PIL import Image

    if not items:
        return Split(torch.empty(0, 3, 32, 32, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for _, b in items])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.tensor([lab for lab, _ in items], dtype=torch.int64))


def _find_jpeg(data_dir: str | Path | None) -> Path:
    root = data_root(data_dir)
    src = _jpeg_source(root)
    if src is None:
        raise DataMissingError(
            f"cifar10-jpeg: neither {root / 'cifar10-jpeg.tar.xz'} nor an unpacked {root / 'cifar10-jpeg'}/ found. "
            f"Copy the archive cifar10-jpeg.tar.xz (sha256 {CIFAR10_JPEG_SHA256}) into {root}, or set "
            f"DEPTHBENCH_DATA / --data-dir to the directory holding it. There is no download for it (--download "
            f"does not apply); for the original CIFAR-10 use the task cifar10 with --download."
        )
    return src


def _check_cifar10_jpeg(data_dir: str | Path | None) -> None:
    src = _find_jpeg(data_dir)
    if src.is_file():
        _check_jpeg_archive(src)


def _load_cifar10_jpeg(data_dir: str | Path | None, *, download: bool, limit: int | None) -> TaskData:
    """Decode once (~10 s) and cache uint8 tensors; a `limit` load decodes only what it returns and writes no cache."""
    src = _find_jpeg(data_dir)
    cache = cache_root() / f"cifar10-jpeg-{_jpeg_key(src)[:12]}.pt"
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return TaskData(*(Split(blob[f"{s}_x"], blob[f"{s}_y"]) for s in ("train", "val", "test")))
        except Exception as err:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {cache}: {err}", stacklevel=3)
    plan = _jpeg_plan(_read_jpegs(src))
    data = TaskData(*(_decode(plan[s][:limit]) for s in ("train", "val", "test")))
    if limit is None:
        tensors = {f"{s}_{a}": getattr(getattr(data, s), a) for s in ("train", "val", "test") for a in "xy"}
        _atomic_write(cache, lambda tmp: torch.save(tensors, tmp))
    return data


# ---------------------------------------------------------------- pendulum (regression, Queiruga et al. 2020)

_PENDULUM_TRAJECTORIES = {"train": 100, "val": 25, "test": 50}
_PENDULUM_STEPS = 20  # samples per trajectory: 20 * 0.25 = 5 time units
_PENDULUM_SUBSTEPS = 100  # RK4 steps per PENDULUM_DELTA: h = 0.0025, global error ~1e-12


def pendulum_rhs(state: torch.Tensor) -> torch.Tensor:
    """Right-hand side of the undamped pendulum theta'' = -sin(theta) (g/L = 1); state (..., 2) = (theta, omega)."""
    return torch.stack((state[..., 1], -torch.sin(state[..., 0])), dim=-1)


def _pendulum_flow(state: torch.Tensor, t: float = PENDULUM_DELTA, n: int = _PENDULUM_SUBSTEPS) -> torch.Tensor:
    """Reference flow: float64 classic RK4 with n small steps (scipy-free, vectorised over trajectories)."""
    h = t / n
    for _ in range(n):
        k1 = pendulum_rhs(state)
        k2 = pendulum_rhs(state + 0.5 * h * k1)
        k3 = pendulum_rhs(state + 0.5 * h * k2)
        k4 = pendulum_rhs(state + h * k3)
        state = state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return state


def _load_pendulum(data_dir: str | Path | None, *, download: bool, limit: int | None) -> TaskData:
    """Pairs (state at t, state at t + Δ) along trajectories; each split owns whole trajectories. States are rounded
    to float32 before each step, so y is the reference flow of exactly the stored x."""
    rng = np.random.RandomState(SPLIT_SEED)
    n_traj = sum(_PENDULUM_TRAJECTORIES.values())
    # |theta0| < 2, |omega0| < 1: energy <= 0.5 - cos 2 < 1, below the separatrix (no rotating orbits)
    init = np.stack([rng.uniform(-2.0, 2.0, n_traj), rng.uniform(-1.0, 1.0, n_traj)], axis=-1)
    state = torch.from_numpy(init).float().double()
    xs, ys = [], []
    for _ in range(_PENDULUM_STEPS):
        nxt = _pendulum_flow(state).float().double()
        xs.append(state)
        ys.append(nxt)
        state = nxt
    x, y = torch.stack(xs, 1).float(), torch.stack(ys, 1).float()  # (trajectory, step, 2)
    splits, start = [], 0
    for n in _PENDULUM_TRAJECTORIES.values():
        splits.append(Split(x[start : start + n].reshape(-1, 2), y[start : start + n].reshape(-1, 2)))
        start += n
    return TaskData(*splits)


# ---------------------------------------------------------------- registry

_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("digits", "classification", (1, 8, 8), 10, _IMAGE_EPS, _IMAGE_NOISE,
             "8x8 handwritten digits bundled with scikit-learn (0..16 scaled to 0..255); CPU smoke-test task.",
             "scikit-learn load_digits: UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998).",
             _load_digits, headline_eps=_IMAGE_EPS[1]),
        Task("mnist", "classification", (1, 28, 28), 10, _IMAGE_EPS, _IMAGE_NOISE,
             "MNIST 28x28 grey digits; val = fixed random 5,000 of the 60,000 training images.",
             "LeCun, Bottou, Bengio & Haffner (1998), read with torchvision.datasets.MNIST.",
             *_mnist_loader("mnist", "MNIST", None), headline_eps=_IMAGE_EPS[1]),
        Task("fashion-mnist", "classification", (1, 28, 28), 10, _IMAGE_EPS, _IMAGE_NOISE,
             "Fashion-MNIST 28x28 grey clothing images; val = fixed random 5,000 of the 60,000 training images.",
             "Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747, read with torchvision.datasets.FashionMNIST.",
             *_mnist_loader("fashion-mnist", "FashionMNIST", "dataset-fashion-mnist"),
             headline_eps=_IMAGE_EPS[1]),
        Task("cifar10", "classification", (3, 32, 32), 10, _CIFAR_EPS, _CIFAR_NOISE,
             "CIFAR-10 (original pickled batches); val = fixed random 5,000 of the 50,000 training images.",
             "Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images; torchvision.datasets.CIFAR10.",
             _load_cifar10, _check_cifar10, headline_eps=8 / 255),
        Task("cifar10-jpeg", "classification", (3, 32, 32), 10, _CIFAR_EPS, _CIFAR_NOISE,
             "A JPEG re-encoding of CIFAR-10 (lossy: accuracies are close to, not identical with, CIFAR-10). Its own "
             "task: never report its numbers as CIFAR-10. val = fixed random 500 per class of the training files.",
             f"CIFAR-10 (Krizhevsky, 2009) re-encoded as JPEG: cifar10-jpeg.tar.xz, sha256 {CIFAR10_JPEG_SHA256}.",
             _load_cifar10_jpeg, _check_cifar10_jpeg, headline_eps=8 / 255),
        Task("pendulum", "regression", (2,), 2, (), (),
             f"Undamped pendulum (g/L = 1): map (theta, omega) at t to the state at t + {PENDULUM_DELTA}; "
             "the convergence test of continuous-in-depth networks. Reference flow by float64 RK4, error ~1e-12.",
             "Queiruga, Erichson, Taylor & Mahoney (2020), Continuous-in-Depth Neural Networks, arXiv:2008.02389.",
             _load_pendulum),
    )
}


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}") from None

"""Tests of benchmarks.data.tasks: real data where the machine has it, tiny files in the real on-disk formats
otherwise."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.data import tasks
from benchmarks.data.tasks import (
    PENDULUM_DELTA,
    DataCorruptError,
    DataMissingError,
    Split,
    get_task,
    list_tasks,
    pendulum_rhs,
)

from data_on_disk import shared_data_dir, skip_or_fail


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the user's data or write into ~/.cache from a test."""
    monkeypatch.setenv("DEPTHBENCH_DATA", str(tmp_path / "default-data"))
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))


def assert_same(a: tasks.TaskData, b: tasks.TaskData) -> None:
    for s, t in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)


# ---------------------------------------------------------------- registry and paths


def test_registry_and_unknown_name() -> None:
    builtin = {"digits", "mnist", "fashion-mnist", "cifar10", "cifar10-jpeg", "pendulum"}
    assert list_tasks() == sorted(list_tasks()) and builtin <= set(list_tasks())  # a new task needs no edit here
    for name in list_tasks():
        task = get_task(name)
        assert task.name == name and task.description and task.source
        assert task.kind == ("regression" if name == "pendulum" else "classification")
        assert bool(task.attack_eps) == bool(task.noise_sigmas) == (task.kind == "classification")
        assert all(0 < e <= 1 for e in task.attack_eps + task.noise_sigmas)
    assert "JPEG re-encoding" in get_task("cifar10-jpeg").description
    with pytest.raises(KeyError) as err:
        get_task("nope")
    assert isinstance(err.value, ValueError)
    assert "'nope'" in str(err.value) and all(name in str(err.value) for name in list_tasks())


def test_roots_follow_argument_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tasks.data_root(tmp_path / "x") == tmp_path / "x"
    assert tasks.data_root() == tmp_path / "default-data"
    assert tasks.cache_root() == tmp_path / "cache"
    monkeypatch.delenv("DEPTHBENCH_DATA")
    monkeypatch.delenv("DEPTHBENCH_CACHE")
    assert tasks.data_root() == Path.home() / ".cache/depthbench/data"
    assert tasks.cache_root() == Path.home() / ".cache/depthbench/cache"


# ---------------------------------------------------------------- digits


def test_digits_splits() -> None:
    from sklearn.datasets import load_digits

    task = get_task("digits")
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (1197, 200, 400)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) <= set(range(10))
        inputs = split.inputs()
        assert inputs.dtype == torch.float32 and torch.equal(inputs, split.x.float() / 255)
    assert int(data.train.x.max()) == 255 and int(data.train.x.min()) == 0
    # the three splits partition the 1,797 digits (as a multiset: the data has duplicate images)
    bunch = load_digits()
    full = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(-1, 64)
    rows = sorted(bytes(r) + bytes([t]) for r, t in zip(full, bunch.target))
    x = torch.cat([data.train.x, data.val.x, data.test.x]).reshape(-1, 64).numpy()
    y = torch.cat([data.train.y, data.val.y, data.test.y]).numpy()
    assert sorted(bytes(r) + bytes([t]) for r, t in zip(x, y)) == rows
    torch.manual_seed(12345)  # the splits must not depend on the global RNG
    assert_same(data, task.load())
    small = task.load(limit=50)
    assert len(small.train) == len(small.val) == len(small.test) == 50
    assert torch.equal(small.train.x, data.train.x[:50]) and torch.equal(small.test.y, data.test.y[:50])


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


def test_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    debian = Path("/usr/share/datasets/fashion-mnist")
    if not tasks._is_idx_dir(debian):
        skip_or_fail(f"{debian} missing: apt-get install dataset-fashion-mnist")
    data = get_task("fashion-mnist").load(tmp_path / "empty")
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.train.x.shape[1:] == (1, 28, 28) and data.train.x.dtype == torch.uint8
    assert torch.bincount(data.test.y).tolist() == [1000] * 10
    assert torch.bincount(torch.cat([data.train.y, data.val.y])).tolist() == [6000] * 10
    assert (tmp_path / "cache/torchvision/FashionMNIST/raw/train-images-idx3-ubyte").is_file()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """IDX (LeCun) format: magic 0x08 (ubyte) + ndim, big-endian dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


def tiny_idx(directory: Path, compress: bool, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    """Random 28x28 images whose first pixel is their index, so every loaded image can be traced back."""
    rng = np.random.RandomState(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        images[:, 0, 0] = np.arange(n)
        arrays[f"{prefix}-images-idx3-ubyte"] = images
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.randint(0, 10, size=n).astype(np.uint8)
    for name, array in arrays.items():
        write_idx(directory / name, array, compress)
    return arrays


@pytest.mark.parametrize(
    ("name", "layout", "compress"),
    [
        ("fashion-mnist", "fashion-mnist", True),  # flat IDX directory, as Debian ships it
        ("fashion-mnist", "FashionMNIST/raw", False),  # what torchvision's download=True leaves behind
        ("mnist", "mnist", False),
        ("mnist", "MNIST/raw", True),  # torchvision's folder holding only the .gz files
    ],
)
def test_mnist_like_round_trip(
    name: str, layout: str, compress: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "_SYSTEM_IDX_DIRS", {})
    arrays = tiny_idx(tmp_path / "data" / layout, compress)
    images, labels = torch.from_numpy(arrays["train-images-idx3-ubyte"]), arrays["train-labels-idx1-ubyte"]
    data = get_task(name).load(tmp_path / "data")
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 10)
    seen = []
    for split in (data.train, data.val):
        idx = split.x[:, 0, 0, 0].long()
        assert torch.equal(split.x[:, 0], images[idx]) and split.y.tolist() == labels[idx.numpy()].tolist()
        seen += idx.tolist()
    assert sorted(seen) == list(range(30))  # train and val partition the training file
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert data.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert_same(data, get_task(name).load(tmp_path / "data"))
    if layout == name:  # a changed source must replace the unpacked copy in the cache
        tiny_idx(tmp_path / "data" / layout, compress, n_test=7)
        assert len(get_task(name).load(tmp_path / "data").test) == 7


# ---------------------------------------------------------------- CIFAR-10 (original pickled batches)


def write_cifar_batches(base: Path, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Tiny batches in the cifar-10-batches-py format; the first red pixel of each image is its index."""
    base.mkdir(parents=True)
    rng = np.random.RandomState(1)
    data = rng.randint(0, 256, size=(5 * per_batch + n_test, 3072)).astype(np.uint8)
    data[:, 0] = np.arange(len(data))
    labels = rng.randint(0, 10, size=len(data))
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        rows = slice(i * per_batch, (i + 1) * per_batch) if i < 5 else slice(5 * per_batch, None)
        # str keys: torchvision unpickles the (Python 2) originals with encoding="latin1", which yields str keys
        entry = {"batch_label": name, "data": data[rows], "labels": labels[rows].tolist()}
        (base / name).write_bytes(pickle.dumps(entry))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": list(tasks.CIFAR10_CLASSES)}))
    return data, labels


def test_cifar10_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10

    data, labels = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataCorruptError, match="data_batch_1 is damaged.*--download"):  # md5 rejects fake files
        get_task("cifar10").check(tmp_path)
    with pytest.raises(DataCorruptError, match="--download"):
        get_task("cifar10").load(tmp_path)
    # Test only: torchvision md5-checks the real CIFAR-10 files, which these tiny stand-ins cannot match.
    from torchvision.datasets import utils as tv_utils

    monkeypatch.setattr(tv_utils, "check_integrity", lambda path, md5=None: True)
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
    loaded = get_task("cifar10").load(tmp_path)
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (18, 2, 6)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32))
    seen = []
    for split in (loaded.train, loaded.val, loaded.test):
        assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        idx = split.x[:, 0, 0, 0].long()
        assert torch.equal(split.x, images[idx]) and split.y.tolist() == labels[idx.numpy()].tolist()
        seen.append(sorted(idx.tolist()))
    assert sorted(seen[0] + seen[1]) == list(range(20)) and seen[2] == list(range(20, 26))


# ---------------------------------------------------------------- CIFAR-10 JPEG


def test_cifar10_jpeg_real_archive_limited() -> None:
    shared = shared_data_dir()
    if shared is None:
        skip_or_fail("cifar10-jpeg.tar.xz not found ($DEPTHBENCH_SHARED_DATA or ../shared/data)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = get_task("cifar10-jpeg").load(shared, limit=100)
    assert not [w for w in caught if "sha256" in str(w.message)]  # the published archive passes the checksum
    for split in (data.train, data.val, data.test):
        assert split.x.shape == (100, 3, 32, 32) and split.x.dtype == torch.uint8
        assert torch.bincount(split.y, minlength=10).tolist() == [10] * 10
        inputs = split.inputs()
        assert 0.35 < inputs.mean() < 0.6 and 0.15 < inputs.std() < 0.35
    assert not list(tasks.cache_root().glob("cifar10-jpeg-*.pt"))  # a limited load writes no cache


def write_tiny_jpeg_tree(n_train: int = 10, n_test: int = 2) -> dict[str, bytes]:
    """Random 32x32 JPEGs in the archive's layout, keyed by member name."""
    rng = np.random.RandomState(2)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for c in tasks.CIFAR10_CLASSES:
            for i in range(n):
                buffer = io.BytesIO()
                Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(buffer, "JPEG", quality=90)
                files[f"cifar10-jpeg/{split}/{c}/{i:04d}.jpg"] = buffer.getvalue()
    return files


def test_cifar10_jpeg_tiny_archive_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_tiny_jpeg_tree()
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data/cifar10-jpeg.tar.xz", "w:xz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    origin = {}  # decoded pixels -> (split, class index)
    for name, blob in files.items():
        _, split, c, _ = name.split("/")
        pixels = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).transpose(2, 0, 1)
        origin[np.ascontiguousarray(pixels).tobytes()] = (split, tasks.CIFAR10_CLASSES.index(c))
    task = get_task("cifar10-jpeg")
    with pytest.raises(DataCorruptError, match="is not the published archive"):  # another archive is refused
        task.load(tmp_path / "data")
    # Test only: this tiny archive stands in for the published one.
    monkeypatch.setattr(tasks, "CIFAR10_JPEG_SHA256", tasks._sha256(tmp_path / "data/cifar10-jpeg.tar.xz"))
    task.check(tmp_path / "data")
    full = task.load(tmp_path / "data")
    assert (len(full.train), len(full.val), len(full.test)) == (90, 10, 20)
    seen = []
    for split, expected in ((full.train, "train"), (full.val, "train"), (full.test, "test")):
        for x, y in zip(split.x, split.y):
            assert origin[x.numpy().tobytes()] == (expected, int(y))  # exact pixels, right label and split
            seen.append(x.numpy().tobytes())
    assert len(set(seen)) == len(files)
    assert torch.bincount(full.val.y).tolist() == [1] * 10
    assert len(list(tasks.cache_root().glob("cifar10-jpeg-*.pt"))) == 1

    def no_decoding(src: Path) -> None:
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(tasks, "_read_jpegs", no_decoding)
        assert_same(full, task.load(tmp_path / "data"))
        limited = task.load(tmp_path / "data", limit=20)  # served from the cache
    for cache in tasks.cache_root().glob("cifar10-jpeg-*.pt"):
        cache.unlink()
    decoded = task.load(tmp_path / "data", limit=20)  # decoded from the archive
    assert_same(limited, decoded)
    assert torch.equal(decoded.train.x, full.train.x[:20]) and torch.equal(decoded.val.x, full.val.x)
    assert torch.equal(decoded.test.x, full.test.x) and torch.bincount(decoded.test.y).tolist() == [2] * 10
    assert not list(tasks.cache_root().glob("cifar10-jpeg-*.pt"))
    # an unpacked folder is read the same way (no archive, so no checksum)
    unpacked = tmp_path / "unpacked"
    for name, blob in files.items():
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_bytes(blob)
    assert_same(full, task.load(unpacked))


def test_a_damaged_jpeg_archive_is_named_with_a_fix_never_a_traceback(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    archive = tmp_path / "data/cifar10-jpeg.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name, blob in write_tiny_jpeg_tree(n_train=3, n_test=1).items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # an interrupted copy
    task = get_task("cifar10-jpeg")
    with pytest.raises(DataCorruptError) as err:  # the checksum catches it before anything is decoded
        task.check(tmp_path / "data")
    assert str(archive) in str(err.value) and "truncated" in str(err.value) and "copy" in str(err.value).lower()
    # Even an archive whose checksum were accepted gives a message naming it, not an EOFError, when cut short.
    monkeypatch.setattr(tasks, "CIFAR10_JPEG_SHA256", tasks._sha256(archive))
    with pytest.raises(DataCorruptError, match=f"{archive} is damaged"):
        task.load(tmp_path / "data")


@pytest.mark.parametrize("compress", [True, False])
def test_a_truncated_idx_file_is_found_by_the_check(compress: bool, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "_SYSTEM_IDX_DIRS", {})
    tiny_idx(tmp_path / "fashion-mnist", compress)
    task = get_task("fashion-mnist")
    task.check(tmp_path)  # intact
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    damaged = tmp_path / "fashion-mnist" / name
    damaged.write_bytes(damaged.read_bytes()[:-40])
    with pytest.raises(DataCorruptError, match="is damaged") as err:
        task.check(tmp_path)
    assert str(damaged) in str(err.value) and "get the file again" in str(err.value)
    with pytest.raises(DataMissingError, match="apt-get install dataset-fashion-mnist"):
        task.check(tmp_path / "nowhere")


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    ("name", "remedies"),
    [
        ("mnist", ["--download", "DEPTHBENCH_DATA"]),
        ("fashion-mnist", ["apt-get install dataset-fashion-mnist", "--download", "DEPTHBENCH_DATA"]),
        ("cifar10", ["--download", "DEPTHBENCH_DATA", "cifar-10-batches-py"]),
        ("cifar10-jpeg", ["cifar10-jpeg.tar.xz", "DEPTHBENCH_DATA", tasks.CIFAR10_JPEG_SHA256]),
    ],
)
def test_missing_data_says_where_and_how(
    name: str, remedies: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "_SYSTEM_IDX_DIRS", {})
    with pytest.raises(DataMissingError) as err:
        get_task(name).load(tmp_path / "nowhere")
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and all(r in message for r in remedies)


# ---------------------------------------------------------------- pendulum


def energy(state: torch.Tensor) -> torch.Tensor:
    state = state.double()
    return 0.5 * state[..., 1] ** 2 - torch.cos(state[..., 0])


@pytest.mark.numerics
def test_pendulum_is_the_reference_flow() -> None:
    from scipy.integrate import solve_ivp  # scipy comes with scikit-learn

    task = get_task("pendulum")
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (2000, 500, 1000)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == split.y.dtype == torch.float32 and split.x.shape[1:] == split.y.shape[1:] == (2,)
        assert torch.equal(split.inputs(), split.x)
        # conserved up to float32: the stored states' rounding and cos in float32 (values of order 1)
        assert (energy(split.x) - energy(split.y)).abs().max() < 32 * torch.finfo(torch.float32).eps
        assert energy(split.x).max() < 1  # below the separatrix: every orbit oscillates
        # trajectories of 20 steps: y of one example is x of the next
        x, y = split.x.reshape(-1, 20, 2), split.y.reshape(-1, 20, 2)
        assert torch.equal(y[:, :-1], x[:, 1:])
    starts = {tuple(r) for s in (data.train, data.val, data.test) for r in s.x.reshape(-1, 20, 2)[:, 0].tolist()}
    assert len(starts) == 175  # no trajectory shared between splits
    assert_same(data, task.load())
    for i in (0, 777, 1999):
        x0 = data.train.x[i].double().numpy()
        sol = solve_ivp(lambda t, s: [s[1], -np.sin(s[0])], (0, PENDULUM_DELTA), x0, method="DOP853",
                        rtol=1e-12, atol=1e-12)
        stored = data.train.y[i].double().numpy()  # float32: within its rounding of the float64 flow
        assert np.abs(sol.y[:, -1] - stored).max() <= torch.finfo(torch.float32).eps * max(1.0, np.abs(stored).max())
    # the library's own integrator is converged: halving its step changes nothing at 1e-10
    x = data.test.x[:50].double()
    assert (tasks._pendulum_flow(x) - tasks._pendulum_flow(x, n=2 * tasks._PENDULUM_SUBSTEPS)).abs().max() < 1e-10
    assert torch.equal(pendulum_rhs(torch.tensor([[0.0, 1.0]])), torch.tensor([[1.0, -0.0]]))
    assert isinstance(data.train, Split)

"""`depthbench device prepare` (issue #23): wheels and data staged in ignored folders, the size of what travels,
what is left out when it does not fit, and the exact call printed. No network: wheels come from a local folder."""

from __future__ import annotations

import gzip
import json
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.data.tasks import DataCorruptError, DataMissingError
from benchmarks.execution import device_prepare
from benchmarks.execution.device_prepare import FASHION_FILES, MIB, prepare, tree_bytes
from benchmarks.protocols import STANDARD
from benchmarks.store.records import Record, save_record

from data_on_disk import shared_data_dir, skip_or_fail

VERSION = metadata.version("torchattacks")
WHEELS = {name: f"{name}-{metadata.version(name)}-py3-none-any.whl" for name in device_prepare.DEVICE_MISSING}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A stand-in depthbench checkout: a git repository with zoo/, benchmarks/ and the project's ignore rules."""
    root = tmp_path / "repo"
    for folder in ("zoo", "benchmarks"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("# code\n")
    (root / ".gitignore").write_text("/.whl/\n/.data/\n/local/\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "start")
    return root


@pytest.fixture
def fashion(tmp_path: Path) -> Path:
    """Valid IDX files (a few images): the staging checks their structure, not their content."""
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in FASHION_FILES:
        images = "images" in name
        header = np.array([0x00000803 if images else 0x00000801, 5, *([28, 28] if images else [])], dtype=">u4")
        body = np.zeros((5, 28, 28) if images else (5,), dtype=np.uint8)
        with gzip.open(folder / f"{name}.gz", "wb") as handle:
            handle.write(header.tobytes() + body.tobytes())
    return folder.parent


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name in WHEELS.values():
        (folder / name).write_bytes(b"wheel")
    return folder


def _cifar() -> Path:
    found = shared_data_dir()
    if found is None:
        skip_or_fail("cifar10-jpeg.tar.xz not found ($DEPTHBENCH_SHARED_DATA or ../shared/data)")
    return found


def test_everything_is_staged_sized_and_the_call_printed(checkout, fashion, wheels, capsys) -> None:
    (checkout / ".whl").mkdir()
    (checkout / ".whl" / "torchattacks-0.1-py3-none-any.whl").write_bytes(b"old")  # two versions stop pip there
    store = checkout / "local/results"
    save_record(store, Record(model="resnet", task="fashion-mnist", seed=0, protocol=STANDARD.header("fashion-mnist")))
    save_record(store, Record(model="resnet", task="digits", seed=0, protocol={"name": "smoke", "hash": "0" * 12}))
    prepared = prepare(checkout, [fashion, _cifar()], stores=[store], wheels_from=wheels, download=False)
    assert prepared.carry == [".whl", ".data/gpu"] and not prepared.dropped
    assert prepared.staged_tasks == ["fashion-mnist", "cifar10-jpeg"] and prepared.records == 1
    assert sorted(p.name for p in (checkout / ".whl").iterdir()) == sorted(WHEELS.values())
    stage = checkout / ".data/gpu"
    assert sorted(p.name for p in (stage / "fashion-mnist").iterdir()) == sorted(f"{f}.gz" for f in FASHION_FILES)
    assert (stage / "cifar10-jpeg.tar.xz").stat().st_size == (_cifar() / "cifar10-jpeg.tar.xz").stat().st_size
    manifest = json.loads((stage / "manifest.json").read_text())
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert manifest["commit"] == head.stdout.strip() and manifest["git_dirty"] is False
    assert manifest["code_files"] == ["benchmarks/__init__.py", "zoo/__init__.py"]
    assert manifest["code_sha256"] == device_prepare.code_fingerprint(checkout, manifest["code_files"])
    on_disk = (tree_bytes(checkout) + sum(p.stat().st_size for p in (checkout / ".whl").rglob("*"))
               + sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())) / MIB
    assert prepared.total_mib == pytest.approx(on_disk) and prepared.total_mib < 64
    text = prepared.text()
    assert 'carry:     [".whl", ".data/gpu"]' in text and "command:   bash .device/run --max-minutes 9" in text
    assert tree_bytes(checkout) < 1 * MIB, "the staged folders are ignored: they travel only as carried"


def test_what_does_not_fit_is_left_out_and_said(checkout, fashion, wheels) -> None:
    cifar = _cifar()
    limit = 2 + 18.5 * 1e6 / MIB - 0.5  # the margin, and not quite the archive
    prepared = prepare(checkout, [fashion, cifar], wheels_from=wheels, download=False, limit_mib=limit)
    assert prepared.staged_tasks == ["fashion-mnist"]
    assert prepared.dropped and prepared.dropped[0].startswith("cifar10-jpeg (17.7 MiB")
    assert not (checkout / ".data/gpu/cifar10-jpeg.tar.xz").exists()
    assert "LEFT OUT (does not fit): cifar10-jpeg" in prepared.text()


def test_missing_or_wrong_inputs_are_refused_with_what_to_do(checkout, fashion, wheels, tmp_path) -> None:
    with pytest.raises(DataMissingError, match="cifar10-jpeg.tar.xz.*--data-dir"):
        prepare(checkout, [fashion], wheels_from=wheels, download=False)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "cifar10-jpeg.tar.xz").write_bytes(b"not the archive")
    with pytest.raises(DataCorruptError, match="sha256"):
        prepare(checkout, [fashion, fake], wheels_from=wheels, download=False)
    for wheel in (checkout / ".whl").iterdir():  # staged by the calls above
        wheel.unlink()
    with pytest.raises(FileNotFoundError, match="no wheel of torchattacks"):
        prepare(checkout, [fashion, fake], wheels_from=tmp_path, download=False)
    (checkout / "benchmarks" / "__init__.py").write_text("# changed\n")
    with pytest.raises(ValueError, match="uncommitted changes"):
        prepare(checkout, [fashion, fake], wheels_from=wheels, download=False)
    with pytest.raises(ValueError, match="not a depthbench checkout"):
        prepare(tmp_path, [fashion], wheels_from=wheels, download=False)


def test_the_download_asks_pip_for_the_devices_python(checkout, fashion, monkeypatch) -> None:
    calls = []

    def fake_run(command, check):
        calls.append(command)
        package, version = command[-1].split("==")
        Path(command[command.index("-d") + 1], f"{package}-{version}-py3-none-any.whl").write_bytes(b"w")

    monkeypatch.setattr(device_prepare.subprocess, "run", fake_run)
    assert device_prepare.wheels(checkout, None, download=True) == list(WHEELS.values())
    assert [c[-1] for c in calls] == [f"{n}=={metadata.version(n)}" for n in device_prepare.DEVICE_MISSING]
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command and "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.12" and "manylinux2014_x86_64" in command


def test_the_cli_prints_the_call_as_json(checkout, fashion, wheels, monkeypatch, capsys) -> None:
    monkeypatch.chdir(checkout)
    monkeypatch.setattr("benchmarks.store.provenance.source_tree", lambda: checkout)
    assert main(["device", "prepare", "--data-dir", str(fashion), "--data-dir", str(_cifar()), "--wheels-from",
                 str(wheels), "--no-download", "--workers", "4", "--max-minutes", "8.5", "--json"]) == 0
    call = json.loads(capsys.readouterr().out)
    assert call["carry"] == [".whl", ".data/gpu"] and call["timeout_s"] == 600
    assert call["command"] == "bash .device/run --max-minutes 8.5 --workers 4"


def test_the_default_call_runs_as_many_at_once_as_the_cost_model_needs_to_fit(checkout, fashion, wheels, monkeypatch,
                                                                              capsys) -> None:
    # docs/gpu-cost-model.json: seed 0 of every model on fashion-mnist fits 9 minutes with 8 concurrent runs only
    monkeypatch.chdir(checkout)
    monkeypatch.setattr("benchmarks.store.provenance.source_tree", lambda: checkout)
    assert main(["device", "prepare", "--data-dir", str(fashion), "--data-dir", str(_cifar()), "--wheels-from",
                 str(wheels), "--no-download", "--json"]) == 0
    call = json.loads(capsys.readouterr().out)
    assert call["command"] == "bash .device/run --max-minutes 9 --workers 8"
    sessions = json.loads((Path(__file__).parents[1] / "docs/gpu-cost-model.json").read_text())["session_one_seed"]
    assert sessions["fashion-mnist, workers=8"]["total"] <= 9 * 60 < sessions["fashion-mnist, workers=4"]["total"]

"""A GPU session's own logic on CPU (issue #23): priority order, the budget that starts only what fits, the archive
packed as records appear and at the end, the stop at the budget's end, `.device/run`'s fallback pack, and the import
of the archive into a store."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.execution import device_session, runner
from benchmarks.execution.device_import import import_archive
from benchmarks.execution.device_prepare import code_fingerprint
from benchmarks.execution.device_session import Budget, SessionSettings, model_order, run_session
from benchmarks.protocols import SMOKE
from benchmarks.store.records import Record, load_record, save_record

REPO = Path(__file__).resolve().parents[1]
DIGITS = SMOKE.task_hash("digits")


def _record(root: Path, model: str, seconds: float, task: str = "digits", seed: int = 0) -> Path:
    record = Record(model=model, task=task, seed=seed, protocol=SMOKE.header(task),
                    metrics={"accuracy": 0.9}, provenance={"phase_seconds": {"train": seconds}})
    return save_record(root, record)


def _estimates(path: Path, seconds: dict[str, float]) -> Path:
    runs = [{"task": "digits", "model": m, "seconds": s, "phases": {"train": s}, "surrogate": 0.0}
            for m, s in seconds.items()]
    path.write_text(json.dumps({"tier": "smoke", "hashes": {"digits": DIGITS}, "runs": runs}))
    return path


def test_the_baseline_runs_first_then_the_cheapest_or_on_several_workers_the_costliest() -> None:
    estimates = {("a", "resnet"): {"seconds": 1}, ("a", "neural-ode"): {"seconds": 90},
                 ("b", "neural-ode"): {"seconds": 90}, ("a", "inresnet"): {"seconds": 5},
                 ("b", "anode"): {"seconds": 150}}
    models = ["neural-ode", "inresnet", "resnet", "anode", "sonode"]
    assert model_order(models, ["a", "b"], estimates) == ["resnet", "inresnet", "anode", "neural-ode", "sonode"]
    # 180 > 150 > 5 over both tasks; no estimate: last
    assert model_order(models, ["a", "b"], estimates, workers=4) == ["resnet", "neural-ode", "anode", "inresnet",
                                                                     "sonode"]


def test_the_budget_admits_what_fits_and_learns_from_finished_runs(tmp_path: Path) -> None:
    now = [0.0]
    estimates = {("digits", "resnet"): {"seconds": 10.0, "surrogate": 0.0},
                 ("digits", "anode"): {"seconds": 40.0, "surrogate": 20.0}}
    budget = Budget(deadline=100.0, estimates=estimates, results=tmp_path, before=frozenset(),
                    clock=lambda: now[0], say=lambda text: None)
    assert budget.admit("digits", "resnet", 0)  # 10 s of 100
    assert budget.admit("digits", "anode", 0)  # 40 s plus the surrogate's 20 s
    now[0] = 45.0
    assert not budget.admit("digits", "anode", 0), "60 s estimated, 55 s left"
    budget.surrogate_cached = lambda task, seed: True
    assert budget.admit("digits", "anode", 0), "without the surrogate's training it fits"
    _record(tmp_path, "resnet", 5.0)  # the first run took half its estimate: later estimates halve
    assert budget.correction() == pytest.approx(0.5)
    now[0] = 75.0
    assert budget.admit("digits", "anode", 1), "40 s x 0.5 fits in 25 s"
    assert budget.admit("digits", "unknown-model", 0), "no estimate: admitted while time is left"
    now[0] = 100.0
    assert not budget.admit("digits", "unknown-model", 0)
    assert [d["admitted"] for d in budget.decisions] == [True, True, False, True, True, True, False]


def test_a_stale_cost_table_estimates_nothing(tmp_path: Path) -> None:
    path = _estimates(tmp_path / "cost.json", {"resnet": 3.0})
    assert device_session.load_estimates(path, SMOKE)[("digits", "resnet")]["seconds"] == 3.0
    table = json.loads(path.read_text())
    table["hashes"]["digits"] = "0" * 12  # computed for another protocol version
    path.write_text(json.dumps(table))
    assert device_session.load_estimates(path, SMOKE) == {}
    assert device_session.load_estimates(tmp_path / "missing.json", SMOKE) == {}


def test_the_commit_is_declared_only_for_the_code_that_was_prepared(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo/a.py").write_text("x = 1\n")
    manifest = {"commit": "ab12cd3", "git_dirty": False, "code_files": ["zoo/a.py"],
                "code_sha256": code_fingerprint(tmp_path, ["zoo/a.py"])}
    monkeypatch.chdir(tmp_path)
    assert device_session.code_matches(manifest) == "as prepared"
    assert device_session.code_matches({**manifest, "git_dirty": True}).startswith("prepared from uncommitted")
    (tmp_path / "zoo/a.py").write_text("x = 2\n")
    assert device_session.code_matches(manifest).startswith("the code differs")
    (tmp_path / "zoo/a.py").unlink()
    assert device_session.code_matches(manifest).startswith("the code differs")
    assert device_session.code_matches({}) == "no prepared commit"


def test_workers_take_runs_only_as_the_budget_admits(tmp_path: Path) -> None:
    """The pool path of the runner with an admission rule: each run is judged when a worker is free for it."""
    asked = []

    def admit(task, model, seed):
        asked.append(model)
        return model != "inresnet"

    summary = runner.run_tier(SMOKE, models=["resnet", "inresnet", "inresnet-lambda"], tasks=["digits"],
                              results_dir=tmp_path, device=torch.device("cpu"), progress=False, workers=2,
                              check_models=False, admit=admit)
    assert asked == ["resnet", "inresnet", "inresnet-lambda"]
    assert sorted(p.parent.name for p in summary.written) == ["inresnet-lambda", "resnet"]
    assert [p.parent.name for p in summary.postponed] == ["inresnet"]


def test_a_session_runs_what_fits_packs_one_archive_and_imports(tmp_path: Path) -> None:
    """Smoke tier on digits: resnet fits, continuousnet-euler's estimate does not; the archive holds the record,
    the logs and the timings; the import files the record in a store, then finds it a duplicate."""
    carried = tmp_path / "stage/results"
    done = _record(carried, "inresnet", 1.0)  # an earlier session's record travels in and is skipped
    settings = SessionSettings(tier="smoke", max_minutes=3.0, out=tmp_path / "out", work=tmp_path / "work",
                               stage=tmp_path / "stage", device="cpu", models=["continuousnet-euler", "resnet",
                                                                               "inresnet"], tasks=["digits"],
                               estimates=_estimates(tmp_path / "cost.json",
                                                    {"resnet": 1.0, "continuousnet-euler": 1e6}))
    assert run_session(settings) == 3  # a run postponed
    (archive,) = (tmp_path / "out").iterdir()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        session = json.load(tar.extractfile("session.json"))
    assert f"results/digits/{DIGITS}/resnet/seed0.json" in names
    assert not any("inresnet" in n or "continuousnet" in n for n in names)
    assert {"session.log", "device.json", "child.json"} <= set(names)
    assert session["stopped"] == "finished" and session["exit_status"] == 3
    assert session["postponed"] == [f"digits/{DIGITS}/continuousnet-euler/seed0.json"]
    (run,) = session["runs"]
    assert run["model"] == "resnet" and run["status"] == "ok" and run["phase_seconds"]["train"] > 0
    assert run["estimated_phase_seconds"] == {"train": 1.0}
    assert "digits load" in session["setup_seconds"] and "model contract checks" in session["setup_seconds"]
    assert [d["model"] for d in session["budget"]] == ["resnet", "continuousnet-euler"]

    store = tmp_path / "store"
    report = import_archive(archive, store, sessions=tmp_path / "sessions")
    assert report.new == [f"results/digits/{DIGITS}/resnet/seed0.json"] and not report.invalid
    assert load_record(store / report.new[0].removeprefix("results/"), store).status == "ok"
    assert (tmp_path / "sessions" / archive.name.removesuffix(".tar.gz") / "session.json").is_file()
    again = import_archive(archive, store, sessions=tmp_path / "sessions")
    assert again.duplicate == report.new and not again.new
    assert done.is_file()


def _stand_in_child(record: Path, wait_for: str) -> tuple[str, str]:
    """A child that writes one record, waits for the supervisor's archive to appear, then hangs (or exits 0)."""
    script = textwrap.dedent(f"""
        import json, pathlib, shutil, sys, time
        plan = json.loads(pathlib.Path(sys.argv[1]).read_text())
        target = pathlib.Path(plan["results"]) / "digits/{DIGITS}/resnet/seed0.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy({str(record)!r}, target)
        out = pathlib.Path(plan["work"]).parent / "out"
        for _ in range(600):
            if list(out.glob("depthbench-gpu-*.tar.gz")):
                break
            time.sleep(0.1)
        else:
            sys.exit(5)
        {"time.sleep(600)" if wait_for == "hang" else "sys.exit(0)"}
    """)
    return ("-c", script)


def test_the_archive_is_rewritten_as_soon_as_a_record_appears(tmp_path: Path, monkeypatch) -> None:
    source = _record(tmp_path / "made", "resnet", 2.0)
    monkeypatch.setattr(device_session, "CHILD", _stand_in_child(source, "exit"))
    settings = SessionSettings(tier="smoke", max_minutes=5.0, out=tmp_path / "out", work=tmp_path / "work",
                               stage=tmp_path / "none", device="cpu")
    assert run_session(settings) == 0, "the child saw the archive while it was still running"


def test_a_run_past_the_budget_is_stopped_and_what_was_done_is_packed(tmp_path: Path, monkeypatch) -> None:
    source = _record(tmp_path / "made", "resnet", 2.0)
    monkeypatch.setattr(device_session, "CHILD", _stand_in_child(source, "hang"))
    monkeypatch.setattr(device_session, "STOP_BEFORE_END", 0.0)
    settings = SessionSettings(tier="smoke", max_minutes=0.25, out=tmp_path / "out", work=tmp_path / "work",
                               stage=tmp_path / "none", device="cpu")
    assert run_session(settings) == 3
    (archive,) = (tmp_path / "out").iterdir()
    with tarfile.open(archive) as tar:
        session = json.load(tar.extractfile("session.json"))
        assert f"results/digits/{DIGITS}/resnet/seed0.json" in tar.getnames()
    assert session["stopped"].startswith("stopped at the end of the time budget")
    assert session["wall_seconds"] < 0.25 * 60 + device_session.STOP_GRACE + 10


def test_a_sigterm_from_outside_stops_the_runs_and_packs(tmp_path: Path) -> None:
    source = _record(tmp_path / "made", "resnet", 2.0)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from benchmarks.execution import device_session
        device_session.CHILD = {_stand_in_child(source, "hang")!r}
        sys.exit(device_session.run_session(device_session.SessionSettings(
            tier="smoke", max_minutes=10.0, out=Path({str(tmp_path / "out")!r}), work=Path({str(tmp_path / "work")!r}),
            stage=Path({str(tmp_path / "none")!r}), device="cpu")))
    """)
    supervisor = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True)
    try:
        for _ in range(600):  # the first pack, once the stand-in's record is there
            if list((tmp_path / "out").glob("depthbench-gpu-*.tar.gz")):
                break
            time.sleep(0.1)
        supervisor.terminate()
        assert supervisor.wait(timeout=60) == 130
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
    (archive,) = (tmp_path / "out").iterdir()
    with tarfile.open(archive) as tar:
        assert json.load(tar.extractfile("session.json"))["stopped"] == "interrupted from outside"
        assert f"results/digits/{DIGITS}/resnet/seed0.json" in tar.getnames()


def test_the_device_script_packs_its_logs_when_python_or_the_wheels_fail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"  # a checkout of its own: the script runs from its folder's parent
    (repo / ".device").mkdir(parents=True)
    shutil.copy(REPO / ".device/run", repo / ".device/run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 1\n")
    (bin_dir / "python3").chmod(0o755)
    for out, code, said in (("out", 1, "no torch here"), ("out-wheels", 2, "installing the carried wheels failed")):
        if code == 2:
            (repo / ".whl").mkdir()
            (repo / ".whl/broken-1.0-py3-none-any.whl").write_bytes(b"not a wheel")
        env = {**os.environ, "OUT": str(tmp_path / out), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        done = subprocess.run(["bash", str(repo / ".device/run"), "--max-minutes", "1"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == code, done.stderr
        (archive,) = (tmp_path / out).iterdir()
        assert archive.name.startswith("depthbench-gpu-") and archive.name.endswith("-failed.tar.gz")
        with tarfile.open(archive) as tar:
            assert said in tar.extractfile("./wrapper.log").read().decode()


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_import_validates_every_record_and_keeps_the_stores_on_conflict(tmp_path: Path, capsys) -> None:
    good = _record(tmp_path / "made", "resnet", 2.0)
    data = good.read_bytes()
    where = f"results/digits/{DIGITS}/resnet/seed0.json"
    other = json.loads(data)
    other["metrics"]["accuracy"] = 0.5
    archive = _archive(tmp_path / "a.tar.gz", {
        where: data,
        f"results/digits/{DIGITS}/anode/seed0.json": data,  # the resnet record filed under another model
        f"results/digits/{DIGITS}/sonode/seed0.json": b"{not json",
        "results/../../escape/x/seed0.json": data,
        f"results/digits/{DIGITS}/noisy/seed1.json": json.dumps({**json.loads(data), "seed": 1,
                                                                     "model": "noisy", "status": "maybe"}).encode(),
    })
    store = tmp_path / "store"
    assert main(["device", "import", str(archive), "--results", str(store)]) == 1  # invalid members
    err = capsys.readouterr().err
    assert "imported 1 new records" in err and "4 invalid" in err
    assert not (tmp_path / "escape").exists()
    changed = _archive(tmp_path / "b.tar.gz", {where: json.dumps(other).encode()})
    report = import_archive(changed, store, sessions=tmp_path / "s")
    assert report.conflict == [where] and (store / where.removeprefix("results/")).read_bytes() == data
    assert import_archive(changed, store, sessions=tmp_path / "s", replace=True).new == [where]
    assert load_record(store / where.removeprefix("results/"), store).metrics["accuracy"] == 0.5

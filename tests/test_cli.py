"""What a new user meets on the command line: a local store by default, checks before any training, progress
lines through pipes, meaningful exit codes, damaged records named, an explicit publish step.

Training is replaced by an instant fake (`fake_runs`) wherever the behaviour under test is the command line's;
`test_runner.py` covers real training."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from benchmarks import cli
from benchmarks.cli import main
from benchmarks.data import tasks
from benchmarks.data.tasks import DataCorruptError, DataMissingError
from benchmarks.execution import runner
from benchmarks.protocols import SMOKE, Recipe
from benchmarks.store.records import RecordError, iter_records, load_record, record_path, save_record

from cli_helpers import fake_record, snapshot
from waiting import SAFETY_NET_S

# ---------------------------------------------------------------- a local store, its table, the comparison


def test_run_fills_a_local_store_renders_it_locally_and_compares_with_the_published(repo, fake_runs, capsys):
    published, readme = snapshot(repo / "results"), (repo / "README.md").read_bytes()
    citation = (repo / "CITATION.cff").read_bytes()
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits"]) == 0
    assert fake_runs["calls"] == [("digits", "resnet", 0), ("digits", "anode", 0)]
    assert {r.model for _, r in iter_records(repo / "local/results")} == {"resnet", "anode"}
    assert snapshot(repo / "results") == published, "the published store is only written by `publish`"
    assert (repo / "README.md").read_bytes() == readme and (repo / "CITATION.cff").read_bytes() == citation
    boards = repo / "local/leaderboards"
    assert (boards / "index.html").is_file() and (boards / "smoke/digits.md").is_file()
    assert not (repo / "leaderboards").exists()
    out = capsys.readouterr().out
    assert "anode                  60.00  (n=1)" in out  # the user's own table
    assert "local/leaderboards/index.html" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  digits ")}
    assert "published  62.00% (n=1), this run  60.00% (n=1): reproduces" in lines["resnet"]
    assert "published  95.00% (n=1), this run  60.00% (n=1): DIFFERS (-35.00 pt, allowed ±10.00 pt" in lines["anode"]
    # `.gitignore` keeps the local store out of commits
    assert "/local/" in (Path(__file__).parents[1] / ".gitignore").read_text().splitlines()


def test_publish_copies_validated_records_into_the_published_store(repo, fake_runs, capsys):
    assert main(["run", "--tier", "smoke", "--models", "inresnet", "--tasks", "digits", "--no-leaderboard"]) == 0
    assert "no published record of this protocol hash" in capsys.readouterr().out
    assert main(["publish"]) == 0
    assert "published 1 records into results" in capsys.readouterr().err
    # relative: as messages say
    local = record_path(Path("local/results"), "inresnet", "digits", SMOKE.task_hash("digits"), 0)
    target = record_path(Path("results"), "inresnet", "digits", SMOKE.task_hash("digits"), 0)
    assert target.read_bytes() == local.read_bytes()
    assert main(["publish"]) == 0 and "published 0 records into results (1 already there" in capsys.readouterr().err
    # A published record that differs is not overwritten silently.
    save_record(Path("local/results"), fake_record(SMOKE, "digits", "inresnet", 0, accuracy=0.1))
    assert main(["publish"]) == 1
    assert str(target) in capsys.readouterr().err and json.loads(target.read_text())["metrics"]["accuracy"] == 0.6
    assert main(["publish", "--replace"]) == 0 and json.loads(target.read_text())["metrics"]["accuracy"] == 0.1
    # A damaged local record stops the whole publication, named.
    local.write_text("{")
    before = snapshot(repo / "results")
    assert main(["publish"]) == 1
    assert f"{local}: unreadable" in capsys.readouterr().err and snapshot(repo / "results") == before


# ---------------------------------------------------------------- progress through a pipe


def test_progress_lines_when_stderr_is_not_a_terminal(repo, fake_runs, capsys):
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-leaderboard"]) == 0
    err = capsys.readouterr().err  # capsys's stderr is not a TTY, like tox's or CI's
    assert "run 1/2 started: digits resnet seed 0" in err
    assert "run 1/2 done: digits resnet seed 0" in err and "1 runs left, about" in err
    assert "run 2/2 done: digits anode seed 0" in err and "0 runs left)" in err
    assert "loading the data of digits" in err


# ---------------------------------------------------------------- exit codes


def test_exit_code_is_1_with_the_failed_runs_listed(repo, fake_runs, capsys):
    fake_runs["failing"].add("anode")
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-leaderboard"]) == 1
    err = capsys.readouterr().err
    assert "1 of the requested runs FAILED" in err
    assert "  digits anode seed 0: TrainingDiverged: loss is nan at epoch 1" in err
    # Done (a failed run is a result too) -> 0 on rerun, but the earlier failure is mentioned.
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-leaderboard"]) == 0
    assert "1 of those already done are failed runs" in capsys.readouterr().err
    fake_runs["failing"].clear()
    assert main(["run", "--tier", "smoke", "--models", "anode", "--tasks", "digits", "--no-leaderboard",
                 "--retry-failed"]) == 0


def test_exit_code_is_3_when_max_minutes_leaves_runs_undone(repo, fake_runs, capsys):
    assert main(["run", "--tier", "smoke", "--tasks", "digits", "--max-minutes", "0", "--no-leaderboard"]) == 3
    assert f"{len(SMOKE.models)} runs not started within --max-minutes 0" in capsys.readouterr().err
    assert not fake_runs["calls"]


# ---------------------------------------------------------------- arguments, device and store checked up front


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "-1"], "non-negative integers"),
    (["--seeds", ""], "--seeds: empty list"),
    (["--seeds", " , "], "--seeds: empty list"),
    (["--models", ""], "--models: empty list"),
    (["--tasks", ""], "--tasks: empty list"),
    (["--max-minutes", "nan"], "finite number of minutes"),
    (["--max-minutes", "inf"], "finite number of minutes"),
    (["--workers", "0"], "--workers: must be a whole number >= 1"),
])
def test_bad_arguments_are_refused_by_the_parser(argv, message, repo, fake_runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--tier", "smoke", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not fake_runs["calls"] and not (repo / "local").exists()


def test_the_runner_refuses_empty_lists_and_negative_seeds(tmp_path, fake_runs):
    for kwargs, message in (({"seeds": []}, "no seeds given"), ({"models": []}, "no models given"),
                            ({"tasks": []}, "no tasks given"), ({"seeds": [-1]}, "non-negative integers"),
                            ({"max_minutes": float("nan")}, "finite number")):
        with pytest.raises(ValueError, match=message):
            runner.run_tier(SMOKE, results_dir=tmp_path, device=torch.device("cpu"), progress=False, **kwargs)
    assert not fake_runs["calls"] and not list(tmp_path.iterdir())


def test_a_cuda_device_on_the_smoke_tier_gets_the_right_message(repo, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "--tier", "smoke", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA GPU is available here" in err and "leave --device out" in err
    assert "meant for a CUDA GPU" not in err  # what it said before: the smoke tier is not meant for one
    assert main(["run", "--tier", "smoke", "--device", "gpu"]) == 2
    assert "'gpu' is not a torch device" in capsys.readouterr().err


def test_an_unwritable_store_stops_the_run_before_training(repo, fake_runs, capsys):
    (repo / "a-file").write_text("")
    assert main(["run", "--tier", "smoke", "--tasks", "digits", "--results", "a-file/results"]) == 2
    assert "cannot write records under a-file/results" in capsys.readouterr().err
    assert not fake_runs["calls"]
    # The probe leaves nothing behind in a store that is writable.
    runner.check_writable(repo / "store")
    assert not list((repo / "store").iterdir())


def test_missing_data_of_any_task_is_found_before_the_first_run(tmp_path, monkeypatch, fake_runs):
    monkeypatch.setattr(tasks, "_SYSTEM_IDX_DIRS", {})
    protocol = dataclasses.replace(SMOKE, name="two-tasks", tasks=("digits", "fashion-mnist"),
                                   recipes={**SMOKE.recipes, "fashion-mnist": Recipe(epochs=1, batch_size=32)})
    with pytest.raises(DataMissingError, match="fashion-mnist"):
        runner.run_tier(protocol, models=["resnet"], results_dir=tmp_path / "r", data_dir=tmp_path / "no-data",
                        device=torch.device("cpu"), progress=False)
    assert not fake_runs["calls"], "no digits run before the missing fashion-mnist is found"


def test_a_truncated_archive_is_a_message_before_training(repo, monkeypatch, fake_runs, capsys):
    data = repo / "data"
    data.mkdir()
    with tarfile.open(data / "cifar10-jpeg.tar.xz", "w:xz") as tar:
        info = tarfile.TarInfo("cifar10-jpeg/train/cat/0.jpg")
        blob = bytes(range(256)) * 64
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    archive = data / "cifar10-jpeg.tar.xz"
    archive.write_bytes(archive.read_bytes()[:100])
    protocol = dataclasses.replace(SMOKE, name="jpeg", tasks=("digits", "cifar10-jpeg"),
                                   recipes={**SMOKE.recipes, "cifar10-jpeg": Recipe(epochs=1, batch_size=32)})
    monkeypatch.setattr(cli, "get_protocol", lambda name: protocol)
    assert main(["run", "--tier", "smoke", "--models", "resnet", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{archive} is not the published archive" in err and "Copy cifar10-jpeg.tar.xz again" in err
    assert "Traceback" not in err and not fake_runs["calls"]
    with pytest.raises(DataCorruptError):  # the library call raises the same, before any run
        runner.run_tier(protocol, models=["resnet"], results_dir=repo / "r", data_dir=data,
                        device=torch.device("cpu"), progress=False)


# ---------------------------------------------------------------- damaged records


def damage(root: Path) -> dict[str, Path]:
    """Three kinds of damage in a store of four good smoke records."""
    for model in ("resnet", "anode", "inresnet", "neural-ode"):
        save_record(root, fake_record(SMOKE, "digits", model, 0))
    paths = {m: record_path(root, m, "digits", SMOKE.task_hash("digits"), 0) for m in ("resnet", "anode", "inresnet")}
    paths["resnet"].write_text(paths["resnet"].read_text()[:50])  # truncated: bad JSON
    data = json.loads(paths["anode"].read_text())
    del data["status"]
    paths["anode"].write_text(json.dumps(data))  # missing field
    data = json.loads(paths["inresnet"].read_text())
    data["model"] = "neural-ode"
    paths["inresnet"].write_text(json.dumps(data))  # another run's record in this run's place
    return paths


def test_damaged_records_are_named_and_skipped_by_the_leaderboard(tmp_path, capsys):
    paths = damage(tmp_path / "results")
    with pytest.raises(RecordError, match=str(paths["resnet"])):
        load_record(paths["resnet"])
    with pytest.raises(RecordError, match="missing field"):
        list(iter_records(tmp_path / "results", strict=True))
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "lb"),
                 "--readme", str(tmp_path / "README.md"), "--citation", str(tmp_path / "CITATION.cff")]) == 0
    err = capsys.readouterr().err
    assert f"skipping damaged record {paths['resnet']}: unreadable (Unterminated string" in err
    assert f"{paths['anode']}: missing field(s) status" in err
    digits_hash = SMOKE.task_hash("digits")
    assert f"{paths['inresnet']}: holds the record of digits/{digits_hash}/neural-ode/seed0" in err
    table = (tmp_path / "lb/smoke/digits.md").read_text()
    assert "neural-ode" in table and "[seed0]" in table and "| [resnet]" not in table


def test_run_redoes_damaged_records(tmp_path, fake_runs, capsys):
    paths = damage(tmp_path / "results")
    summary = runner.run_tier(SMOKE, models=["resnet", "anode", "inresnet", "neural-ode"], tasks=["digits"],
                              results_dir=tmp_path / "results", device=torch.device("cpu"), progress=False)
    assert sorted(fake_runs["calls"]) == [("digits", m, 0) for m in ("anode", "inresnet", "resnet")]
    assert sorted(summary.redone) == sorted(paths.values()) and len(summary.skipped) == 1
    assert f"will redo a damaged record: {paths['resnet']}" in capsys.readouterr().err
    assert len(list(iter_records(tmp_path / "results", strict=True))) == 4  # overwritten with whole records


def test_progress_lines_come_through_a_real_pipe(tmp_path):
    """What tox shows: a real `depthbench run` in a subprocess whose stderr is a pipe (one fast real run)."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "run", "--tier", "smoke", "--models", "resnet", "--tasks",
         "pendulum", "--results", str(tmp_path / "results"), "--published", str(tmp_path / "none"),
         "--no-leaderboard"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=SAFETY_NET_S,
        env={**os.environ, "OMP_NUM_THREADS": "1", "DEPTHBENCH_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "run 1/1 started: pendulum resnet seed 0" in result.stderr
    assert "run 1/1 done: pendulum resnet seed 0 in " in result.stderr and "0 runs left)" in result.stderr
    assert "\r" not in result.stderr, "no carriage-return bar redraws in a pipe"
    assert "pendulum: test MSE" in result.stdout and "resnet" in result.stdout


def test_every_record_field_is_type_checked_when_a_record_is_read() -> None:
    # A field added to Record but not to the reader's checks makes every new record read back as damaged.
    from dataclasses import fields

    from benchmarks.store import records

    assert set(records._TYPES) == {f.name for f in fields(records.Record)}

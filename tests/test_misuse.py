"""The misuses of issue #20, each as a user typed it: a clear message naming the problem and the fix, the documented
exit code (2: nothing ran; 3: runs left undone, rerun to go on), before any training where it can be checked
before, and nothing committed deleted or overwritten because of an empty or wrong input. Training is the instant
fake of `fake_runs` wherever the behaviour under test is the command line's."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.execution import executors, runner
from benchmarks.io import DiskFullError, atomic_output, is_disk_full
from benchmarks.protocols import SMOKE
from benchmarks.store.records import iter_records, record_path, save_record

from cli_helpers import fake_record, snapshot

DIGITS_HASH = SMOKE.task_hash("digits")
SMOKE_DIGITS = ["run", "--tier", "smoke", "--models", "resnet", "--tasks", "digits", "--no-progress"]


def refused(argv: list[str], capsys) -> str:
    """The stderr of a command line the parser refuses (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- 1, 12: seeds


def test_seeds_beyond_numpys_limit_or_negative_are_refused_before_anything(repo, fake_runs, capsys) -> None:
    err = refused([*SMOKE_DIGITS, "--seeds", "0,99999999999"], capsys)
    assert "a seed is a whole number from 0 to 4294967295" in err and "99999999999" in err
    assert "from 0 to 4294967295" in refused(["evaluate", "resnet", "--checkpoint", "w.pt", "--task", "digits",
                                              "--seed", "-1"], capsys)
    assert "from 0 to 4294967295" in refused(["status", "--seeds", str(2**32)], capsys)
    assert not fake_runs["calls"] and not (repo / "local").exists()
    with pytest.raises(ValueError, match="up to 4294967295"):
        runner.run_tier(SMOKE, models=["resnet"], tasks=["digits"], seeds=[2**32], results_dir=repo / "r",
                        device=torch.device("cpu"), progress=False)
    assert main([*SMOKE_DIGITS, "--seeds", str(2**32 - 1), "--no-leaderboard"]) == 0  # the limit itself is fine


# ---------------------------------------------------------------- 2, 11: stores that are not stores, empty stores


def test_a_results_dir_that_is_no_store_is_refused_and_nothing_is_written(repo, fake_runs, capsys) -> None:
    # "." (the checkout, as `/` or a home directory would be: files at the top) and a file. Never `/` itself here:
    # were the check ever lost, the test would write a record into the machine's root.
    before = snapshot(repo)
    for results, why in ((".", "is not a results store: it holds the file CITATION.cff"),
                         ("README.md", "is a file, not a results store")):
        assert main([*SMOKE_DIGITS, "--results", results]) == 2
        assert why in capsys.readouterr().err
    assert not fake_runs["calls"] and snapshot(repo) == before
    from benchmarks.store.locations import store_problem

    assert "is not a results store" in store_problem(Path("/"))  # what `--results /` meets


def test_another_store_renders_beside_itself_and_never_over_the_default_leaderboards(repo, fake_runs, capsys) -> None:
    assert main(SMOKE_DIGITS) == 0
    boards = snapshot(repo / "local/leaderboards")
    assert "smoke/digits.md" in boards
    assert main([*SMOKE_DIGITS, "--results", "other"]) == 0  # no --out: rendered beside it, not in local/
    assert (repo / "other-leaderboards/smoke/digits.md").is_file()
    assert snapshot(repo / "local/leaderboards") == boards
    # Told to render there explicitly, another store is refused rather than allowed to delete the tables.
    assert main([*SMOKE_DIGITS, "--results", "third", "--out", "local/leaderboards"]) == 2
    err = capsys.readouterr().err
    assert "local/leaderboards holds the leaderboards of the records in" in err and "--out DIR" in err
    assert snapshot(repo / "local/leaderboards") == boards


def test_leaderboard_on_an_empty_or_wrong_store_leaves_the_committed_files_alone(repo, capsys) -> None:
    def committed() -> dict[str, bytes]:
        return {**snapshot(repo / "leaderboards"), "README.md": (repo / "README.md").read_bytes(),
                "CITATION.cff": (repo / "CITATION.cff").read_bytes()}

    assert main(["leaderboard"]) == 0  # the committed tables, from results/
    before = committed()
    assert "smoke/digits.md" in before
    (repo / "empty").mkdir()
    (repo / "damaged/digits/x/resnet").mkdir(parents=True)
    (repo / "damaged/digits/x/resnet/seed0.json").write_text("{")
    for store, message in (("empty", "no readable record under empty"), ("damaged", "no readable record"),
                           ("README.md", "is a file, not a results store"), ("nowhere", "no results store at")):
        assert main(["leaderboard", "--results", store]) == 2
        assert message in capsys.readouterr().err
    # A store with records, but not the one the tables were made from: refused too, rather than replacing them.
    save_record(repo / "local/results", fake_record(SMOKE, "digits", "resnet", 0))
    assert main(["leaderboard", "--results", "local/results"]) == 2
    assert f"leaderboards holds the leaderboards of the records in {repo}/results" in capsys.readouterr().err
    assert committed() == before
    # Tables rendered elsewhere never point README.md at themselves, nor rewrite CITATION.cff.
    assert main(["leaderboard", "--out", "elsewhere"]) == 0
    assert "README.md and CITATION.cff are left as they are" in capsys.readouterr().err
    assert (repo / "elsewhere/smoke/digits.md").is_file() and committed() == before


def test_status_of_a_file_or_a_mistyped_store_is_an_error(repo, capsys) -> None:
    for store, message in (("README.md", "is a file, not a results store"), ("reslts", "no results store at reslts")):
        assert main(["status", "--results", store]) == 2
        assert message in capsys.readouterr().err
    assert main(["status", "--results", "results"]) == 0
    assert "1 done" in capsys.readouterr().out


# ---------------------------------------------------------------- 3, 4, 14: device, cache and --out before training


def test_the_meta_device_is_refused(repo, fake_runs, capsys) -> None:
    assert main([*SMOKE_DIGITS, "--device", "meta"]) == 2
    assert "the meta device holds shapes, not numbers" in capsys.readouterr().err
    assert not fake_runs["calls"]
    with pytest.raises(ValueError, match="meta device"):
        runner.run_tier(SMOKE, models=["resnet"], tasks=["digits"], results_dir=repo / "r",
                        device=torch.device("meta"), progress=False)


def test_an_unwritable_cache_is_named_before_training(repo, fake_runs, monkeypatch, capsys) -> None:
    (repo / "a-file").write_text("")
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(repo / "a-file/cache"))
    assert main(SMOKE_DIGITS) == 2
    err = capsys.readouterr().err
    assert f"cannot write the cache (decoded data, attack surrogates) under {repo}/a-file/cache" in err
    assert f"DEPTHBENCH_CACHE={repo}/a-file/cache" in err and "set DEPTHBENCH_CACHE to a writable directory" in err
    assert not fake_runs["calls"]


def test_an_unwritable_leaderboard_folder_is_found_before_training(repo, fake_runs, capsys) -> None:
    (repo / "a-file").write_text("")
    assert main([*SMOKE_DIGITS, "--out", "a-file/boards"]) == 2
    err = capsys.readouterr().err
    assert "cannot write leaderboards under a-file/boards" in err and "--no-leaderboard" in err
    assert not fake_runs["calls"] and not (repo / "local").exists()


# ---------------------------------------------------------------- 5, 6: records validated by type and range


def _bad_record(root: Path, model: str, change) -> Path:
    path = save_record(root, fake_record(SMOKE, "digits", model, 0))
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_records_of_the_wrong_type_or_out_of_range_are_named_skipped_and_never_published(repo, capsys) -> None:
    local = repo / "local/results"
    save_record(local, fake_record(SMOKE, "digits", "inresnet", 0, accuracy=0.7))
    strings = _bad_record(local, "neural-ode", lambda d: d.update(depth_transfer=["euler", "rk4"]))
    huge = _bad_record(local, "anode", lambda d: d["metrics"].update(accuracy=5.0, params=-3))
    negative = _bad_record(local, "resnet", lambda d: d["metrics"].update(params=-3))
    before = snapshot(repo / "results")
    assert main(["publish"]) == 1
    err = capsys.readouterr().err
    assert f"{strings.relative_to(repo)}: depth_transfer[0] should be an object" in err
    assert f"{huge.relative_to(repo)}: metric 'accuracy' is 5.0, outside its range [0, 1]" in err
    assert f"{negative.relative_to(repo)}: metric 'params' is -3, outside its range [0, inf]" in err
    assert snapshot(repo / "results") == before
    assert main(["leaderboard", "--results", str(local), "--out", "lb", "--readme", "r.md", "--citation", "c.cff"]) == 0
    err = capsys.readouterr().err
    assert f"skipping damaged record {huge}" in err and f"skipping damaged record {strings}" in err
    table = (repo / "lb/smoke/digits.md").read_text()
    assert "500.00" not in table and "[anode]" not in table and "[inresnet]" in table


# ---------------------------------------------------------------- 8: a text file as checkpoint


def test_a_text_file_as_checkpoint_gets_a_message(repo, capsys) -> None:
    (repo / "weights.pt").write_text("hello, these are not weights\n")
    assert main(["evaluate", "resnet", "--checkpoint", "weights.pt", "--task", "digits", "--results", "r",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "weights.pt is not a weights-only checkpoint" in err and "not a file torch.save wrote" in err
    assert "error: 101" not in err and not (repo / "r").exists()


# ---------------------------------------------------------------- 9: Ctrl-C's message, by command


def test_ctrl_c_says_what_the_interrupted_command_leaves(repo, monkeypatch, capsys) -> None:
    from benchmarks.evaluation import check

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "check_model", interrupted)
    assert main(["check", "resnet"]) == 130
    err = capsys.readouterr().err
    assert "check interrupted; nothing was written" in err and "checkpoint" not in err and "resume" not in err


# ---------------------------------------------------------------- 13: a full disk


def test_a_full_disk_is_named_with_the_file(tmp_path) -> None:
    with pytest.raises(DiskFullError, match=f"disk full: cannot write {tmp_path}/seed0.json"):
        with atomic_output(tmp_path / "seed0.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_torchs_own_short_write_is_recognised_as_a_full_disk(tmp_path) -> None:
    """torch.save to a path reports a full disk as "[enforce fail at inline_container.cc] unexpected pos": the real
    message, made by writing to /dev/full (every write fails with ENOSPC there)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(RuntimeError) as error:
        torch.save({"weights": torch.zeros(10_000)}, "/dev/full")
    assert is_disk_full(error.value), str(error.value)
    from benchmarks.training.checkpoint import TrainingCheckpoint

    checkpoint = TrainingCheckpoint(tmp_path / "seed0.checkpoint.pt", {})
    real_save = torch.save
    try:
        torch.save = lambda obj, path: real_save(obj, "/dev/full")  # the checkpoint's own write meets a full disk
        with pytest.raises(DiskFullError, match="disk full: cannot write .*seed0.checkpoint.pt"):
            checkpoint.save(1, model=torch.nn.Linear(2, 2), optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.1),
                            scheduler=torch.optim.lr_scheduler.ConstantLR(torch.optim.SGD([torch.zeros(1)], lr=0.1)),
                            generators={}, best_metric=None, best_state=None, best_epoch=0, history=[],
                            epoch_times=[], train_seconds=0.0)
    finally:
        torch.save = real_save
    assert not list(tmp_path.iterdir())


def test_a_full_disk_stops_the_run_with_exit_3_and_keeps_what_was_saved(repo, fake_runs, monkeypatch, capsys) -> None:
    import benchmarks.io

    real_fsync, writes = benchmarks.io.os.fsync, []

    def fsync_until_full(fd):
        writes.append(fd)
        if len(writes) > 1:  # the first record fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(benchmarks.io.os, "fsync", fsync_until_full)
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-progress",
                 "--no-leaderboard"]) == 3
    err = capsys.readouterr().err
    assert f"disk full: cannot write {record_path(Path('local/results'), 'anode', 'digits', DIGITS_HASH, 0)}" in err
    assert "inline_container" not in err and "Traceback" not in err
    assert [r.model for _, r in iter_records(repo / "local/results")] == ["resnet"]  # the first run is kept


# ---------------------------------------------------------------- 15: outside a checkout


def test_outside_a_checkout_records_go_to_the_users_data_dir_and_publish_is_not_suggested(
        tmp_path, fake_runs, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))
    assert main(SMOKE_DIGITS) == 0
    captured = capsys.readouterr()
    store = tmp_path / "data-home/depthbench/results"
    assert f"not at the top of a depthbench checkout: your records go to {store}" in captured.err
    assert [r.model for _, r in iter_records(store)] == ["resnet"]
    assert (tmp_path / "data-home/depthbench/leaderboards/smoke/digits.md").is_file()
    assert not (tmp_path / "local").exists()
    assert "No published records at results (this directory is not a depthbench checkout" in captured.out
    assert "depthbench publish" not in captured.out
    assert main(["publish"]) == 2
    assert "not at the top of a depthbench checkout" in capsys.readouterr().err and not (tmp_path / "results").exists()


# ---------------------------------------------------------------- 16: --workers beyond what can run at once


def test_workers_are_lowered_to_the_runs_and_cores_there_are(repo, fake_runs, monkeypatch, capsys) -> None:
    monkeypatch.setattr(executors, "available_cores", lambda: 2)
    assert main([*SMOKE_DIGITS, "--workers", "1000", "--no-leaderboard"]) == 0
    assert "--workers 1000 lowered to 1: 1 runs to do, 2 CPU cores here" in capsys.readouterr().err
    assert fake_runs["calls"] == [("digits", "resnet", 0)]  # one run: done here, recorded with concurrent_runs 1
    assert executors.affordable_workers(1000, 28) == 2 and executors.affordable_workers(3, 28) == 2
    assert executors.affordable_workers(1, 0) == 1

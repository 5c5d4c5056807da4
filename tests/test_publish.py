"""`depthbench publish` is all or nothing: an interrupt while copying leaves the published store as it was, one during
the commit lands after it, and a publication killed part-way is finished by the next one (benchmarks/store/publish.py).
Real files in temporary stores; the interrupts are raised where a real Ctrl-C would land."""

from __future__ import annotations

import json
import os
import signal

import pytest

from benchmarks.cli import main
from benchmarks.protocols import SMOKE
from benchmarks.store import publish
from benchmarks.store.records import record_path, save_record

from cli_helpers import fake_record, snapshot

MODELS = ("resnet", "anode", "inresnet", "neural-ode", "continuousnet")


@pytest.fixture
def stores(repo):
    """The `repo` checkout with five local records: two replace published ones (--replace), three are new."""
    for model in MODELS:
        save_record(repo / "local/results", fake_record(SMOKE, "digits", model, 0, accuracy=0.5))
    return repo


def test_an_interrupt_while_staging_leaves_the_store_as_it_was(stores, monkeypatch, capsys) -> None:
    before = snapshot(stores / "results")
    copied = []
    real_copy = publish._copy

    def copy_then_ctrl_c(src, dest):
        if len(copied) == 3:  # three files staged, then Ctrl-C (what happened at 391 of 5,600)
            raise KeyboardInterrupt
        real_copy(src, dest)
        copied.append(dest)

    monkeypatch.setattr(publish, "_copy", copy_then_ctrl_c)
    assert main(["publish", "--replace"]) == 130
    err = capsys.readouterr().err
    assert "publishing interrupted before anything was published" in err and "results is as it" in err
    assert "runs" not in err and "checkpoint" not in err  # the message speaks of publishing
    assert snapshot(stores / "results") == before  # no record replaced, no staged file, no new folder left
    assert not [p for p in (stores / "results").rglob("*") if p.is_dir() and not any(p.iterdir())]
    monkeypatch.setattr(publish, "_copy", real_copy)
    assert main(["publish", "--replace"]) == 0
    assert "published 5 records" in capsys.readouterr().err


def test_an_interrupt_during_the_commit_lands_after_it(stores, monkeypatch, capsys) -> None:
    renames = []
    real_replace = os.replace

    def replace_with_ctrl_c(src, dst):
        if publish.STAGED_MARK in str(src):  # a staged file renamed into place (not the journal's own write)
            if not renames:  # Ctrl-C arrives with the first of them
                os.kill(os.getpid(), signal.SIGINT)
            renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", replace_with_ctrl_c)
    assert main(["publish", "--replace"]) == 130
    assert "interrupted once publishing was complete: all 5 files are in results" in capsys.readouterr().err
    assert len(renames) == 5
    for model in MODELS:  # every record published, none half
        published = record_path(stores / "results", model, "digits", SMOKE.task_hash("digits"), 0)
        assert json.loads(published.read_text())["metrics"]["accuracy"] == 0.5
    assert not (stores / "results" / publish.JOURNAL).exists()
    assert not list(publish._staged_files(stores / "results"))


def test_a_publication_killed_during_its_commit_is_finished_by_the_next(stores, monkeypatch, capsys) -> None:
    real_replace, renames = os.replace, []

    def die_after_two(src, dst):
        if publish.STAGED_MARK in str(src):
            if len(renames) == 2:
                raise SystemExit("killed")  # stands in for SIGKILL: no handler, no cleanup runs after this point
            renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", die_after_two)
    with pytest.raises(SystemExit):
        main(["publish", "--replace"])
    assert (stores / "results" / publish.JOURNAL).is_file()  # the commit point was passed: the journal says what
    monkeypatch.setattr(publish.os, "replace", real_replace)
    assert publish.recover(stores / "results") == 3  # the three renames left are done, none redone
    for model in MODELS:
        published = record_path(stores / "results", model, "digits", SMOKE.task_hash("digits"), 0)
        assert json.loads(published.read_text())["metrics"]["accuracy"] == 0.5
    assert not (stores / "results" / publish.JOURNAL).exists()


def test_files_staged_by_a_publication_that_died_before_its_commit_are_removed(stores) -> None:
    planned = publish.plan(stores / "local/results", stores / "results", replace=True)
    src, dest = planned.copies[0]
    stray = dest.with_name(f".{dest.name}{publish.STAGED_MARK}dead")
    stray.write_bytes(src.read_bytes())
    before = dest.read_bytes()
    publish.recover(stores / "results")
    assert not stray.exists() and dest.read_bytes() == before  # never committed: removed, not renamed into place

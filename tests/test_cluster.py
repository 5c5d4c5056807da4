"""Slurm settings (defaults, TOML config, flags), their error messages, and `depthbench status`; no cluster needed."""

from __future__ import annotations

import json

import pytest

from benchmarks.cli import main
from benchmarks.execution.cluster import SlurmSettings, job_marker, load_settings
from benchmarks.execution.runner import checkpoint_for
from benchmarks.execution.status import matrix, run_states
from benchmarks.protocols import SMOKE
from benchmarks.store.records import Record, record_path, save_record


def test_settings_come_from_defaults_then_the_config_then_the_flags(tmp_path) -> None:
    assert load_settings() == SlurmSettings()
    config = tmp_path / "slurm.toml"
    config.write_text('[slurm]\npartition = "gpu"\ntime_minutes = 30\nsbatch = {account = "lab"}\n'
                      'setup = ["module load cuda"]\n')
    settings = load_settings(config, time_minutes=90, partition=None)  # None: flag not given
    assert (settings.partition, settings.time_minutes, settings.sbatch, settings.setup) == \
        ("gpu", 90, {"account": "lab"}, ("module load cuda",))
    assert settings.cpus_per_job == SlurmSettings().cpus_per_job


@pytest.mark.parametrize("text, message", [
    ("[slurm]\npartitions = 'gpu'\n", "unknown key(s) partitions; valid keys: array_parallelism"),
    ("[slurm]\ntime_minutes = 0\n", "time_minutes must be a whole number >= 1, got 0"),
    ("[slurm]\ngpus_per_job = 'one'\n", "gpus_per_job must be a whole number >= 0"),
    ("[slurm]\nsetup = 'module load x'\n", "setup must be a list of shell lines"),
    ("partition = 'gpu'\n", "no [slurm] table"),
    ("[slurm\n", "--slurm-config"),
])
def test_a_bad_config_is_named_with_what_is_wrong(tmp_path, text, message) -> None:
    config = tmp_path / "slurm.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as error:
        load_settings(config)
    assert message in str(error.value) and (str(config) in str(error.value) or "slurm" in str(error.value))


@pytest.mark.parametrize("argv, message", [
    (["--slurm-partition", "gpu"], "apply to --executor slurm only"),
    (["--executor", "slurm", "--slurm-time", "0"], "time_minutes must be a whole number >= 1"),
    (["--executor", "slurm", "--slurm-option", "account"], "--slurm-option wants KEY=VALUE"),
    (["--executor", "slurm", "--workers", "2"], "--workers and --max-minutes are for the local executor"),
])
def test_bad_slurm_flags_get_a_clear_message(tmp_path, capsys, argv, message) -> None:
    assert main(["run", "--tier", "smoke", "--results", str(tmp_path), "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("seed*")), "nothing ran and nothing was submitted"


def test_status_counts_each_state_per_model_and_task(tmp_path, capsys) -> None:
    def put(model: str, task: str, seed: int, status: str) -> None:
        save_record(tmp_path, Record(model=model, task=task, seed=seed, protocol=SMOKE.header(task), status=status,
                                     error=None if status == "ok" else "boom"))

    put("resnet", "digits", 0, "ok")
    put("resnet", "pendulum", 0, "ok")
    put("anode", "digits", 0, "failed")
    submitted = record_path(tmp_path, "anode", "pendulum", SMOKE.task_hash("pendulum"), 0)
    job_marker(submitted).parent.mkdir(parents=True)
    job_marker(submitted).write_text(json.dumps({"job_id": "41_3"}))
    checkpoint_for(submitted).write_bytes(b"")
    scope = dict(models=["resnet", "anode", "continuousnet"], tasks=["digits", "pendulum"])
    states = run_states(SMOKE, tmp_path, **scope, queue={"41_3": ("RUNNING", "None")})
    assert states == {("resnet", "digits", 0): "done", ("resnet", "pendulum", 0): "done",
                      ("anode", "digits", 0): "failed", ("anode", "pendulum", 0): "running",
                      ("continuousnet", "digits", 0): "missing", ("continuousnet", "pendulum", 0): "missing"}
    # A job no longer in squeue has ended without a record: missing (the next run resumes it); without squeue's
    # view, the submitted run counts as running
    assert run_states(SMOKE, tmp_path, **scope, queue={})["anode", "pendulum", 0] == "missing"
    assert run_states(SMOKE, tmp_path, **scope, queue=None)["anode", "pendulum", 0] == "running"
    table = matrix(states)
    assert table.splitlines()[0].split() == ["model", "digits", "pendulum"]
    assert table.splitlines()[2].split() == ["anode", "1", "failed", "1", "running"]
    assert table.splitlines()[-1] == "total: 2 done, 1 failed, 1 running, 2 missing (of 6 runs)"
    assert main(["status", "--tier", "smoke", "--results", str(tmp_path), "--models", "resnet,anode,continuousnet",
                 "--tasks", "digits,pendulum"]) == 0
    out = capsys.readouterr().out
    hashes = f"digits {SMOKE.task_hash('digits')}, pendulum {SMOKE.task_hash('pendulum')}"
    assert f"tier smoke v{SMOKE.version} ({hashes})" in out and "total: 2 done, 1 failed" in out
    assert "1 of the runs without a record have a training checkpoint" in out
    assert "squeue is not available here" in out or "Slurm's view (squeue" in out

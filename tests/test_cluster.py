"""Slurm settings (defaults, TOML config, flags), their error messages, fitting them to a partition, the pending
reasons that never resolve, and `depthbench status`; no cluster needed."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks.cli import main
from benchmarks.execution.cluster import SlurmSettings, job_marker, load_settings
from benchmarks.execution.partition import PartitionLimits, _gpus, fit_to_partition, hopeless, slurm_minutes
from benchmarks.execution.runs import checkpoint_for
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


TINY = PartitionLimits(name="tiny", cpus=2, memory_mb=4096, gpus=0, minutes=60, state="up")
GPU = PartitionLimits(name="gpu", cpus=8, memory_mb=64000, gpus=2, minutes=None, state="up")


def test_defaults_a_partition_cannot_give_are_lowered_aloud_and_chosen_values_refused() -> None:
    said: list[str] = []
    fitted = fit_to_partition(SlurmSettings(), torch.device("cpu"), said.append, TINY)
    assert (fitted.cpus_per_job, fitted.time_minutes) == (2, 60) and len(said) == 2
    assert said[0] == "asking 2 CPUs per job, not the default 4: partition tiny gives no more (--slurm-cpus chooses)"
    assert fit_to_partition(SlurmSettings(), torch.device("cuda"), said.append, GPU) == SlurmSettings()
    chosen = load_settings(cpus_per_job=8)
    with pytest.raises(ValueError, match="--slurm-cpus 8: partition tiny gives one job at most 2 CPUs; ask for 2 or "
                                         "less with --slurm-cpus, or choose another partition with --slurm-partition"):
        fit_to_partition(chosen, torch.device("cpu"), said.append, TINY)
    with pytest.raises(ValueError, match=r"--slurm-gpus 3: partition gpu gives one job at most 2 GPUs"):
        fit_to_partition(load_settings(gpus_per_job=3), torch.device("cuda"), said.append, GPU)
    with pytest.raises(ValueError, match=r"\(the runs are on cuda\), but partition tiny has no GPUs"):
        fit_to_partition(SlurmSettings(cpus_per_job=1, time_minutes=60), torch.device("cuda"), said.append, TINY)
    with pytest.raises(ValueError, match=r"--slurm-mem-gb 8: partition tiny gives one job at most 4 GB"):
        fit_to_partition(load_settings(mem_gb=8.0, cpus_per_job=2), torch.device("cpu"), said.append, TINY)
    per_cpu = dataclasses.replace(GPU, memory_mb=None, max_mem_per_cpu_mb=1024)  # MaxMemPerCPU: 1 GB x 4 CPUs
    with pytest.raises(ValueError, match=r"--slurm-mem-gb 5: partition gpu gives one job at most 4 GB"):
        fit_to_partition(load_settings(mem_gb=5.0), torch.device("cpu"), said.append, per_cpu)
    # No default memory: a job without a request asks a whole node's (64 GB), which MaxMemPerNode (4 GB) refuses
    no_default = dataclasses.replace(TINY, default_memory=False, node_memory_mb=64000)
    assert fit_to_partition(SlurmSettings(), torch.device("cpu"), said.append, no_default).mem_gb == 4.0
    assert said[-2].startswith("asking 4 GB per job: partition tiny sets no default memory, and a whole node's (62.5")
    own = SlurmSettings(sbatch={"mem-per-cpu": "900"})  # the user's own memory option is left as it is
    assert fit_to_partition(own, torch.device("cpu"), said.append, no_default).mem_gb is None
    down = dataclasses.replace(GPU, state="down")
    fit_to_partition(SlurmSettings(), torch.device("cpu"), said.append, down)
    assert said[-1] == "partition gpu is down: the jobs wait in the queue until it is up"


def test_pending_reasons_that_never_resolve_name_the_flag_and_the_others_wait() -> None:
    assert hopeless("PartitionConfig") == ("the request exceeds a limit of the partition",
                                           "--slurm-cpus, --slurm-mem-gb, --slurm-gpus or --slurm-partition")
    assert hopeless("PartitionTimeLimit")[1] == "--slurm-time"
    assert hopeless("QOSMaxCpuPerJobLimit")[1].startswith("--slurm-cpus")
    assert hopeless("AssocMaxWallDurationPerJobLimit")[1].startswith("--slurm-time")
    assert hopeless("QOSMaxGRESPerNode")[1].startswith("--slurm-gpus")
    assert hopeless("QOSMinMemory")[0] == "the request breaks a minimum of the QOS"
    # a busy queue, aggregate and count limits lift as other jobs end; an administrator may resolve the rest
    for reason in ("Resources", "Priority", "None", "BeginTime", "AssocMaxJobsLimit", "QOSMaxJobsPerUserLimit",
                   "AssocGrpCpuLimit", "QOSGrpGRES", "MaxCpuPerAccount", "JobArrayTaskLimit", "ReqNodeNotAvail",
                   "PartitionDown", "JobHeldAdmin"):
        assert hopeless(reason) is None, reason


def test_slurm_times_and_gres_are_read_as_sinfo_writes_them() -> None:
    assert [slurm_minutes(t) for t in ("infinite", "UNLIMITED", "30", "5:00", "1:00:00", "2-00:00:00", "1-2:03:59")] \
        == [None, None, 30, 5, 60, 2880, 1563]
    assert [_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:4(S:0-1),shard:8", "gpu:a100:2,gpu:v100:1", "mps:100")] \
        == [0, 4, 4, 3, 0]


def test_status_cost_reads_the_records_phase_times(tmp_path, capsys) -> None:
    def put(model: str, seed: int, phases: dict, **provenance) -> None:
        save_record(tmp_path, Record(model=model, task="digits", seed=seed, protocol=SMOKE.header("digits"),
                                     provenance={"phase_seconds": phases, "load_average": 2.0, **provenance}))

    put("resnet", 0, {"train": 60.0, "attacks": 120.0, "clean": 30.0, "noise": 30.0})
    put("resnet", 1, {"train": 180.0, "attacks": 120.0, "clean": 60.0})
    # an earlier hash's run that trained, and a run of this hash that adopted its weights (no training phase)
    earlier = {**SMOKE.header("digits"), "hash": "0123456789ab"}
    save_record(tmp_path, Record(model="anode", task="digits", seed=0, protocol=earlier,
                                 provenance={"phase_seconds": {"train": 600.0, "attacks": 60.0}}))
    kept = tmp_path / "digits" / "0123456789ab" / "anode" / "seed0.checkpoint.pt"
    put("anode", 0, {"attacks": 300.0, "clean": 0.0}, weights_from={"checkpoint": str(kept), "protocol": "x"})
    from benchmarks.execution.tier_cost import cost_table, model_costs

    costs, missing = model_costs(SMOKE, "digits", tmp_path, models=["resnet", "anode", "continuousnet"])
    by_model = {c.model: c for c in costs}
    assert missing == ["continuousnet"]
    assert by_model["resnet"].runs == 2 and by_model["resnet"].minutes == {"train": 2.0, "attacks": 2.0, "rest": 1.0}
    assert by_model["anode"].minutes == {"train": 10.0, "attacks": 5.0, "rest": 0.0}  # training of the adopted run
    table = cost_table(SMOKE, "digits", tmp_path, workers=2)  # resnet 5 + anode 15 minutes; every other tier model
    # (continuousnet among them) has no record and is named
    assert SMOKE.seeds == (0,) and "one seed of every model: 0.33 run-hours; 1 seeds: 0.33 run-hours" in table
    assert "~0.17 h wall time with --workers 2" in table and "continuousnet" in table and "(no record yet)" in table
    assert main(["status", "--tier", "smoke", "--results", str(tmp_path), "--cost"]) == 0
    assert "cost of tier smoke" in capsys.readouterr().out
    # an earlier definition's records, by their hash: anode's training run under 0123456789ab
    assert main(["status", "--tier", "smoke", "--results", str(tmp_path), "--cost", "--hash", "0123456789ab"]) == 0
    shown = capsys.readouterr().out
    assert "on digits under 0123456789ab (an earlier definition" in shown
    assert "one seed of every model: 0.18 run-hours" in shown  # anode: 10 + 1 minutes
    with pytest.raises(SystemExit):
        main(["status", "--tier", "smoke", "--cost", "--hash", "not-a-hash"])

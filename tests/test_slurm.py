"""`depthbench run --executor slurm` on a real Slurm cluster that the tests start themselves (tests/slurm_cluster.py:
a private single-node cluster by .ci/start-slurm, never the machine's own): the same records as a local run,
preemption and scancel resumed from the last epoch with nothing lost and no duplicate, failing jobs recorded with
Slurm's reason and log, requests fitted to what the partition gives, and a job that can never start cancelled and
named. Skipped where no cluster can be started, failed in CI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.execution import runner, runs
from benchmarks.execution.cluster import SlurmSettings, job_marker, scontrol_job, squeue_states
from benchmarks.execution.partition import hopeless
from benchmarks.execution.status import run_states
from benchmarks.protocols import SMOKE, Evaluation, Recipe
from benchmarks.store.records import iter_records, load_record, record_path
from zoo import registry

from slurm_cluster import MARKER, ForeignCluster, check_own, own_cluster
from test_plugins import install
from test_runner import _comparable
from waiting import wait_for

CPU = torch.device("cpu")
FAST = dict(cpus_per_job=1, poll_seconds=0.3)  # two jobs at once on a 2-core runner; follow them closely


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[Path]:
    with own_cluster() as conf:
        yield conf


@pytest.fixture(autouse=True)
def only_our_cluster(cluster: Path) -> None:
    check_own(cluster)  # before any submission: SLURM_CONF is the tests' config and its controller answers as ours


def comparable_store(root: Path) -> dict:
    return {p.relative_to(root): _comparable(r) for p, r in iter_records(root)}


def test_the_smoke_tier_on_slurm_writes_the_records_of_a_local_run(tmp_path, capsys) -> None:
    config = tmp_path / "slurm.toml"
    config.write_text("[slurm]\ncpus_per_job = 1\npoll_seconds = 0.3\n")
    common = ["run", "--tier", "smoke", "--no-progress", "--no-leaderboard", "--published", str(tmp_path / "none")]
    subsets = [["--models", "resnet,continuousnet", "--tasks", "pendulum"], ["--models", "resnet", "--tasks", "digits"]]
    slurm = ["--results", str(tmp_path / "slurm"), "--executor", "slurm", "--slurm-config", str(config)]
    for subset in subsets:
        assert main([*common, *subset, "--results", str(tmp_path / "local")]) == 0
        assert main([*common, *subset, *slurm]) == 0
    err = capsys.readouterr().err
    assert "submitted 2 runs to Slurm as job array" in err and "submitted 1 runs to Slurm as job array" in err
    slurm_store = comparable_store(tmp_path / "slurm")
    assert len(slurm_store) == 3 and slurm_store == comparable_store(tmp_path / "local")
    for _, record in iter_records(tmp_path / "slurm"):
        job = record.provenance["slurm"]
        assert Path(job["stdout"]).is_file() and Path(job["stdout"]).parent == tmp_path / "slurm/.slurm"
        assert "submitit" not in record.provenance["command"], "the submitter's command, not submitit's"
    leftovers = [p.name for p in (tmp_path / "slurm").rglob("seed*") if p.suffix != ".json"]
    assert not leftovers, "markers and checkpoints of finished runs are removed"
    # The same command again submits nothing: every run has its record
    assert main([*common, *subsets[0], *slurm]) == 0
    err = capsys.readouterr().err
    assert "submitted" not in err and "0 runs recorded, 0 failed, 2 already done" in err


# Long enough to be interrupted mid-training (about 0.1 s an epoch), cheap to evaluate.
LONG = dataclasses.replace(
    SMOKE, name="test-slurm-long", recipes={"pendulum": Recipe(epochs=30, batch_size=32, lr=5e-3)},
    evaluation=Evaluation(attack_subset=50, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                          square_queries=5, autoattack_targets=1, transfer_subset=50, transfer_factors=(1.0, 2.0),
                          transfer_tolerances=(1e-2,), latency_repeats=2, throughput_batch=16, eval_batch=200,
                          diagnostic_subset=16))
ONE_RUN = dict(models=["resnet"], tasks=["pendulum"], seeds=[0], progress=False, check_models=False)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("long-local")
    runner.run_tier(LONG, results_dir=root, device=CPU, **ONE_RUN)
    return comparable_store(root)


def submitted_job(root: Path) -> tuple[str, Path, Path]:
    """Submit LONG's one run without waiting; its job id once training has checkpointed two epochs."""
    summary = runner.run_tier(LONG, results_dir=root, device=CPU, slurm=SlurmSettings(wait=False, **FAST), **ONE_RUN)
    (path,) = summary.submitted
    job_id = json.loads(job_marker(path).read_text())["job_id"]
    checkpoint = runs.checkpoint_for(path)
    wait_for(lambda: checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2,
             "two epochs checkpointed")
    return job_id, path, checkpoint


def test_a_preempted_job_is_requeued_and_resumes_from_its_last_epoch(long_reference, tmp_path) -> None:
    job_id, path, checkpoint = submitted_job(tmp_path)
    assert run_states(LONG, tmp_path, queue=squeue_states(), **{k: ONE_RUN[k] for k in ("models", "tasks", "seeds")}
                      ) == {("resnet", "pendulum", 0): "running"}
    # The same submission again while the job runs submits nothing: the run is already in Slurm's hands
    again = runner.run_tier(LONG, results_dir=tmp_path, device=CPU, slurm=SlurmSettings(wait=False, **FAST), **ONE_RUN)
    assert again.submitted == [path] and json.loads(job_marker(path).read_text())["job_id"] == job_id
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # Slurm's preemption warning (submitit's)
    # submitit checkpoints and requeues; Slurm starts a requeued job again once its credential has expired
    # (cred_expire: 10 s in .ci/start-slurm's cluster, 120 s by default)
    wait_for(lambda: squeue_states([job_id]).get(job_id, ("", ""))[1] == "BeginTime", "the requeue")
    record = wait_for(lambda: path.is_file() and load_record(path, tmp_path), "the record of the requeued job")
    assert record.provenance["slurm"]["restarts"] == 1 and record.provenance["slurm"]["job_id"] == job_id
    log = Path(record.provenance["slurm"]["stderr"]).read_text()
    assert "resuming training from" in log, log  # continued from a checkpointed epoch, not from the start
    assert comparable_store(tmp_path) == long_reference  # nothing lost, nothing different, one record
    wait_for(lambda: job_id not in squeue_states([job_id]), "the job to leave the queue")
    assert not checkpoint.exists() and not job_marker(path).exists()


def test_a_cancelled_job_is_resumed_by_the_rerun(long_reference, tmp_path, capsys) -> None:
    job_id, path, checkpoint = submitted_job(tmp_path)
    subprocess.run(["scancel", job_id], check=True)
    wait_for(lambda: job_id not in squeue_states([job_id]), "the cancelled job to leave the queue")
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert not path.exists() and 2 <= epoch < LONG.recipes["pendulum"].epochs, "cancelled mid-training"
    assert run_states(LONG, tmp_path, queue=squeue_states(), **{k: ONE_RUN[k] for k in ("models", "tasks", "seeds")}
                      ) == {("resnet", "pendulum", 0): "missing"}
    summary = runner.run_tier(LONG, results_dir=tmp_path, device=CPU, slurm=SlurmSettings(**FAST), **ONE_RUN)
    assert summary.written == [path] and not summary.failed and not summary.unfinished
    record = load_record(path, tmp_path)
    assert record.provenance["slurm"]["job_id"] != job_id
    assert f"resuming training from {checkpoint} after epoch {epoch}" in \
        Path(record.provenance["slurm"]["stderr"]).read_text()
    assert comparable_store(tmp_path) == long_reference


FAILING = '''
import os
import sys

from torch import nn


class Failing(nn.Module):
    """Trains normally for a few steps, then fails the way `how` says."""

    def __init__(self, input_shape, num_classes, how, **size):
        super().__init__()
        self.linear, self.how, self.steps = nn.Linear(input_shape[0], num_classes), how, 0

    def forward(self, x):
        self.steps += self.training
        if self.steps > 150:  # in the third epoch (62 steps each): two epochs are checkpointed
            if self.how == "crash":
                print("CUDA out of memory (as good as)", file=sys.stderr, flush=True)
                os._exit(3)  # the interpreter dies: no record, no submitit result (a segfault, an OOM kill)
            raise RuntimeError("the model gave up")
        return self.linear(x)


def crash(input_shape, num_classes, **size):
    return Failing(input_shape, num_classes, "crash")


def error(input_shape, num_classes, **size):
    return Failing(input_shape, num_classes, "error")


crash.card = error.card = {card!r}
'''


def test_failing_jobs_become_failed_records_with_slurm_reason_and_log(tmp_path, monkeypatch) -> None:
    from test_plugins import CARD

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    install(plugin, "failingplugin", {"crashes": "failing_models:crash", "raises": "failing_models:error"},
            "failing_models", FAILING.format(card=CARD))
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    results = tmp_path / "results"
    summary = runner.run_tier(LONG, models=["resnet", "crashes", "raises"], tasks=["pendulum"], results_dir=results,
                              device=CPU, progress=False, check_models=False, slurm=SlurmSettings(**FAST))
    records = {r.model: r for _, r in iter_records(results)}
    assert records["resnet"].status == "ok" and len(summary.written) == 1 and len(summary.failed) == 2
    crashed, raised = records["crashes"], records["raises"]
    assert crashed.status == raised.status == "failed"
    job = crashed.provenance["slurm"]
    assert crashed.error.startswith(f"Slurm job {job['job_id']} ended FAILED without a record (reason "
                                    "NonZeroExitCode, exit code 3:0): CUDA out of memory (as good as); log ")
    assert crashed.error.endswith(job["stderr"])
    assert Path(job["stderr"]).is_file() and job["state"] == "FAILED"
    kept = runs.checkpoint_for(record_path(results, "crashes", "pendulum", LONG.task_hash("pendulum"), 0))
    assert kept.is_file(), \
        "kept: --retry-failed continues from it"
    job = raised.provenance["slurm"]
    assert raised.error == f"RuntimeError: the model gave up (Slurm job {job['job_id']}, log {job['stderr']})"
    assert Path(job["stderr"]).is_file()
    assert not list(results.rglob("seed*.slurm")), "no run is left marked as submitted"


def test_the_tests_refuse_a_cluster_they_did_not_start(cluster, tmp_path, monkeypatch) -> None:
    text = cluster.read_text()
    unmarked = tmp_path / "unmarked.conf"  # the same cluster, but a configuration the tests did not write
    unmarked.write_text(text.replace(MARKER + "\n", ""))
    monkeypatch.setenv("SLURM_CONF", str(unmarked))
    with pytest.raises(ForeignCluster, match="no marker line"):
        check_own(unmarked)
    # Marked, but another cluster answers on its port (a stale copy, a port taken by someone else's controller)
    renamed = tmp_path / "renamed.conf"
    renamed.write_text(text.replace("ClusterName=depthbench-", "ClusterName=depthbench-0"))
    monkeypatch.setenv("SLURM_CONF", str(renamed))
    with pytest.raises(ForeignCluster, match="answers as cluster depthbench-"):
        check_own(renamed)
    monkeypatch.delenv("SLURM_CONF")  # Slurm's own default (/etc/slurm, DNS): whatever this machine belongs to
    with pytest.raises(ForeignCluster, match="SLURM_CONF is None"):
        check_own(cluster)
    # Every other test runs with a SLURM_CONF that names no cluster: squeue fails at once, reaching nothing
    monkeypatch.setenv("SLURM_CONF", str(Path(__file__).with_name("no-slurm-cluster.conf")))
    assert squeue_states() is None


SMOKE_RUN = ["run", "--tier", "smoke", "--models", "resnet", "--tasks", "pendulum", "--no-progress",
             "--no-leaderboard", "--executor", "slurm"]


def _quick(tmp_path: Path) -> list[str]:
    config = tmp_path / "slurm.toml"
    config.write_text("[slurm]\npoll_seconds = 0.3\n")
    return ["--results", str(tmp_path / "results"), "--published", str(tmp_path / "none"), "--slurm-config",
            str(config)]


@pytest.mark.parametrize("flags, message", [
    (["--slurm-cpus", "2"], "--slurm-cpus 2: partition tiny gives one job at most 1 CPUs"),
    (["--slurm-time", "10"], "--slurm-time 10: partition tiny gives one job at most 5 minutes"),
    (["--slurm-mem-gb", "1"], "--slurm-mem-gb 1: partition tiny gives one job at most 0.5 GB"),
    (["--slurm-gpus", "1"], "each job would ask for 1 GPU(s) (--slurm-gpus 1), but partition tiny has no GPUs"),
    (["--device", "cuda"], "each job would ask for 1 GPU(s) (the runs are on cuda), but partition tiny has no GPUs"),
    (["--slurm-partition", "nosuch"], "--slurm-partition nosuch: no such partition on this cluster (sinfo lists: "
                                      "debug, tiny)"),
])
def test_a_request_the_partition_cannot_give_is_refused_naming_the_flag(tmp_path, capsys, flags, message) -> None:
    partition = [] if "--slurm-partition" in flags else ["--slurm-partition", "tiny"]
    assert main([*SMOKE_RUN, *_quick(tmp_path), *partition, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("seed*")) and not (tmp_path / "results/.slurm").exists(), "nothing submitted"


def test_defaults_the_partition_cannot_give_are_lowered_aloud(tmp_path, capsys) -> None:
    # The defaults ask 4 CPUs and 240 minutes; partition tiny gives 1 CPU and 5 minutes (.ci/start-slurm). Before,
    # such a job stayed PENDING (reason PartitionConfig) and depthbench waited without a word.
    assert main([*SMOKE_RUN, *_quick(tmp_path), "--slurm-partition", "tiny"]) == 0
    err = capsys.readouterr().err
    assert "asking 1 CPUs per job, not the default 4: partition tiny gives no more (--slurm-cpus chooses)" in err
    assert "asking 5 minutes per job, not the default 240: partition tiny gives no more" in err
    # and tiny sets no default memory, so a job without a request would ask the whole node's: more than its 512 MB
    assert "asking 0.5 GB per job: partition tiny sets no default memory, and a whole node's (" in err
    (record,) = [r for _, r in iter_records(tmp_path / "results")]
    job = scontrol_job(record.provenance["slurm"]["job_id"])
    assert record.status == "ok" and (job["NumCPUs"], job["TimeLimit"], job["MinMemoryNode"]) == ("1", "00:05:00",
                                                                                                   "512M")


def test_a_job_that_can_never_start_is_cancelled_and_named_with_its_reason(tmp_path, capsys) -> None:
    # An sbatch option depthbench does not check (600 MB per CPU on a partition of 512 MB per node): Slurm accepts
    # the job and keeps it PENDING (reason PartitionConfig or MaxMemPerLimit), which no amount of waiting resolves.
    # Before, depthbench waited for it forever without a word.
    assert main([*SMOKE_RUN, *_quick(tmp_path), "--slurm-partition", "tiny", "--slurm-option",
                 "mem-per-cpu=600"]) == 3  # unfinished runs: rerun the command once the request is changed
    err = capsys.readouterr().err
    job_id, reason = re.search(r"pendulum resnet seed 0: Slurm job (\S+) could never start: pending for reason "
                               r"(\w+) ", err).groups()
    meaning, flags = hopeless(reason)
    assert f"Slurm job {job_id} could never start: pending for reason {reason} ({meaning}); it was cancelled: change " \
        f"{flags} and rerun the same command" in err and "--slurm-mem-gb" in flags
    assert "pendulum resnet seed 0 has no record: Slurm job" in err  # the summary repeats it
    assert job_id not in squeue_states([job_id]) and not list((tmp_path / "results").rglob("seed*")), "cancelled"

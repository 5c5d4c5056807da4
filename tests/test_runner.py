"""The runner and CLI: complete records, resume after an interrupt, failures recorded, clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.data.tasks import DataMissingError
from benchmarks.execution import executors, runner, runs
from benchmarks.protocols import SMOKE, Evaluation, Recipe
from benchmarks.specs import spec_for
from benchmarks.store.records import iter_records
from zoo import registry

from waiting import wait_for

# A cheaper smoke protocol for tests: same pipeline, fewer epochs and examples.
QUICK = dataclasses.replace(
    SMOKE, name="test-quick", seeds=(0,),
    recipes={"digits": Recipe(epochs=3, batch_size=32, lr=1e-2), "pendulum": Recipe(epochs=3, batch_size=32, lr=1e-2)},
    evaluation=Evaluation(attack_subset=100, pgd_steps=5, pgd_restarts=1, apgd_steps=3, apgd_restarts=1,
                          square_queries=10, autoattack_targets=1, transfer_subset=100,
                          transfer_factors=(0.5, 1.0, 2.0), transfer_tolerances=(1e-2,),
                          latency_repeats=3, throughput_batch=32, eval_batch=200),
)
QUICK_MODELS = ["resnet", "inresnet-lambda"]
TIMING = {"latency_ms", "latency_iqr_ms", "throughput", "train_seconds", "epoch_seconds", "dt_speedup"}


def _comparable(record) -> dict:
    """A record without what legitimately differs between two identical runs: wall-clock times and dates."""
    data = record.to_json()
    data.pop("provenance")
    data["metrics"] = {k: v for k, v in data["metrics"].items() if k not in TIMING}
    data["depth_transfer"] = [{k: v for k, v in e.items() if k != "latency_ms"} for e in data["depth_transfer"]]
    data["history"] = [{k: v for k, v in e.items() if k != "seconds"} for e in data["history"]]
    return data


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """The real smoke tier, end to end through the CLI: what `tox -e bench` runs on a machine without a GPU."""
    root = tmp_path_factory.mktemp("smoke")
    assert main(["run", "--tier", "smoke", "--results", str(root / "results"), "--no-progress",
                 "--out", str(root / "local-leaderboards"), "--published", str(root / "none")]) == 0
    assert (root / "local-leaderboards/index.html").is_file()
    assert main(["leaderboard", "--results", str(root / "results"), "--out", str(root / "leaderboards"),
                 "--readme", str(root / "README.md"), "--citation", str(root / "CITATION.cff")]) == 0
    return root


def test_the_smoke_tier_produces_complete_records_and_leaderboards(smoke_results) -> None:
    records = {(r.task, r.model): r for _, r in iter_records(smoke_results / "results")}
    assert set(records) == {(task, model) for task in SMOKE.tasks for model in SMOKE.models}
    assert all(r.status == "ok" and r.protocol["hash"] == SMOKE.task_hash(r.task) for r in records.values())
    digits = records[("digits", "resnet")]
    metrics = digits.metrics
    for key in ("accuracy", "val_accuracy", "params", "flops", "nfe", "latency_ms", "latency_iqr_ms", "throughput",
                "train_seconds", "fgsm@0.1", "pgd@0.1", "noise@0.1", "dt_delta_2x", "dt_fewest_nfe",
                "line_shape", "jacobian_sigma_max", "jacobian_h_sigma_max", "eval_batch", "batch_coupling",
                "robust@0.1", "robust_ci_low@0.1", "apgd_t@0.1", "square@0.1", "unbounded_pgd"):
        assert key in metrics, key
    assert "dt_delta_half" not in metrics  # half of 3 Euler steps is no whole step count: skipped, not rounded
    assert "dt_delta_half" in records[("digits", "continuousnet")].metrics  # RK4 x 2 -> 1 step
    assert metrics["eval_batch"] == SMOKE.evaluation.eval_batch and "batch-coupled" not in digits.flags
    assert metrics["robust@0.1"] <= min(metrics["pgd@0.1"], metrics["fgsm@0.1"])  # the worst case over the suite
    assert "unreliable" not in digits.flags  # a normal ResNet passes the attack suite's sanity checks
    assert "transfer@0.1" in records[("digits", "neural-ode")].metrics  # adaptive: RK4-twin transfer attack
    # 0.70 on Intel; rounding differences between CPUs move a 4-epoch run like another seed: 3x chance keeps margin
    assert metrics["accuracy"] > 0.3, "four epochs on digits should be well above chance (0.1)"
    assert metrics["pgd@0.2"] < metrics["accuracy"], "attacks must reduce accuracy on a trained model"
    assert metrics["nfe"] == 3  # resnet: Euler, depth 3
    assert any(e["trained"] for e in digits.depth_transfer)
    assert len(digits.trajectory) == 3 and all(e["sigma"] > 0 for e in digits.trajectory)  # one per ResNet block
    assert digits.card["bibkey"] == "he2016identity"
    for key in ("git_commit", "device", "started", "finished", "packages", "command"):
        assert digits.provenance[key], key
    phases = digits.provenance["phase_seconds"]
    assert set(phases) == {"train", "clean", "latency", "attacks", "noise", "diagnostics", "depth_transfer"}
    assert all(seconds > 0 for seconds in phases.values())
    node = records[("digits", "neural-ode")]
    assert node.metrics["nfe"] > 0 and "nfe_adversarial" in node.metrics
    assert "batch-coupled" not in node.flags  # dopri5 picks its steps per example (the zoo's default backend)
    assert node.solver[0]["backend"] == "per-example"
    assert any(e.get("rtol") for e in node.depth_transfer)
    pendulum = records[("pendulum", "continuousnet")]
    assert "test_mse" in pendulum.metrics and "accuracy" not in pendulum.metrics
    assert "fgsm@0.1" not in pendulum.metrics
    assert "attacks" not in pendulum.provenance["phase_seconds"]
    assert pendulum.metrics["dt_order"] > 3, "a smooth continuous model converges at RK4's order"
    boards = smoke_results / "leaderboards"
    for name in ("smoke/digits.md", "smoke/digits.csv", "smoke/digits.tex", "smoke/pendulum.md", "index.html",
                 "references.bib", "smoke/plots/digits_stiffness.png", "smoke/plots/pendulum_stiffness.svg"):
        assert (boards / name).is_file(), name
    table = (boards / "smoke/digits.md").read_text()
    assert SMOKE.task_hash("digits") in table and "continuousnet" in table
    assert "cff-version: 1.2.0" in (smoke_results / "CITATION.cff").read_text()


def test_every_metric_the_smoke_tier_records_has_a_spec(smoke_results) -> None:
    # A metric without a spec would silently stay out of the tables, plots and definitions (benchmarks/specs.py).
    names = {name for _, r in iter_records(smoke_results / "results") for name in (*r.metrics, *r.not_applicable)}
    assert len(names) > 30
    missing = sorted(name for name in names if spec_for(name) is None)
    assert not missing, f"metrics without a MetricSpec in benchmarks/specs.py: {missing}"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    summary = runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=root, device=torch.device("cpu"),
                              progress=False)
    return root, summary


def test_rerun_skips_what_is_done(quick_results) -> None:
    root, first = quick_results
    assert len(first.written) == 4 and not first.failed
    before = {p: p.read_bytes() for p, _ in iter_records(root)}
    summary = runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=root, device=torch.device("cpu"),
                              progress=False)
    assert len(summary.skipped) == 4 and not summary.written
    assert {p: p.read_bytes() for p, _ in iter_records(root)} == before


def test_resume_after_an_interrupt_gives_identical_records(quick_results, tmp_path, monkeypatch) -> None:
    reference_root, _ = quick_results
    saved = []
    real_save = runs.save_record

    def save_then_die(root, record):
        path = real_save(root, record)
        saved.append(path)
        if len(saved) == 1:
            raise KeyboardInterrupt  # the bench is killed right after its first record
        return path

    monkeypatch.setattr(runs, "save_record", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert len(list(iter_records(tmp_path))) == 1
    summary = runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=tmp_path, device=torch.device("cpu"),
                              progress=False)
    assert len(summary.skipped) == 1 and len(summary.written) == 3
    reference = {p.relative_to(reference_root): _comparable(r) for p, r in iter_records(reference_root)}
    resumed = {p.relative_to(tmp_path): _comparable(r) for p, r in iter_records(tmp_path)}
    assert resumed == reference
    assert not list(tmp_path.rglob("*.tmp")), "no partial files are left behind"


# The QUICK tier in a separate process, so that the test can kill it for real (SIGKILL: no handler, no cleanup).
KILLABLE_RUN = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_runner import QUICK, QUICK_MODELS
from benchmarks.execution import executors, runner, runs
torch.set_num_threads(1)
runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=Path({root!r}), device=torch.device("cpu"), progress=False)
"""


def test_resume_after_a_killed_process_gives_identical_records(quick_results, tmp_path) -> None:
    reference_root, _ = quick_results
    script = KILLABLE_RUN.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    def first_record() -> bool:  # kill it as soon as its first record is written
        assert process.poll() is None, "the run ended before writing a record"
        return bool(list(tmp_path.glob("*/*/*/seed*.json")))

    try:
        wait_for(first_record, "the killable run's first record", poll_seconds=0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done = len(list(iter_records(tmp_path)))
    assert 1 <= done < 4, "the process was killed part-way through the tier"
    summary = runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=tmp_path, device=torch.device("cpu"),
                              progress=False)
    assert len(summary.skipped) == done and len(summary.written) == 4 - done
    reference = {p.relative_to(reference_root): _comparable(r) for p, r in iter_records(reference_root)}
    resumed = {p.relative_to(tmp_path): _comparable(r) for p, r in iter_records(tmp_path)}
    assert resumed == reference


def test_a_time_budget_postpones_runs_that_a_rerun_does(tmp_path, monkeypatch, capsys) -> None:
    clock = iter([0.0, 0.0, 1e6])  # deadline set at 0 s; first check before it, second long after
    monkeypatch.setattr(runs, "clock", lambda: next(clock))
    summary = runner.run_tier(QUICK, models=["resnet"], tasks=["digits"], seeds=[0, 1], results_dir=tmp_path,
                              device=torch.device("cpu"), progress=False, max_minutes=1)
    assert [p.name for p in summary.written] == ["seed0.json"] and [p.name for p in summary.postponed] == ["seed1.json"]
    assert not summary.postponed[0].exists()
    monkeypatch.undo()
    again = runner.run_tier(QUICK, models=["resnet"], tasks=["digits"], seeds=[0, 1], results_dir=tmp_path,
                            device=torch.device("cpu"), progress=False, max_minutes=60)
    assert again.skipped == summary.written and again.written == summary.postponed and not again.postponed
    assert main(["run", "--tier", "smoke", "--results", str(tmp_path), "--max-minutes", "0", "--no-progress",
                 "--no-leaderboard", "--published", str(tmp_path / "none")]) == 3  # runs left undone
    err = capsys.readouterr().err
    assert "0 runs recorded" in err and f"{2 * len(SMOKE.models)} runs not started within --max-minutes 0" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--tier", "smoke", "--max-minutes", "-1"])
    assert exit_info.value.code == 2 and "finite number of minutes >= 0" in capsys.readouterr().err


def test_optional_tasks_run_only_where_their_data_is_on_disk(tmp_path) -> None:
    protocol = dataclasses.replace(QUICK, tasks=("digits",), optional_tasks=("pendulum", "cifar10"),
                                   recipes={**QUICK.recipes, "cifar10": QUICK.recipes["digits"]})
    empty = tmp_path / "no-data"
    summary = runner.run_tier(protocol, models=["resnet"], results_dir=tmp_path / "results", data_dir=empty,
                              download=True, device=torch.device("cpu"), progress=False)
    assert summary.unavailable == ["cifar10"]  # missing, and --download does not apply to an optional task
    assert {r.task for _, r in iter_records(tmp_path / "results")} == {"digits", "pendulum"}
    assert not empty.exists(), "nothing was downloaded"
    with pytest.raises(DataMissingError, match="cifar10"):  # asked for by name, missing data is an error
        runner.run_tier(protocol, models=["resnet"], tasks=["cifar10"], results_dir=tmp_path / "results",
                        data_dir=empty, device=torch.device("cpu"), progress=False)


def test_a_tree_without_git_records_the_declared_commit(tmp_path, monkeypatch, capsys) -> None:
    from benchmarks.store import provenance

    monkeypatch.setattr(provenance, "source_tree", lambda: None)
    monkeypatch.delenv("DEPTHBENCH_GIT_COMMIT", raising=False)
    assert provenance.git_state() == {"git_commit": "unknown", "git_dirty": None}
    monkeypatch.setenv("DEPTHBENCH_GIT_COMMIT", "0123abc")
    assert provenance.git_state() == {"git_commit": "0123abc", "git_dirty": None,
                                      "git_commit_declared_by": "DEPTHBENCH_GIT_COMMIT"}
    monkeypatch.setenv("DEPTHBENCH_GIT_COMMIT", "main")
    assert main(["run", "--tier", "smoke", "--results", str(tmp_path), "--no-progress"]) == 2
    assert "DEPTHBENCH_GIT_COMMIT must be a hex commit id" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing ran"


def test_concurrent_workers_write_the_records_of_a_sequential_run(quick_results, tmp_path, monkeypatch) -> None:
    reference_root, _ = quick_results
    monkeypatch.setattr(executors, "available_cores", lambda: 2)  # two workers even on a one-core machine
    summary = runner.run_tier(QUICK, models=QUICK_MODELS, results_dir=tmp_path, device=torch.device("cpu"),
                              progress=False, workers=2)
    assert len(summary.written) == 4 and not summary.failed and summary.phase_seconds["train"] > 0
    reference = {p.relative_to(reference_root): _comparable(r) for p, r in iter_records(reference_root)}
    concurrent = {p.relative_to(tmp_path): _comparable(r) for p, r in iter_records(tmp_path)}
    assert concurrent == reference
    assert {r.provenance["concurrent_runs"] for _, r in iter_records(tmp_path)} == {2}
    assert {r.provenance["concurrent_runs"] for _, r in iter_records(reference_root)} == {1}
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        runner.run_tier(QUICK, results_dir=tmp_path, workers=0)


class NaNModel(nn.Module):
    def __init__(self, input_shape, num_classes, *, width=8, depth=3):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


def test_a_nan_model_is_recorded_as_failed(tmp_path, monkeypatch) -> None:
    """The runner's own failure path (`depthbench check` would refuse this model before any run: see test_check)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model(dataclasses.replace(registry.model_card("resnet"), name="nan-model"))(NaNModel)
    summary = runner.run_tier(QUICK, models=["nan-model"], tasks=["digits"], results_dir=tmp_path,
                              device=torch.device("cpu"), progress=False, check_models=False)
    assert len(summary.failed) == 1
    record = json.loads(summary.failed[0].read_text())
    assert record["status"] == "failed" and "diverged" in record["flags"]
    assert "TrainingDiverged" in record["error"] and record["metrics"] == {}
    assert record["provenance"]["git_commit"]
    # A failed run is done too: it is skipped on rerun unless asked to retry.
    again = runner.run_tier(QUICK, models=["nan-model"], tasks=["digits"], results_dir=tmp_path,
                            device=torch.device("cpu"), progress=False, check_models=False)
    assert len(again.skipped) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--models", "resnet,nope"], "unknown model(s) nope; known models: anode"),
    (["run", "--tasks", "imagenet"], "unknown task 'imagenet'"),
    (["run", "--tier", "standard"], "meant for a CUDA GPU"),
    (["leaderboard", "--results", "/nonexistent/results"], "no results store"),
])
def test_bad_cli_input_gets_a_clear_message(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_auto_tier_falls_back_to_smoke_when_gpu_data_is_missing(tmp_path, monkeypatch, capsys) -> None:
    """`tox -e bench` on a fresh GPU machine must run without a download: the bundled-data tier instead."""
    from benchmarks import cli
    from benchmarks.data import tasks

    # A GPU machine as far as the choice of tier goes (the first question asked); the runs themselves are on CPU.
    answers = iter([True])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: next(answers, False))
    monkeypatch.setattr(cli, "pick_device", lambda requested, protocol: torch.device("cpu"))
    monkeypatch.setattr(tasks, "_SYSTEM_IDX_DIRS", {})
    monkeypatch.setenv("DEPTHBENCH_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--models", "resnet", "--results", str(tmp_path / "results"), "--no-progress",
                 "--no-leaderboard", "--published", str(tmp_path / "none")]) == 0
    err = capsys.readouterr().err
    assert "standard tier's data is missing" in err and "tier smoke" in err
    assert {r.task for _, r in iter_records(tmp_path / "results")} == set(SMOKE.tasks)
    # Asked for explicitly, missing data is an error, not a silent change of tier.
    assert main(["run", "--tier", "standard", "--models", "resnet", "--results", str(tmp_path / "r2")]) == 2
    assert "fashion-mnist" in capsys.readouterr().err


def test_bad_seeds_and_tiers_are_rejected_by_the_parser(capsys) -> None:
    for argv in (["run", "--seeds", "one"], ["run", "--tier", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_list_names_models_tasks_and_tiers(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "continuousnet" in out and "cifar10-jpeg" in out and SMOKE.task_hash("digits") in out

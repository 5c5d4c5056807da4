"""What a new user sees first: the CPU-only install before the first command, a bench whose last screen is their own
table and verdicts, tolerances printed as docs/running.md states them, a sensible thread count without tox, the
smoke tier labelled a pipeline check, and the next step said for what is actually missing."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from types import SimpleNamespace

from benchmarks.cli import main
from benchmarks.protocols import SMOKE
from benchmarks.reporting.console import comparison
from benchmarks.reporting.reproduce import compare_values, tolerance_for
from benchmarks.store.records import save_record
from benchmarks.suites.conftest import summary_lines

from cli_helpers import fake_record
from data_on_disk import REPO

CPU_WHEELS = "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"


def test_readme_gives_the_cpu_only_install_before_the_first_command() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme[readme.index("## Set-up on a fresh machine"):readme.index("## Using the zoo")]
    assert CPU_WHEELS in setup
    assert setup.index(CPU_WHEELS) < setup.index("tox -e bench") < setup.index("tox -e py")


def test_the_bench_ends_with_the_run_and_summarises_the_suites() -> None:
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "tox.ini")
    bench = config["testenv:bench"]
    commands = [line.strip() for line in bench["commands"].splitlines() if line.strip()]
    assert commands[-1].startswith("depthbench run"), "the user's table and verdicts are the last screen"
    (suites,) = [c for c in commands if c.startswith("pytest benchmarks/suites")]
    assert "--benchmark-quiet" in suites and "--benchmark-json=" in suites  # no 250-column table; all in the JSON
    assert bench.get("ignore_errors", "").strip() == "true"  # a failing suite does not keep the run from running

    def bench_stats(name: str, median: float) -> SimpleNamespace:
        return SimpleNamespace(name=name, has_error=False,
                               stats=SimpleNamespace(median=median, iqr=median / 10, rounds=12))

    lines = summary_lines([bench_stats("test_latency[neural-ode]", 0.0123), bench_stats("test_epoch[eager]", 2.5)],
                          "local/results/benchmarks/suites.json")
    assert lines[1:3] == ["  test_epoch[eager]         2.5 s (250 ms), 12 rounds",
                          "  test_latency[neural-ode]  12.3 ms (1.23 ms), 12 rounds"]
    assert lines[-1].endswith("local/results/benchmarks/suites.json") and max(map(len, lines)) < 100


def test_the_mse_tolerance_is_printed_as_readme_states_it(repo) -> None:
    verdict = compare_values("test_mse", [0.01], [0.025], tolerance_for("smoke"))
    assert verdict.describe() == "reproduces (ratio 2.5×, allowed within 3× by tolerance)"
    assert "an MSE ratio within 3×" in (REPO / "docs/running.md").read_text()
    save_record(repo / "local/results", fake_record(SMOKE, "digits", "resnet", 0))
    text = comparison(repo / "local/results", repo / "results", "smoke", SMOKE.hashes(), checkout=True)
    assert "tolerance of the smoke tier: 10 points of accuracy or an MSE ratio within 3×" in text
    assert "±200%" not in text


def test_the_comparison_names_the_models_without_a_published_record(repo) -> None:
    for model in ("resnet", "inresnet"):
        save_record(repo / "local/results", fake_record(SMOKE, "digits", model, 0))
    digits = SMOKE.task_hash("digits")
    text = comparison(repo / "local/results", repo / "results", "smoke", SMOKE.hashes(), checkout=True)
    assert f"no published record of inresnet on digits under {digits}: `depthbench publish`" in text
    assert "nothing published under" not in text  # resnet is published under it
    empty = repo / "nothing-published"
    empty.mkdir()
    text = comparison(repo / "local/results", empty, "smoke", SMOKE.hashes(), checkout=True)
    assert f"nothing is published on digits under {digits} yet" in text


def test_the_table_of_a_pipeline_check_says_so(repo, fake_runs, capsys) -> None:
    assert main(["run", "--tier", "smoke", "--models", "resnet", "--tasks", "digits", "--no-progress",
                 "--no-leaderboard"]) == 0
    out = capsys.readouterr().out
    assert f"Results of tier smoke v{SMOKE.version} in local/results:\n  (the smoke tier is a pipeline check" in out
    assert "its numbers rank nothing" in out


def test_without_omp_num_threads_the_command_uses_one_thread_per_run() -> None:
    code = ("import os, torch\nfrom benchmarks.cli import main\nmain(['list'])\n"
            "print('threads', torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)

    def threads(extra: dict[str, str]) -> str:
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, **extra}, capture_output=True,
                             text=True, timeout=300, check=True).stdout
        return out.splitlines()[-1]

    assert threads({}) == "threads 1 1"  # torch's default would be every core: contention for small models
    assert threads({"OMP_NUM_THREADS": "2"}) == "threads 2 2"  # the user's setting is kept


def test_contributing_says_where_records_go_and_that_publish_makes_the_row() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text()
    step = text[text.index("## 5."):text.index("## 6.")]
    assert "records under results/" not in step and "local/results/" in step
    assert step.index("depthbench publish") < step.index("depthbench leaderboard")

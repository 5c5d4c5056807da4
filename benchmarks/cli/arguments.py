"""The command line's arguments: `depthbench`'s parser, and the checks of each value (argparse types), so that a bad
value is refused, with what is allowed, before anything runs (exit 2)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmarks.evaluation.check import CHECK_TIME_LIMIT
from benchmarks.execution import cluster, device_cli
from benchmarks.protocols import PROTOCOLS
from benchmarks.store.locations import DEFAULT_RESULTS, LOCAL_LEADERBOARDS, LOCAL_RESULTS
from benchmarks.studies.registry import all_studies
from benchmarks.training.train import MAX_SEED


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:  # an empty list would otherwise mean "nothing" for one option and "everything" for another
        raise argparse.ArgumentTypeError("empty list: give comma-separated names, or leave the option out for the "
                                         "tier's own")
    return names


def _seeds(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("empty list: give comma-separated seeds such as 0,1,2, or leave the option "
                                         "out for the tier's own")
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated non-negative integers, got {text!r}")
    return [_seed(part) for part in parts]


def _seed(text: str) -> int:
    """One seed: a whole number from 0 to MAX_SEED (numpy's limit, checked here rather than after a training)."""
    if not text.strip().isdigit() or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is a whole number from 0 to {MAX_SEED} (2**32 - 1, numpy's "
                                         f"limit), got {text!r}")
    return int(text)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of minutes >= 0, got {text!r} (0 checks "
                                         "everything and starts no run; leave it out for no limit)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _workers(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _task_hash(text: str) -> str:
    if len(text) != 12 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(f"must be a protocol hash (12 lowercase hex digits), got {text!r}")
    return text


def parser(description: str) -> argparse.ArgumentParser:
    """`depthbench`'s parser; `description` is the command's help text (benchmarks/cli/__init__.py)."""
    parser = argparse.ArgumentParser(prog="depthbench", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and measure models on this machine, one record per run; then "
                                          "show the table and compare with the published records")
    run.add_argument("--tier", default="auto", choices=[*PROTOCOLS, "auto"],
                     help="protocol to run; auto = standard on a CUDA machine, smoke otherwise")
    run.add_argument("--models", type=_names, help="comma-separated model names (default: the tier's)")
    run.add_argument("--tasks", type=_names, help="comma-separated task names (default: the tier's)")
    run.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the tier's)")
    run.add_argument("--results", type=Path,
                     help=f"results store (default: {LOCAL_RESULTS}/ in a checkout, git-ignored, else "
                          "~/.local/share/depthbench/results; `--results results` writes into the published store "
                          "directly)")
    run.add_argument("--published", type=Path, default=DEFAULT_RESULTS,
                     help=f"published records to compare with (default: {DEFAULT_RESULTS}/)")
    run.add_argument("--out", type=Path,
                     help=f"where the store's leaderboards are rendered (default: {LOCAL_LEADERBOARDS}/ beside the "
                          "default store, DIR-leaderboards/ beside --results DIR; never README.md or CITATION.cff)")
    run.add_argument("--data-dir", help="data root (default: $DEPTHBENCH_DATA or ~/.cache/depthbench/data)")
    run.add_argument("--download", action="store_true", help="let torchvision download missing data sets")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: the tier's)")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    run.add_argument("--max-minutes", type=_minutes, metavar="M",
                     help="start no run after M minutes; rerun the same command to do the rest")
    run.add_argument("--workers", type=_workers, default=1, metavar="N",
                     help="runs at once, in separate processes sharing the device (default 1; lowered to the runs "
                          "to do and the CPU cores here); small models leave a GPU idle between kernel launches, so a "
                          "few concurrent runs finish a tier sooner")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (on a terminal) or progress lines (elsewhere)")
    run.add_argument("--no-leaderboard", action="store_true", help="do not render the store's leaderboards")
    cluster.add_arguments(run)

    status = commands.add_parser("status", help="the matrix of a tier in a results store: done / failed / running / "
                                 "missing runs per model x task, and Slurm's queue where squeue is available")
    status.add_argument("--tier", default="smoke", choices=list(PROTOCOLS), help="tier to show (default: smoke)")
    status.add_argument("--results", type=Path,
                        help=f"results store (default: {LOCAL_RESULTS}/, as for run)")
    status.add_argument("--models", type=_names, help="comma-separated model names (default: the tier's)")
    status.add_argument("--tasks", type=_names, help="comma-separated task names (default: the tier's)")
    status.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the tier's)")
    status.add_argument("--cost", action="store_true", help="also what the tier costs, from its records' phase "
                        "times: minutes per run by model and phase, run-hours, wall time for --workers runs at once")
    status.add_argument("--workers", type=_workers, default=2, metavar="N",
                        help="runs at once in the --cost wall-time estimate (default 2)")
    status.add_argument("--hash", type=_task_hash, metavar="HASH",
                        help="--cost from the records of this protocol hash (an earlier definition of the tier) "
                        "instead of the current one's")

    publish = commands.add_parser("publish", help="copy validated records from the local store into results/, all "
                                  "or nothing")
    publish.add_argument("--from", dest="source", type=Path,
                         help=f"store to publish from (default: {LOCAL_RESULTS}/, as for run)")
    publish.add_argument("--to", dest="target", type=Path,
                         help=f"published store (default: {DEFAULT_RESULTS}/ of the checkout you are in)")
    publish.add_argument("--tier", choices=list(PROTOCOLS),
                         help="only the records of this tier's current (tier, task) hashes")
    publish.add_argument("--replace", action="store_true",
                         help="overwrite published records that differ (default: refuse and list them)")

    board = commands.add_parser("leaderboard", help="regenerate leaderboards/ from the results store alone")
    board.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    board.add_argument("--out", type=Path, default=Path("leaderboards"))
    board.add_argument("--readme", type=Path,
                       help="README whose leaderboard section is replaced (between the markers; default: README.md "
                       "when --out is leaderboards/, else none: tables rendered elsewhere never rewrite it)")
    board.add_argument("--citation", type=Path,
                       help="where CITATION.cff is written (default: CITATION.cff when --out is leaderboards/, "
                       "else none)")

    check = commands.add_parser("check", help="test a model against the contract (zoo/contract.py) on CPU, in "
                                "seconds, before spending GPU time on it")
    check.add_argument("model", help="registered model name (see `depthbench list`)")
    check.add_argument("--task", type=_names, help="comma-separated tasks whose input shapes to check (default: all)")
    check.add_argument("--tier", default="smoke", choices=list(PROTOCOLS),
                       help="build the model at this tier's size class (default: smoke)")
    check.add_argument("--time-limit", type=_seconds, default=CHECK_TIME_LIMIT, metavar="S",
                       help=f"seconds each step of the check (build, a forward, ...) may take before it fails as "
                            f"hanging (default {CHECK_TIME_LIMIT:g})")
    evaluate = commands.add_parser(
        "evaluate", help="the tier's evaluation (no training) of submitted weights, recorded as MODEL@<sha256[:12]>")
    evaluate.add_argument("model", help="registered model name the weights are for")
    evaluate.add_argument("--checkpoint", type=Path, required=True,
                          help="torch.save(model.state_dict(), FILE); loaded with weights_only=True")
    evaluate.add_argument("--task", required=True, help="task to evaluate on")
    evaluate.add_argument("--tier", default="smoke", choices=list(PROTOCOLS),
                          help="protocol whose size and evaluation settings apply (default: smoke)")
    evaluate.add_argument("--seed", type=_seed, default=0, help="seed the record is filed under (default 0)")
    evaluate.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    evaluate.add_argument("--data-dir", help="data root (default: $DEPTHBENCH_DATA or ~/.cache/depthbench/data)")
    evaluate.add_argument("--device", help="torch device (default: the tier's)")

    studies = all_studies()
    study = commands.add_parser(
        "study", help="a study on CPU (minutes to half an hour): results/<study>/<task>.json and "
        "leaderboards/<study>/<task>.md/.csv (and .png)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="studies:\n" + "\n".join(f"  {name}: {spec.summary} (default task {spec.task}, seeds "
                                              f"{' '.join(map(str, spec.seeds))})" for name, spec in studies.items()))
    study.add_argument("name", choices=list(studies), help="which study")
    study.add_argument("--task", help="task to run it on (default: the study's own)")
    study.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the study's own)")
    study.add_argument("--limit", type=int, help="keep at most this many examples per split (quick runs)")
    study.add_argument("--results", type=Path, default=Path("results"), help="study files go to RESULTS/<study>/")
    study.add_argument("--out", type=Path, default=Path("leaderboards"), help="tables go to OUT/<study>/")
    study.add_argument("--checkpoints", type=Path, help="suite-strength: reuse the weights kept by `depthbench run "
                       "--tier cpu --keep-checkpoints` in this store (the same tier hash, model and seed), else train")
    study.add_argument("--workers", type=_workers, metavar="N", help="the studies that take it: seeds at once, in N "
                       "processes of one torch thread each (CPU; default 1; each loads the data itself)")
    claims = commands.add_parser("claims", help="the papers' claims checked (issue #15): depth-transfer studies from "
                                 "the records, then leaderboards/claims.md and .csv from records and study files")
    claims.add_argument("--results", type=Path, default=Path("results"), help="records and study files")
    claims.add_argument("--out", type=Path, default=Path("leaderboards"))

    commands.add_parser("list", help="models, tasks and tiers")
    device_cli.add_parser(commands, names=_names, seeds=_seeds, minutes=_minutes, workers=_workers)
    return parser

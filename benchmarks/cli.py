"""`depthbench`: run tiers, regenerate leaderboards, list what exists.

    depthbench run --tier smoke                      # CPU, minutes, no download
    depthbench run --tier standard --seeds 0,1,2     # one GPU
    depthbench leaderboard                           # tables, plots and page from results/ alone
    depthbench list                                  # models, tasks, tiers and their hashes
    depthbench check MODEL [--task T]                # a model against the contract, on CPU, in seconds
    depthbench evaluate MODEL --checkpoint W.pt --task digits --tier smoke   # submitted weights, no training
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import zoo
from benchmarks.protocols import PROTOCOLS, get_protocol
from benchmarks.runner import DEFAULT_RESULTS, pick_device, run_tier
from benchmarks.tasks import DataMissingError, list_tasks


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and measure models, writing one record per run")
    run.add_argument("--tier", default="auto", choices=[*PROTOCOLS, "auto"],
                     help="protocol to run; auto = standard on a CUDA machine, smoke otherwise")
    run.add_argument("--models", type=_names, help="comma-separated model names (default: the tier's)")
    run.add_argument("--tasks", type=_names, help="comma-separated task names (default: the tier's)")
    run.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the tier's)")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results store (default: results/)")
    run.add_argument("--data-dir", help="data root (default: $DEPTHBENCH_DATA or ~/.cache/depthbench/data)")
    run.add_argument("--download", action="store_true", help="let torchvision download missing data sets")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: the tier's)")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    run.add_argument("--max-minutes", type=float, metavar="M",
                     help="start no run after M minutes; rerun the same command to do the rest")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="runs at once, in separate processes sharing the device (default 1); small models leave "
                          "a GPU idle between kernel launches, so a few concurrent runs finish a tier sooner")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--leaderboard", action="store_true", help="regenerate leaderboards afterwards")

    board = commands.add_parser("leaderboard", help="regenerate leaderboards/ from the results store alone")
    board.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    board.add_argument("--out", type=Path, default=Path("leaderboards"))
    board.add_argument("--readme", type=Path, default=Path("README.md"),
                       help="README whose leaderboard section is replaced (between the markers)")
    board.add_argument("--citation", type=Path, default=Path("CITATION.cff"), help="where CITATION.cff is written")

    check = commands.add_parser("check", help="test a model against the contract (zoo/contract.py) on CPU, in "
                                "seconds, before spending GPU time on it")
    check.add_argument("model", help="registered model name (see `depthbench list`)")
    check.add_argument("--task", type=_names, help="comma-separated tasks whose input shapes to check (default: all)")
    check.add_argument("--tier", default="smoke", choices=list(PROTOCOLS),
                       help="build the model at this tier's size class (default: smoke)")
    evaluate = commands.add_parser(
        "evaluate", help="the tier's evaluation (no training) of submitted weights, recorded as MODEL@<sha256[:12]>")
    evaluate.add_argument("model", help="registered model name the weights are for")
    evaluate.add_argument("--checkpoint", type=Path, required=True,
                          help="torch.save(model.state_dict(), FILE); loaded with weights_only=True")
    evaluate.add_argument("--task", required=True, help="task to evaluate on")
    evaluate.add_argument("--tier", default="smoke", choices=list(PROTOCOLS),
                          help="protocol whose size and evaluation settings apply (default: smoke)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed the record is filed under (default 0)")
    evaluate.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    evaluate.add_argument("--data-dir", help="data root (default: $DEPTHBENCH_DATA or ~/.cache/depthbench/data)")
    evaluate.add_argument("--device", help="torch device (default: the tier's)")

    commands.add_parser("list", help="models, tasks and tiers")
    return parser


def _run(args: argparse.Namespace) -> int:
    tier = args.tier if args.tier != "auto" else ("standard" if torch.cuda.is_available() else "smoke")
    try:
        summary = _run_tier(args, tier)
    except DataMissingError as error:
        if args.tier != "auto" or tier == "smoke" or args.tasks:
            raise
        # `tox -e bench` must work on a fresh machine with no download: fall back to the bundled-data tier.
        print(f"depthbench: the standard tier's data is missing ({error})\n"
              "depthbench: running the smoke tier instead; see README.md for how to get the data", file=sys.stderr)
        summary = _run_tier(args, "smoke")
    print(f"depthbench: {len(summary.written)} runs recorded, {len(summary.failed)} failed, "
          f"{len(summary.skipped)} already done (records under {args.results})", file=sys.stderr)
    for name in summary.unavailable:
        print(f"depthbench: optional task {name} not run: its data is not on disk (`depthbench run --tasks {name} "
              "--download` fetches it where torchvision can)", file=sys.stderr)
    if summary.phase_seconds:
        spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                          sorted(summary.phase_seconds.items(), key=lambda item: -item[1]))
        print(f"depthbench: time by phase over the runs just done: {spent}", file=sys.stderr)
    if summary.postponed:
        print(f"depthbench: {len(summary.postponed)} runs not started within --max-minutes {args.max_minutes:g}; "
              "rerun the same command to do them", file=sys.stderr)
    if args.leaderboard:
        return _leaderboard(argparse.Namespace(results=args.results, out=Path("leaderboards"),
                                               readme=Path("README.md"), citation=Path("CITATION.cff")))
    return 0


def _run_tier(args: argparse.Namespace, tier: str):
    protocol = get_protocol(tier)
    device = pick_device(args.device, protocol)
    print(f"depthbench: tier {protocol.name} (protocol hash {protocol.hash}) on {device}", file=sys.stderr)
    return run_tier(protocol, models=args.models, tasks=args.tasks, seeds=args.seeds, results_dir=args.results,
                    data_dir=args.data_dir, download=args.download, device=device, retry_failed=args.retry_failed,
                    progress=not args.no_progress, max_minutes=args.max_minutes,
                    workers=args.workers)


def _leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.leaderboard import write_leaderboards  # pandas/matplotlib only when needed

    if not Path(args.results).is_dir():
        raise FileNotFoundError(f"no results store at {args.results}: run `depthbench run` first")
    written = write_leaderboards(args.results, out_dir=args.out, readme=args.readme, citation=args.citation)
    print(f"depthbench: wrote {len(written)} leaderboard files under {args.out}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from benchmarks.check import check_model

    report = check_model(args.model, args.task, get_protocol(args.tier).model_overrides)
    print(report.text())
    return 0 if report.ok else 1


def _evaluate(args: argparse.Namespace) -> int:
    from benchmarks.evaluate import evaluate_checkpoint
    from benchmarks.protocols import recipe_for
    from benchmarks.records import save_record
    from benchmarks.tasks import get_task

    protocol = get_protocol(args.tier)
    zoo.model_card(args.model)  # an unknown model fails here, naming the known ones
    task = get_task(args.task)
    recipe_for(protocol, task.name)  # a task the tier has no recipe for (so no grids, no size) fails here
    device = pick_device(args.device, protocol)
    data = task.load(args.data_dir, limit=protocol.data_limit)
    record = evaluate_checkpoint(protocol, task, data, args.model, args.checkpoint, device, seed=args.seed)
    path = save_record(args.results, record)
    if record.status != "ok":
        print(f"depthbench: evaluation failed: {record.error} (recorded in {path})", file=sys.stderr)
        return 1
    print(f"depthbench: evaluated {args.model} from {args.checkpoint} (sha256 "
          f"{record.provenance['checkpoint']['sha256'][:12]}) on {task.name}, tier {protocol.name}: {path}",
          file=sys.stderr)
    return 0


def _list() -> int:
    names = []
    for name in zoo.list_models():  # plugins name the distribution that provides them
        found = zoo.registry.model_distribution(name)
        names.append(f"{name} ({found['distribution']} {found['version']})" if found else name)
    print("models: " + ", ".join(names))
    for name, sources in zoo.registry.name_clashes().items():
        print(f"  name clash: {name!r} is claimed by {' and by '.join(sources)} (unusable until one is removed)")
    for broken in zoo.broken_models():
        print(f"  broken (not registered): {broken}")
    print("tasks:  " + ", ".join(list_tasks()))
    for protocol in PROTOCOLS.values():
        print(f"tier {protocol.name} v{protocol.version} ({protocol.hash}): {protocol.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "leaderboard":
            return _leaderboard(args)
        if args.command == "check":
            return _check(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _list()
    except (ValueError, KeyError, DataMissingError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"depthbench: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("depthbench: interrupted; finished runs are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

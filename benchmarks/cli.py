"""`depthbench`: run tiers on this machine, compare with the published records, publish, render leaderboards.

    depthbench run --tier smoke                      # CPU, minutes, no download; records in local/results/
    depthbench run --tier standard --seeds 0,1,2     # one GPU
    depthbench run --tier paper --executor slurm     # each run one element of a Slurm job array (submitit)
    depthbench status --tier paper                   # done / failed / running / missing per model x task
    depthbench publish                               # copy local/results/ records into results/ (the repository's)
    depthbench leaderboard                           # leaderboards/, README tables, CITATION from results/ alone
    depthbench list                                  # models, tasks, tiers and their hashes
    depthbench check MODEL [--task T]                # a model against the contract, on CPU, in seconds
    depthbench evaluate MODEL --checkpoint W.pt --task digits --tier smoke   # submitted weights, no training

Exit status: 0 when every requested run succeeded or was already recorded (or, with --no-wait, was submitted), 1 when
a run failed (listed with its reason), 2 for a usage or configuration error (nothing was run), 3 when runs were left
undone (--max-minutes, or Slurm jobs cancelled: rerun the same command to resume them).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.data.tasks import DataCorruptError, DataMissingError, list_tasks
from benchmarks.execution import cluster
from benchmarks.execution.runner import DEFAULT_RESULTS, LOCAL_RESULTS, RunSummary, pick_device, run_tier
from benchmarks.io import write_atomic
from benchmarks.protocols import PROTOCOLS, current_hashes, get_protocol
from benchmarks.reporting.reproduce import compare_stores, format_rows, tolerance_for
from benchmarks.store.records import Record, RecordError, iter_records, load_record

LOCAL_LEADERBOARDS = Path("local/leaderboards")
STUDIES = ("refinement", "compression", "memory", "stiffness", "suite-strength")
EXIT_FAILED, EXIT_USAGE, EXIT_POSTPONED = 1, 2, 3


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
    return [int(part) for part in parts]


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of minutes >= 0, got {text!r} (0 checks "
                                         "everything and starts no run; leave it out for no limit)")
    return value


def _workers(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depthbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and measure models on this machine, one record per run; then "
                                          "show the table and compare with the published records")
    run.add_argument("--tier", default="auto", choices=[*PROTOCOLS, "auto"],
                     help="protocol to run; auto = standard on a CUDA machine, smoke otherwise")
    run.add_argument("--models", type=_names, help="comma-separated model names (default: the tier's)")
    run.add_argument("--tasks", type=_names, help="comma-separated task names (default: the tier's)")
    run.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the tier's)")
    run.add_argument("--results", type=Path, default=LOCAL_RESULTS,
                     help=f"results store (default: {LOCAL_RESULTS}/, git-ignored; `--results results` writes into "
                          "the published store directly)")
    run.add_argument("--published", type=Path, default=DEFAULT_RESULTS,
                     help=f"published records to compare with (default: {DEFAULT_RESULTS}/)")
    run.add_argument("--out", type=Path, default=LOCAL_LEADERBOARDS,
                     help=f"where the store's leaderboards are rendered (default: {LOCAL_LEADERBOARDS}/; never "
                          "README.md or CITATION.cff)")
    run.add_argument("--data-dir", help="data root (default: $DEPTHBENCH_DATA or ~/.cache/depthbench/data)")
    run.add_argument("--download", action="store_true", help="let torchvision download missing data sets")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: the tier's)")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    run.add_argument("--max-minutes", type=_minutes, metavar="M",
                     help="start no run after M minutes; rerun the same command to do the rest")
    run.add_argument("--workers", type=_workers, default=1, metavar="N",
                     help="runs at once, in separate processes sharing the device (default 1); small models leave "
                          "a GPU idle between kernel launches, so a few concurrent runs finish a tier sooner")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (on a terminal) or progress lines (elsewhere)")
    run.add_argument("--no-leaderboard", action="store_true", help="do not render the store's leaderboards")
    cluster.add_arguments(run)

    status = commands.add_parser("status", help="the matrix of a tier in a results store: done / failed / running / "
                                 "missing runs per model x task, and Slurm's queue where squeue is available")
    status.add_argument("--tier", default="smoke", choices=list(PROTOCOLS), help="tier to show (default: smoke)")
    status.add_argument("--results", type=Path, default=LOCAL_RESULTS,
                        help=f"results store (default: {LOCAL_RESULTS}/)")
    status.add_argument("--models", type=_names, help="comma-separated model names (default: the tier's)")
    status.add_argument("--tasks", type=_names, help="comma-separated task names (default: the tier's)")
    status.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the tier's)")

    publish = commands.add_parser("publish", help="copy validated records from the local store into results/")
    publish.add_argument("--from", dest="source", type=Path, default=LOCAL_RESULTS,
                         help=f"store to publish from (default: {LOCAL_RESULTS}/)")
    publish.add_argument("--to", dest="target", type=Path, default=DEFAULT_RESULTS,
                         help=f"published store (default: {DEFAULT_RESULTS}/)")
    publish.add_argument("--tier", choices=list(PROTOCOLS),
                         help="only the records of this tier's current protocol hash")
    publish.add_argument("--replace", action="store_true",
                         help="overwrite published records that differ (default: refuse and list them)")

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

    conv = commands.add_parser("convergence", help="the convergence test (Queiruga et al. 2020) on the pendulum task, "
                               "on CPU: results/convergence/pendulum.json and leaderboards/convergence/pendulum.*")
    conv.add_argument("--seeds", type=int, default=3)
    conv.add_argument("--iterations", type=int, default=500, help="L-BFGS iterations per (scheme, seed)")
    conv.add_argument("--n-train", type=int, default=4, help="training step count over the horizon, a multiple of 4")
    conv.add_argument("--limit", type=int, help="keep at most this many examples per split (quick runs)")
    conv.add_argument("--results", type=Path, default=Path("results"),
                      help="root of the study files: writes RESULTS/convergence/pendulum.json")
    conv.add_argument("--out", type=Path, default=Path("leaderboards/convergence"))

    study = commands.add_parser("study", help="a study of issue #15 on CPU, minutes: results/<study>/<task>.json and "
                                "leaderboards/<study>/<task>.md/.csv (and .png)")
    study.add_argument("name", choices=STUDIES, help="which study")
    study.add_argument("--task", default="digits", help="task to run it on (default: digits)")
    study.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    study.add_argument("--limit", type=int, help="keep at most this many examples per split (quick runs)")
    study.add_argument("--results", type=Path, default=Path("results"), help="study files go to RESULTS/<study>/")
    study.add_argument("--out", type=Path, default=Path("leaderboards"), help="tables go to OUT/<study>/")
    study.add_argument("--checkpoints", type=Path, help="suite-strength: reuse the weights kept by `depthbench run "
                       "--tier cpu --keep-checkpoints` in this store (the same tier hash, model and seed), else train")
    claims = commands.add_parser("claims", help="the papers' claims checked (issue #15): depth-transfer studies from "
                                 "the records, then leaderboards/claims.md and .csv from records and study files")
    claims.add_argument("--results", type=Path, default=Path("results"), help="records and study files")
    claims.add_argument("--out", type=Path, default=Path("leaderboards"))

    commands.add_parser("list", help="models, tasks and tiers")
    return parser


def _run(args: argparse.Namespace) -> int:
    tier = args.tier if args.tier != "auto" else ("standard" if torch.cuda.is_available() else "smoke")
    try:
        protocol, summary = _run_tier(args, tier)
    except DataMissingError as error:
        if args.tier != "auto" or tier == "smoke" or args.tasks:
            raise
        # `tox -e bench` must work on a fresh machine with no download: fall back to the bundled-data tier. The data
        # of every task is checked before the first run, so nothing of the standard tier has run at this point.
        print(f"depthbench: the standard tier's data is missing ({error})\n"
              "depthbench: running the smoke tier instead; see README.md for how to get the data", file=sys.stderr)
        protocol, summary = _run_tier(args, "smoke")
    _report(args, protocol, summary)
    if summary.submitted:  # --no-wait: the jobs write their records later; nothing to tabulate yet
        return 0
    if not args.no_leaderboard:
        _render_local(args.results, args.out)
    _compare(args.results, args.published, protocol)
    if summary.failed:
        print(f"depthbench: {len(summary.failed)} of the requested runs FAILED (their records say why; "
              "`--retry-failed` runs them again):", file=sys.stderr)
        for label, reason in summary.failures.items():
            print(f"  {label}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    if summary.postponed or summary.unfinished:
        return EXIT_POSTPONED
    return 0


def _run_tier(args: argparse.Namespace, tier: str) -> tuple[Any, RunSummary]:
    protocol = get_protocol(tier)
    slurm = cluster.settings_from_args(args)
    # Slurm jobs check their device where they run (a login node often has no GPU); a local run checks it here.
    device = pick_device(args.device, protocol) if slurm is None else torch.device(args.device or protocol.device)
    print(f"depthbench: tier {protocol.name} v{protocol.version} ({_hashes(protocol, args.tasks)}) on {device}; "
          f"records go to {args.results}", file=sys.stderr, flush=True)
    return protocol, run_tier(protocol, models=args.models, tasks=args.tasks, seeds=args.seeds,
                              results_dir=args.results, data_dir=args.data_dir, download=args.download, device=device,
                              retry_failed=args.retry_failed, progress=not args.no_progress,
                              max_minutes=args.max_minutes, workers=args.workers,
                              keep_checkpoints=args.keep_checkpoints, slurm=slurm)


def _report(args: argparse.Namespace, protocol: Any, summary: RunSummary) -> None:
    print(f"depthbench: {len(summary.written)} runs recorded, {len(summary.failed)} failed, "
          f"{len(summary.skipped)} already done (records under {args.results})", file=sys.stderr)
    if summary.failed_before:
        print(f"depthbench: {len(summary.failed_before)} of those already done are failed runs; `--retry-failed` "
              "runs them again", file=sys.stderr)
    for name in summary.unavailable:
        print(f"depthbench: optional task {name} not run: its data is not on disk (`depthbench run --tasks {name} "
              "--download` fetches it where torchvision can)", file=sys.stderr)
    if summary.phase_seconds:
        spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                          sorted(summary.phase_seconds.items(), key=lambda item: -item[1]))
        print(f"depthbench: time by phase over the runs just done: {spent}", file=sys.stderr)
    for label, why in summary.unfinished.items():
        print(f"depthbench: {label} has no record: {why}", file=sys.stderr)
    if summary.submitted:
        print(f"depthbench: {len(summary.submitted)} runs are in Slurm's hands; `depthbench status --tier "
              f"{protocol.name} --results {args.results}` follows them, and the same command again (when they are "
              "done) shows the table", file=sys.stderr)
    if summary.postponed:
        print(f"depthbench: {len(summary.postponed)} runs not started within --max-minutes {args.max_minutes:g}; "
              "rerun the same command to do them", file=sys.stderr)
    hashes = set(protocol.hashes().values())
    table = results_table([r for _, r in iter_records(args.results) if r.protocol["hash"] in hashes])
    if table:
        print(f"\nResults of tier {protocol.name} v{protocol.version} in {args.results}:\n{table}")


def results_table(records: Sequence[Record]) -> str:
    """The compact table printed after a run: per task, each model's main metric (mean ± std over seeds), best
    first; failed runs are counted, never averaged."""
    lines = []
    for task in sorted({r.task for r in records}):
        rows: dict[str, list[Record]] = {}
        for r in records:
            if r.task == task:
                rows.setdefault(r.model, []).append(r)
        metric = "accuracy" if any("accuracy" in r.metrics for r in records if r.task == task) else "test_mse"
        scale, unit = (100.0, "test accuracy (%)") if metric == "accuracy" else (1.0, "test MSE")
        entries = []
        for model, runs in rows.items():
            values = [scale * r.metrics[metric] for r in runs if r.status == "ok" and metric in r.metrics]
            failed = sum(r.status != "ok" for r in runs)
            entries.append((model, values, failed))
        entries.sort(key=lambda e: (not e[1], (-1 if metric == "accuracy" else 1) * statistics.fmean(e[1])
                                    if e[1] else 0.0))
        lines.append(f"  {task}: {unit}")
        for model, values, failed in entries:
            if values:
                fmt = "{:.2f}" if metric == "accuracy" else "{:.3g}"
                cell = fmt.format(statistics.fmean(values))
                if len(values) > 1:
                    cell += " ± " + fmt.format(statistics.stdev(values))
                cell += f"  (n={len(values)})"
            else:
                cell = "—"
            lines.append(f"    {model:<22} {cell}" + (f"  [{failed} failed]" if failed else ""))
    return "\n".join(lines)


def _render_local(results: Path, out: Path) -> None:
    from benchmarks.reporting.leaderboard import write_leaderboards  # pandas/matplotlib only when needed

    # readme=None / citation=None: a local render must never rewrite the repository's README.md or CITATION.cff.
    write_leaderboards(results, out_dir=out, readme=None, citation=None)
    print(f"\nLeaderboards of {results}: {out / 'index.html'} (page), {out}/<tier>/<task>.md/.csv/.tex (tables), "
          f"{out / 'README.md'} (index)")


def _hashes(protocol: Any, tasks: Sequence[str] | None = None) -> str:
    """`task hash, ...` of a tier's tasks (those asked for, else all it has a recipe for)."""
    return ", ".join(f"{task} {h}" for task, h in protocol.hashes().items() if not tasks or task in tasks)


def _compare(results: Path, published: Path, protocol: Any) -> None:
    if Path(results).resolve() == Path(published).resolve():
        print(f"\nRecords were written into the published store {published}; nothing to compare with.")
        return
    rows = compare_stores(results, published, set(protocol.hashes().values()))
    tolerance = tolerance_for(protocol.name)
    protocol_hash, protocol_name = _hashes(protocol), protocol.name
    print(f"\nComparison with the published records in {published} (protocol hashes {protocol_hash}; tolerance of "
          f"the {protocol_name} tier: {tolerance.accuracy_points:g} points of accuracy, {tolerance.mse_relative:g} "
          "relative MSE, or 2 standard errors of the seed spread where larger; see benchmarks/reporting/reproduce.py):")
    print(format_rows(rows) if rows else "  no records of this protocol hash in the local store")
    if rows and all(row.note == "no published record of this protocol hash" for row in rows):
        print(f"  (nothing published under {protocol_hash}: `depthbench publish` then `depthbench leaderboard` "
              "make these the published records)")


def _publish(args: argparse.Namespace) -> int:
    source, target = Path(args.source), Path(args.target)
    if not source.is_dir():
        raise FileNotFoundError(f"no results store at {source}: run `depthbench run` first")
    if source.resolve() == target.resolve():
        raise ValueError(f"--from and --to are the same store ({source})")
    wanted = set(get_protocol(args.tier).hashes().values()) if args.tier else None
    current = current_hashes()
    damaged, chosen = [], []
    for path in sorted(source.glob("*/*/*/seed*.json")):
        try:
            record = load_record(path, source)
        except RecordError as error:
            damaged.append(str(error))
            continue
        if wanted is None or record.protocol["hash"] in wanted:
            chosen.append((path, record))
    if damaged:  # validate everything before copying anything: a publication is all or nothing
        print("depthbench: error: damaged records, nothing published (fix or delete them, or rerun `depthbench "
              "run`, which redoes them):\n  " + "\n  ".join(damaged), file=sys.stderr)
        return EXIT_FAILED
    copies, conflicts, same = [], [], 0
    for path, record in chosen:
        dest = target / path.relative_to(source)
        if dest.exists() and dest.read_bytes() == path.read_bytes():
            same += 1
        elif dest.exists() and not args.replace:
            conflicts.append(str(dest))
        else:
            copies.append((path, dest, record))
    if conflicts:
        print("depthbench: error: these published records differ from the local ones; nothing published "
              "(`--replace` overwrites them):\n  " + "\n  ".join(conflicts), file=sys.stderr)
        return EXIT_FAILED
    for path, dest, record in copies:
        write_atomic(dest, path.read_text(encoding="utf-8"))
        if record.protocol["hash"] not in current:
            print(f"depthbench: note: {dest} is of protocol hash {record.protocol['hash']}, no current tier's",
                  file=sys.stderr)
        if record.provenance.get("git_dirty"):
            print(f"depthbench: note: {dest} was made from a modified checkout (git_dirty)", file=sys.stderr)
    suites = source / "benchmarks" / "suites.json"  # the pytest-benchmark report of `tox -e bench`
    if suites.is_file():
        write_atomic(target / "benchmarks" / "suites.json", suites.read_text(encoding="utf-8"))
    print(f"depthbench: published {len(copies)} records into {target} ({same} already there"
          f"{', and benchmarks/suites.json' if suites.is_file() else ''}); now run `depthbench leaderboard` to "
          "regenerate leaderboards/, README.md and CITATION.cff, and commit them", file=sys.stderr)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.reporting.leaderboard import write_leaderboards  # pandas/matplotlib only when needed

    if not Path(args.results).is_dir():
        raise FileNotFoundError(f"no results store at {args.results}: run `depthbench run` first")
    written = write_leaderboards(args.results, out_dir=args.out, readme=args.readme, citation=args.citation)
    print(f"depthbench: wrote {len(written)} leaderboard files under {args.out}", file=sys.stderr)
    return 0


def _convergence(args: argparse.Namespace) -> int:
    from benchmarks.evaluation.convergence import per_seed_summary
    from benchmarks.evaluation.convergence import run as run_convergence
    from benchmarks.reporting.convergence import render, verdict
    from benchmarks.store.provenance import now, run_provenance
    from benchmarks.store.studies import write_study

    started = now()
    # the command as a user retypes it (sys.argv under `python -m` names this checkout's cli.py)
    command = ["depthbench", "convergence", "--seeds", str(args.seeds), "--iterations", str(args.iterations),
               "--n-train", str(args.n_train), *(["--limit", str(args.limit)] if args.limit else [])]
    result = run_convergence(seeds=args.seeds, n_train=args.n_train, iterations=args.iterations, limit=args.limit)
    rows = [{"train_scheme": c["train_scheme"], "eval_scheme": c["eval_scheme"],
             "verdict": verdict(c, result["scheme_orders"][c["eval_scheme"]])} for c in result["curves"]]
    path = write_study(args.results, study="convergence", task=result["task"],
                       tier="cpu-study", seeds=list(range(args.seeds)), per_seed=per_seed_summary(result), rows=rows,
                       provenance=run_provenance(torch.device("cpu"), started, command),
                       figure=str(Path(args.out) / f"{result['task']}.png"), details=result)
    written = render(path, args.out)
    print(f"depthbench: wrote {path} and {len(written)} files under {args.out}", file=sys.stderr)
    return 0


def _study(args: argparse.Namespace) -> int:
    import importlib

    from benchmarks.reporting.studies import FIGURES, render

    torch.set_num_threads(1)  # small models; one thread keeps timings comparable on a shared CPU
    module = importlib.import_module(f"benchmarks.studies.{args.name.replace('-', '_')}")
    figure = f"{(args.out / args.name / args.task).as_posix()}.png" if args.name in FIGURES else None
    extra = {"checkpoints": args.checkpoints} if args.checkpoints is not None else {}
    path = module.run(args.task, args.seeds, args.results, limit=args.limit, figure=figure, **extra)
    written = render(path, args.out / args.name)
    print(f"depthbench: wrote {path} and {len(written)} files under {args.out / args.name}", file=sys.stderr)
    return 0


def _claims(args: argparse.Namespace) -> int:
    from benchmarks.reporting import claims_board, depth_transfer
    from benchmarks.store.provenance import now, run_provenance

    command = ["depthbench", "claims", *(["--results", str(args.results)] if args.results != Path("results") else [])]
    provenance = run_provenance(torch.device("cpu"), now(), command)
    written = depth_transfer.write(args.results, args.results, args.out / depth_transfer.STUDY, provenance)
    results = claims_board.evaluate(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "claims.md", claims_board.markdown(results, args.out))
    write_atomic(args.out / "claims.csv", claims_board.csv_text(results))
    verdicts = ", ".join(f"({c.key}) {o.verdict}" for c, o in results)
    print(f"depthbench: wrote {args.out / 'claims.md'}, claims.csv and {len(written)} depth-transfer files: "
          f"{verdicts}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from benchmarks.evaluation.check import check_model

    report = check_model(args.model, args.task, get_protocol(args.tier).model_overrides)
    print(report.text())
    return 0 if report.ok else 1


def _evaluate(args: argparse.Namespace) -> int:
    from benchmarks.data.tasks import get_task
    from benchmarks.execution.evaluate import evaluate_checkpoint
    from benchmarks.protocols import recipe_for
    from benchmarks.store.records import save_record

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
        print(f"tier {protocol.name} v{protocol.version} ({_hashes(protocol)}): {protocol.description}")
    return 0


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    print(f"depthbench: warning: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # a damaged record is named in one line, not with a source location
        try:
            if args.command == "run":
                return _run(args)
            if args.command == "publish":
                return _publish(args)
            if args.command == "check":
                return _check(args)
            if args.command == "evaluate":
                return _evaluate(args)
            if args.command == "leaderboard":
                return _leaderboard(args)
            if args.command == "convergence":
                return _convergence(args)
            if args.command == "study":
                return _study(args)
            if args.command == "status":
                from benchmarks.execution.status import show_status

                return show_status(get_protocol(args.tier), args.results, models=args.models, tasks=args.tasks,
                                   seeds=args.seeds)
            if args.command == "claims":
                return _claims(args)
            return _list()
        except (ValueError, KeyError, DataMissingError, DataCorruptError, OSError, RuntimeError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"depthbench: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("depthbench: interrupted; finished runs are saved and the run in progress checkpointed its last "
                  "epoch: rerun the same command to resume",
                  file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

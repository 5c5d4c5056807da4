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
    depthbench device prepare | run | import | cost  # a GPU session in one prepared call (docs/running.md)

Exit status: 0 when every requested run succeeded or was already recorded (or, with --no-wait, was submitted), 1 when
a run failed (listed with its reason), 2 for a usage or configuration error (nothing was run), 3 when runs were left
undone (--max-minutes, Slurm jobs cancelled, runs another process is doing, a full disk: rerun the same command to
resume them). `publish` exits 1 when it refuses (damaged or differing records) and `check` when a model fails.

Without OMP_NUM_THREADS, each run uses one CPU thread (see `default_threads`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.cli import arguments
from benchmarks.data.tasks import DataCorruptError, DataMissingError, list_tasks
from benchmarks.execution import cluster, device_cli
from benchmarks.execution.preflight import check_cache_writable, check_writable, pick_device, refuse_meta
from benchmarks.execution.runner import run_tier
from benchmarks.execution.runs import RunSummary
from benchmarks.io import DiskFullError, write_atomic
from benchmarks.protocols import PROTOCOLS, current_hashes, get_protocol
from benchmarks.reporting.console import comparison, results_table, summary_text, table_heading
from benchmarks.store.locations import (
    DEFAULT_RESULTS,
    existing_store_problem,
    in_checkout,
    leaderboards_for,
    local_results,
    store_problem,
)
from benchmarks.store.records import RecordError, iter_records, load_record
from benchmarks.studies.registry import all_studies, get_study

EXIT_FAILED, EXIT_USAGE, EXIT_POSTPONED = 1, 2, 3


def _run(args: argparse.Namespace) -> int:
    _locate_run_stores(args)
    tier = args.tier if args.tier != "auto" else ("standard" if torch.cuda.is_available() else "smoke")
    try:
        protocol, summary = _run_tier(args, tier)
    except DataMissingError as error:
        if args.tier != "auto" or tier == "smoke" or args.tasks:
            raise
        # `tox -e bench` must work on a fresh machine with no download: fall back to the bundled-data tier. The data
        # of every task is checked before the first run, so nothing of the standard tier has run at this point.
        print(f"depthbench: the standard tier's data is missing ({error})\n"
              "depthbench: running the smoke tier instead; see docs/running.md (Data) for how to get the data",
              file=sys.stderr)
        protocol, summary = _run_tier(args, "smoke")
    print(summary_text(summary, protocol.name, args.results, args.max_minutes), file=sys.stderr)
    hashes = set(protocol.hashes().values())
    table = results_table([r for _, r in iter_records(args.results) if r.protocol["hash"] in hashes])
    if table:
        print(f"\n{table_heading(protocol.name, protocol.version, args.results)}\n{table}")
    if summary.submitted:  # --no-wait: the jobs write their records later; nothing to tabulate yet
        return 0
    if not args.no_leaderboard:
        _render_local(args.results, args.out)
    print("\n" + comparison(args.results, args.published, protocol.name, protocol.hashes(), checkout=in_checkout()))
    if summary.failed:
        print(f"depthbench: {len(summary.failed)} of the requested runs FAILED (their records say why; "
              "`--retry-failed` runs them again):", file=sys.stderr)
        for label, reason in summary.failures.items():
            print(f"  {label}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    if summary.postponed or summary.unfinished or summary.busy:
        return EXIT_POSTPONED
    return 0


def _locate_run_stores(args: argparse.Namespace) -> None:
    """Fill in the default store and leaderboard folder, and refuse, before any training, a --results that is not a
    store and an --out that cannot be written."""
    if args.results is None:
        args.results = local_results()
        if not in_checkout():
            print(f"depthbench: not at the top of a depthbench checkout: your records go to {args.results} "
                  "(--results DIR for another store)", file=sys.stderr)
    problem = store_problem(args.results)
    if problem:
        raise ValueError(f"{problem}; give --results an empty or new directory, or an existing store")
    check_writable(args.results, leave_no_trace=True)  # the store first: its message is the one to see when both fail
    if args.out is None:
        args.out = leaderboards_for(args.results)
    if not args.no_leaderboard:
        if Path(args.out).resolve() == Path(args.results).resolve():
            raise ValueError("--out and --results are the same directory: leaderboards go beside a store, not into it")
        check_writable(args.out, what="leaderboards", fix="choose another folder with --out DIR, or pass "
                       "--no-leaderboard", leave_no_trace=True)


def _run_tier(args: argparse.Namespace, tier: str) -> tuple[Any, RunSummary]:
    protocol = get_protocol(tier)
    slurm = cluster.settings_from_args(args)
    # Slurm jobs check their device where they run (a login node often has no GPU); a local run checks it here.
    if slurm is None:
        device = pick_device(args.device, protocol)
    else:
        device = torch.device(args.device or protocol.device)
        refuse_meta(device, str(device))
    print(f"depthbench: tier {protocol.name} v{protocol.version} ({_hashes(protocol, args.tasks)}) on {device}; "
          f"records go to {args.results}", file=sys.stderr, flush=True)
    return protocol, run_tier(protocol, models=args.models, tasks=args.tasks, seeds=args.seeds,
                              results_dir=args.results, data_dir=args.data_dir, download=args.download, device=device,
                              retry_failed=args.retry_failed, progress=not args.no_progress,
                              max_minutes=args.max_minutes, workers=args.workers,
                              keep_checkpoints=args.keep_checkpoints, slurm=slurm)


def _hashes(protocol: Any, tasks: Sequence[str] | None = None) -> str:
    """`task hash, ...` of a tier's tasks (those asked for, else all it has a recipe for)."""
    return ", ".join(f"{task} {h}" for task, h in protocol.hashes().items() if not tasks or task in tasks)


def _render_local(results: Path, out: Path) -> None:
    from benchmarks.reporting.leaderboard import write_leaderboards  # pandas/matplotlib only when needed

    # readme=None / citation=None: a local render must never rewrite the repository's README.md or CITATION.cff.
    write_leaderboards(results, out_dir=out, readme=None, citation=None)
    print(f"\nLeaderboards of {results}: {out / 'index.html'} (page), {out}/<tier>/<task>.md/.csv/.tex (tables), "
          f"{out / 'README.md'} (index)")


def _publish(args: argparse.Namespace) -> int:
    from benchmarks.store import publish as publishing

    source = args.source or local_results()
    target = args.target
    if target is None:
        if not in_checkout():
            raise ValueError("not at the top of a depthbench checkout: `depthbench publish` copies records into a "
                             "checkout's results/ (run it from there, or give --to DIR)")
        target = DEFAULT_RESULTS
    wanted = set(get_protocol(args.tier).hashes().values()) if args.tier else None
    try:
        planned = publishing.plan(source, target, protocol_hashes=wanted, replace=args.replace,
                                  current_hashes=current_hashes())
    except publishing.PublishError as error:
        print(f"depthbench: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    publishing.publish(planned)
    for note in planned.notes:
        print(f"depthbench: note: {note}", file=sys.stderr)
    records = len(planned.copies) - planned.suites
    print(f"depthbench: published {records} records into {target} ({planned.same} already there"
          f"{', and benchmarks/suites.json' if planned.suites else ''}); now run `depthbench leaderboard` to "
          "regenerate leaderboards/, README.md and CITATION.cff, and commit them", file=sys.stderr)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.reporting.leaderboard import write_leaderboards  # pandas/matplotlib only when needed

    problem = existing_store_problem(args.results)
    if problem:
        raise ValueError(problem)
    if Path(args.out).resolve() == Path("leaderboards").resolve():  # the committed tables: README and CITATION too
        args.readme = args.readme or Path("README.md")
        args.citation = args.citation or Path("CITATION.cff")
    elif args.readme is None and args.citation is None:  # a render elsewhere must not point README.md at it
        print(f"depthbench: note: README.md and CITATION.cff are left as they are (tables go to {args.out}, not "
              "leaderboards/; pass --readme/--citation to write them)", file=sys.stderr)
    if not _has_a_record(args.results):  # an empty or wrong store must not wipe the committed tables
        kept = ", ".join(str(p) for p in (f"{args.out}/", args.readme, args.citation) if p)
        raise ValueError(f"no readable record under {args.results}: nothing rendered, and {kept} left as they "
                         "are (is --results the right store?)")
    written = write_leaderboards(args.results, out_dir=args.out, readme=args.readme, citation=args.citation)
    print(f"depthbench: wrote {len(written)} leaderboard files under {args.out}", file=sys.stderr)
    return 0


def _has_a_record(root: Path) -> bool:
    for path in Path(root).glob("*/*/*/seed*.json"):
        try:
            load_record(path, root)
        except RecordError:
            continue
        return True
    return False


def _study(args: argparse.Namespace) -> int:
    from benchmarks.reporting.studies import RENDERERS, render

    torch.set_num_threads(1)  # small models; one thread keeps timings comparable on a shared CPU
    spec = get_study(args.name)
    task = args.task or spec.task
    seeds = args.seeds if args.seeds is not None else list(spec.seeds)
    figure = f"{(args.out / args.name / task).as_posix()}.png" if spec.figure or args.name in RENDERERS else None
    extra = {"checkpoints": args.checkpoints} if args.checkpoints is not None else {}
    if extra and "checkpoints" not in spec.options:
        raise ValueError(f"--checkpoints applies to the studies that reuse a tier's weights "
                         f"({', '.join(n for n, s in all_studies().items() if 'checkpoints' in s.options)}), "
                         f"not to {args.name}")
    if args.workers is not None:
        if "workers" not in spec.options:
            raise ValueError(f"--workers applies to the studies that run seeds in processes "
                             f"({', '.join(n for n, s in all_studies().items() if 'workers' in s.options)}), "
                             f"not to {args.name}")
        extra["workers"] = args.workers
    path = spec.run(task, seeds, args.results, limit=args.limit, figure=figure, **extra)
    written = render(path, args.out / args.name)
    print(f"depthbench: wrote {path} and {len(written)} files under {args.out / args.name}", file=sys.stderr)
    return 0


def _claims(args: argparse.Namespace) -> int:
    from benchmarks.reporting import depth_transfer
    from benchmarks.reporting.paper_claims import board
    from benchmarks.store.provenance import now, run_provenance

    command = ["depthbench", "claims", *(["--results", str(args.results)] if args.results != Path("results") else [])]
    provenance = run_provenance(torch.device("cpu"), now(), command)
    written = depth_transfer.write(args.results, args.out / depth_transfer.FOLDER, provenance)
    outcomes = board.evaluate(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "claims.md", board.markdown(outcomes))
    write_atomic(args.out / "claims.csv", board.csv_text(outcomes))
    verdicts = ", ".join(f"{o.claim.key} {o.verdict}" for o in outcomes)
    print(f"depthbench: wrote {args.out / 'claims.md'}, claims.csv and {len(written)} depth-transfer files: "
          f"{verdicts}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from benchmarks.evaluation.check import check_model

    report = check_model(args.model, args.task, get_protocol(args.tier).model_overrides, time_limit=args.time_limit)
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
    problem = store_problem(args.results)
    if problem:
        raise ValueError(problem)
    check_writable(args.results, leave_no_trace=True)
    check_cache_writable()
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


def _status(args: argparse.Namespace) -> int:
    from benchmarks.execution.status import show_status

    results = args.results or local_results()
    problem = existing_store_problem(results)
    if problem:
        raise ValueError(problem)
    return show_status(get_protocol(args.tier), results, models=args.models, tasks=args.tasks, seeds=args.seeds,
                       cost=args.cost, workers=args.workers, cost_hash=args.hash)


# What Ctrl-C leaves behind, by command: each says what is saved and how to go on.
INTERRUPTED = {
    "run": "interrupted; finished runs are saved and the run in progress checkpointed its last epoch: rerun the same "
           "command to resume",
    "check": "check interrupted; nothing was written (a check only builds and runs the model in memory)",
    "evaluate": "evaluation interrupted; nothing was recorded",
    "leaderboard": "interrupted; every file written so far is whole (written atomically): rerun `depthbench "
                   "leaderboard` to finish",
    "status": "interrupted; status only reads the store",
    "list": "interrupted",
}
COMMANDS = {"run": _run, "publish": _publish, "check": _check, "evaluate": _evaluate, "leaderboard": _leaderboard,
            "study": _study, "claims": _claims, "status": _status, "device": device_cli.main,
            "list": lambda args: _list()}


def default_threads() -> None:
    """One intra-op thread per run unless OMP_NUM_THREADS says otherwise: what `tox` sets and the published timings
    were measured with. The zoo's models are small, so more threads mostly contend (issue #20: two smoke runs took
    58-61 s each with torch's default on a 2-core machine, 5 s with one thread); the variable is set too, for the
    worker processes."""
    if not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments.parser(__doc__).parse_args(argv)
    default_threads()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # a damaged record is named in one line, not with a source location
        try:
            return COMMANDS[args.command](args)
        except DiskFullError as error:  # an environment problem met part-way: what is done is saved
            print(f"depthbench: error: {error}", file=sys.stderr)
            return EXIT_POSTPONED if args.command == "run" else EXIT_USAGE
        except (ValueError, KeyError, DataMissingError, DataCorruptError, OSError, RuntimeError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"depthbench: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt as error:
            message = str(error) or INTERRUPTED.get(args.command, "interrupted; files written so far are whole "
                                                    "(written atomically): rerun the same command")
            print(f"depthbench: {message}", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

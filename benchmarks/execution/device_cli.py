"""`depthbench device prepare | run | import | cost`: a GPU session in one call (docs/running.md "A GPU session").

    depthbench device prepare --data-dir ../shared/data   # here: wheels + data into ignored folders; prints the call
    bash .device/run --max-minutes 9                      # there, the one call (it runs `depthbench device run`)
    depthbench device import local/device-out/depthbench-gpu-*.tar.gz   # here: records into local/results
    depthbench device cost                                # regenerate docs/gpu-cost-model.{json,md}
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.execution.device_prepare import DEFAULT_COMMAND
from benchmarks.execution.device_session import ESTIMATES
from benchmarks.protocols import PROTOCOLS

LOCAL_RESULTS, PUBLISHED = Path("local/results"), Path("results")


def add_parser(commands: Any, *, names: Callable, seeds: Callable, minutes: Callable, workers: Callable) -> None:
    """The `device` command and its four subcommands; the argument types are the main parser's."""
    device = commands.add_parser("device", help="a GPU session in one prepared call: prepare (here), run (there), "
                                 "import (here), cost (the estimate that sizes it)")
    sub = device.add_subparsers(dest="device_command", required=True)

    prepare = sub.add_parser("prepare", help="stage wheels and data in ignored folders of this checkout; print the "
                             "carry list and the command for the device call")
    prepare.add_argument("--data-dir", action="append", type=Path, default=[],
                         help="folder with fashion-mnist/ IDX files and/or cifar10-jpeg.tar.xz (repeatable; also "
                              "searched: $DEPTHBENCH_DATA or ~/.cache/depthbench/data, /usr/share/datasets)")
    prepare.add_argument("--tier", default="standard", choices=list(PROTOCOLS))
    prepare.add_argument("--results", action="append", type=Path, default=None,
                         help=f"stores whose records of the tier the session skips (default: {LOCAL_RESULTS} "
                              f"and {PUBLISHED})")
    prepare.add_argument("--wheels-from", type=Path, help="take the wheels from this folder instead of downloading")
    prepare.add_argument("--no-download", action="store_true", help="fail rather than download a missing wheel")
    prepare.add_argument("--allow-dirty", action="store_true",
                         help="prepare from a checkout with uncommitted changes to zoo/ or benchmarks/ (a trial)")
    prepare.add_argument("--max-minutes", type=minutes, default=9.0, help="the session's budget (default 9)")
    # 8 concurrent runs: by docs/gpu-cost-model.md the one setting in which seed 0 of every model on fashion-mnist
    # fits a 9-minute call (7.6 min by the estimate; 29.4 with one run at a time), on the device's 16 cores
    prepare.add_argument("--workers", type=workers, default=8,
                         help="concurrent runs on the GPU in the printed command (default 8)")
    prepare.add_argument("--json", action="store_true", help="print the carry list and command as JSON")

    run = sub.add_parser("run", help="(on the device machine, through .device/run) the tier in priority order "
                         "within --max-minutes; one archive of records, logs and timings under --out")
    run.add_argument("--tier", default="standard", choices=list(PROTOCOLS))
    run.add_argument("--max-minutes", type=minutes, default=9.0, help="whole call, packing included (default 9)")
    run.add_argument("--out", type=Path, default=Path("local/device-out"), help="where the archive goes ($OUT)")
    run.add_argument("--work", type=Path, help="scratch folder (default: a new one under /tmp)")
    run.add_argument("--stage", type=Path, default=Path(".data/gpu"), help="the staged data (default .data/gpu)")
    run.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a trial)")
    run.add_argument("--workers", type=workers, default=1, help="concurrent runs sharing the GPU (default 1)")
    run.add_argument("--parallel-efficiency", type=float, default=0.6,
                     help="assumed speed-up per worker before any run is measured (default 0.6)")
    run.add_argument("--models", type=names)
    run.add_argument("--tasks", type=names)
    run.add_argument("--seeds", type=seeds)
    run.add_argument("--estimates", type=Path, default=ESTIMATES, help=f"cost table (default {ESTIMATES})")
    run.add_argument("--started", type=float, help="epoch seconds when the call began (set by .device/run)")

    imp = sub.add_parser("import", help="a session's archive(s) into the local store, each record validated")
    imp.add_argument("archives", nargs="+", help="archives (globs are expanded)")
    imp.add_argument("--results", type=Path, default=LOCAL_RESULTS, help=f"store (default {LOCAL_RESULTS})")
    imp.add_argument("--replace", action="store_true", help="overwrite conflicting records")

    cost = sub.add_parser("cost", help="estimate the tier's GPU time per run from work counted on CPU; writes "
                          "docs/gpu-cost-model.json and .md")
    cost.add_argument("--tier", default="standard", choices=list(PROTOCOLS))
    cost.add_argument("--measured", nargs="*", default=[], help="session.json files of GPU sessions (globs)")
    cost.add_argument("--out", type=Path, default=ESTIMATES.with_suffix(""), help="path without suffix")


def main(args: argparse.Namespace) -> int:
    if args.device_command == "prepare":
        return _prepare(args)
    if args.device_command == "run":
        from benchmarks.execution.device_session import SessionSettings, run_session

        return run_session(SessionSettings(
            tier=args.tier, max_minutes=args.max_minutes, out=args.out, work=args.work, stage=args.stage,
            device=args.device, workers=args.workers, parallel_efficiency=args.parallel_efficiency,
            models=args.models, tasks=args.tasks, seeds=args.seeds, estimates=args.estimates, started=args.started))
    if args.device_command == "import":
        from benchmarks.execution.device_import import Imported, import_archive

        report = Imported()
        archives = [p for pattern in args.archives for p in (sorted(glob.glob(pattern)) or [pattern])]
        for archive in archives:
            import_archive(Path(archive), args.results, replace=args.replace, into=report)
        print(report.text(), file=sys.stderr)
        if report.new:
            print(f"depthbench: next: depthbench publish --from {args.results} && depthbench leaderboard",
                  file=sys.stderr)
        return 1 if report.invalid or report.conflict else 0
    from benchmarks.execution.cost_report import write
    from benchmarks.protocols import get_protocol

    files = [p for pattern in args.measured for p in sorted(glob.glob(pattern))]
    measured = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    written = write(get_protocol(args.tier), args.out, measured)
    print(f"depthbench: wrote {' and '.join(map(str, written))} ({len(measured)} measured sessions)",
          file=sys.stderr)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from benchmarks.data.tasks import data_root
    from benchmarks.execution.device_prepare import as_json, prepare
    from benchmarks.store.provenance import source_tree

    root = source_tree() or Path.cwd()
    command = DEFAULT_COMMAND.replace("--max-minutes 9", f"--max-minutes {args.max_minutes:g}")
    if args.tier != "standard":
        command += f" --tier {args.tier}"
    if args.workers > 1:
        command += f" --workers {args.workers}"
    stores = args.results if args.results is not None else [root / LOCAL_RESULTS, root / PUBLISHED]
    prepared = prepare(root, [*args.data_dir, data_root()], tier=args.tier, stores=stores,
                       wheels_from=args.wheels_from, download=not args.no_download, allow_dirty=args.allow_dirty,
                       command=command)
    print(json.dumps(as_json(prepared), indent=2) if args.json else prepared.text())
    return 0

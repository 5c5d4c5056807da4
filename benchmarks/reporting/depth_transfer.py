"""The convergence test on image tasks, from tier records: test error vs Δt per model and a computed verdict.

Every record of a classification task carries `depth_transfer` entries: the trained parameters evaluated with other
schemes and step counts. Per task (the most citable tier present: paper, then standard, then smoke; its newest
protocol version) and model this module plots test error (1 − accuracy) against Δt, log-log, one curve per
evaluation scheme, the training Δt marked, and decides per seed:

- refine drop: the largest accuracy loss (points) when the trained scheme is run with more steps than trained;
- scheme drop: the largest loss when another scheme is run at its finest evaluated Δt (≤ the trained one);
- dip: every refined setting of the trained scheme loses more than the tolerance (the error is lowest at the
  training discretisation and rises when refined: the model learned its discrete map, not an ODE);
- transfers: refine drop and scheme drop both within the tolerance.

A model's verdict is the majority over its seeds (shown, not a claim's verdict: the paper claims read the records
through benchmarks/reporting/paper_claims/). Adaptive models have no training Δt: only the scheme drop applies.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from benchmarks.io import write_atomic
from benchmarks.protocols import tier_rank
from benchmarks.reporting.plots import RC, _save
from benchmarks.reporting.render import pipeline_check_banner
from benchmarks.store.records import iter_records

TOLERANCE_POINTS = 1.0  # accuracy points: a model transfers if no re-discretisation costs more than this
FOLDER = "depth-transfer"  # leaderboards/depth-transfer/<task>.*
LINESTYLES = {"euler": ":", "midpoint": "--", "rk4": "-", "rk4_38": "-."}


def collect(records_root: Path) -> dict[str, dict[str, Any]]:
    """Per classification task: the chosen tier's successful records with depth-transfer entries, by model."""
    by_protocol: dict[str, dict[tuple[str, int, str], list[Any]]] = defaultdict(lambda: defaultdict(list))
    for _, rec in iter_records(records_root):
        if rec.status != "ok" or not any("accuracy" in e for e in rec.depth_transfer):
            continue
        proto = rec.protocol
        by_protocol[rec.task][(str(proto.get("name")), int(proto.get("version") or 0), str(proto["hash"]))].append(rec)
    out = {}
    for task, protocols in sorted(by_protocol.items()):
        name, version, hash_ = min(protocols, key=lambda k: (tier_rank(k[0]), -k[1]))
        models: dict[str, list[Any]] = defaultdict(list)
        for rec in sorted(protocols[(name, version, hash_)], key=lambda r: (r.model, r.seed)):
            models[rec.model].append(rec)
        out[task] = {"task": task, "tier": name, "protocol_hash": hash_, "models": dict(models),
                     "skipped_tiers": sorted(f"{n} v{v} ({h})" for n, v, h in protocols if h != hash_)}
    return out


def _usable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if "failed" not in e and e.get("accuracy") is not None]


def seed_verdict(entries: list[dict[str, Any]], tolerance: float = TOLERANCE_POINTS) -> dict[str, Any]:
    """One seed's numbers (accuracy drops in points, positive = worse than trained) and flags."""
    ok = _usable(entries)
    trained = next((e for e in ok if e.get("trained")), None)
    if trained is None:
        raise ValueError("a depth-transfer grid without its trained setting: the record is incomplete")
    base = trained["accuracy"]
    fixed = trained.get("dt") is not None and trained.get("n_steps") is not None
    refined = [e for e in ok if fixed and e["scheme"] == trained["scheme"] and e.get("n_steps")
               and e["n_steps"] > trained["n_steps"]]
    finest: dict[str, dict[str, Any]] = {}
    for e in ok:
        if e["scheme"] == trained["scheme"] or e.get("dt") is None:
            continue
        if fixed and e["dt"] > trained["dt"] * (1 + 1e-9):
            continue  # coarser than trained: a loss there is expected of any scheme
        if e["scheme"] not in finest or e["dt"] < finest[e["scheme"]]["dt"]:
            finest[e["scheme"]] = e
    refine_drop = max((100 * (base - e["accuracy"]) for e in refined), default=None)
    scheme_drop = max((100 * (base - e["accuracy"]) for e in finest.values()), default=None)
    tolerance += 1e-9  # accuracies are fractions of a test set: 0.46 - 0.45 is 1 point, not 1.0000000000000009
    dip = None if not refined else all(100 * (base - e["accuracy"]) > tolerance for e in refined)
    transfers = ((refine_drop is None or refine_drop <= tolerance) and scheme_drop is not None
                 and scheme_drop <= tolerance)
    return {"trained_accuracy": base, "refine_drop": refine_drop, "scheme_drop": scheme_drop, "dip": dip,
            "transfers": transfers, "fixed": fixed,
            "trained": {k: trained.get(k) for k in ("scheme", "n_steps", "dt")}}


def model_verdict(seeds: list[dict[str, Any]]) -> str:
    """The majority over seeds: 'transfers', 'dips', or 'does not transfer' (loses accuracy, but not as a dip)."""
    n = len(seeds)
    if sum(s["transfers"] for s in seeds) * 2 > n:
        return "transfers"
    if sum(bool(s["dip"]) for s in seeds) * 2 > n:
        return "dips"
    return "does not transfer"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curves(records: list[Any]) -> dict[str, dict[str, list[float]]]:
    """Per evaluation scheme: Δt, and the mean and std over seeds of the test error (1 − accuracy), n per point."""
    points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        for e in _usable(rec.depth_transfer):
            if e.get("dt") is not None:
                points[e["scheme"]][float(e["dt"])].append(1.0 - e["accuracy"])
    out = {}
    for scheme, by_dt in sorted(points.items()):
        dts = sorted(by_dt)
        stats = [_mean_std(by_dt[d]) for d in dts]
        out[scheme] = {"dt": dts, "error_mean": [m for m, _ in stats], "error_std": [s for _, s in stats],
                       "n": [len(by_dt[d]) for d in dts]}
    return out


def analyse(chosen: dict[str, Any], tolerance: float = TOLERANCE_POINTS) -> dict[str, Any]:
    """Verdicts, curves and rows of one task (the output of `collect` for it)."""
    models = {}
    for model, records in chosen["models"].items():
        seeds = [seed_verdict(r.depth_transfer, tolerance) for r in records]
        models[model] = {"seeds": [r.seed for r in records], "per_seed": seeds, "verdict": model_verdict(seeds),
                         "curves": curves(records), "trained": seeds[0]["trained"],
                         "records": [f"{chosen['task']}/{chosen['protocol_hash']}/{model}/seed{r.seed}.json"
                                     for r in records]}
    return {**{k: chosen[k] for k in ("task", "tier", "protocol_hash", "skipped_tiers")}, "tolerance_points": tolerance,
            "models": models}


def _cell(values: list[float | None], digits: int = 1) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    mean, std = _mean_std(known)
    return f"{mean:+.{digits}f}" + (f" ± {std:.{digits}f}" if len(known) > 1 else "")  # one seed has no spread


def rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for model, m in analysis["models"].items():
        seeds = m["per_seed"]
        acc = _mean_std([100 * s["trained_accuracy"] for s in seeds])
        trained = m["trained"]
        out.append({
            "model": model, "n": len(seeds), "tier": analysis["tier"],
            "trained": f"{trained['scheme']}" + (f", {trained['n_steps']} steps, Δt {trained['dt']:g}"
                                                 if trained["dt"] is not None else " (adaptive)"),
            "trained_accuracy_mean": acc[0], "trained_accuracy_std": acc[1],
            "refine_drop": _cell([s["refine_drop"] for s in seeds]),
            "scheme_drop": _cell([s["scheme_drop"] for s in seeds]),
            "dip_seeds": f"{sum(bool(s['dip']) for s in seeds)}/{len(seeds)}" if seeds[0]["fixed"] else "n/a",
            "verdict": f"{m['verdict']} (n={len(seeds)}, {analysis['tier']}"
                       + (": pipeline check)" if pipeline_check_banner(analysis["tier"]) else ")"),
        })
    return out


def table(analysis: dict[str, Any], provenance: dict[str, Any]) -> str:
    banner = pipeline_check_banner(analysis["tier"])
    task = analysis["task"]
    lines = [f"# Depth transfer on {task}: test error vs Δt (Queiruga et al. 2020, arXiv 2008.02389)", "",
             "<!-- generated by `depthbench claims` (benchmarks/reporting/depth_transfer.py) from records; "
             "edits are overwritten -->", ""]
    if banner:
        lines += [f"> **⚠ {banner}**", ""]
    lines += [
        f"Tier `{analysis['tier']}` (protocol hash {analysis['protocol_hash']}); records under "
        f"results/{task}/{analysis['protocol_hash']}/; produced by `{provenance.get('command', '?')}` at commit "
        f"{str(provenance.get('git_commit', '?'))[:12]}.",
        "",
        f"Drops are accuracy losses in points against the trained setting, mean ± std over the n seeds (positive = "
        f"worse). Refine drop: the trained scheme with more steps; scheme drop: every other scheme at its finest "
        f"evaluated Δt (≤ the trained Δt). Transfers: both ≤ {analysis['tolerance_points']:g} point; dips: every "
        "refined setting loses more than that. Verdict: the majority over seeds.",
        "",
        "| model | n | trained | acc. at trained setting (%) | refine drop (pt) | scheme drop (pt) | dip (seeds) "
        "| verdict |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for r in rows(analysis):
        spread = f" ± {r['trained_accuracy_std']:.2f}" if r["n"] > 1 else ""
        lines.append(f"| {r['model']} | {r['n']} | {r['trained']} | {r['trained_accuracy_mean']:.2f}{spread} | "
                     f"{r['refine_drop']} | {r['scheme_drop']} | {r['dip_seeds']} | {r['verdict']} |")
    if analysis["skipped_tiers"]:
        lines += ["", f"Other protocols with records for this task (not used): {', '.join(analysis['skipped_tiers'])}."]
    lines += ["", f"![test error vs Δt]({task}.png)"]
    return "\n".join(lines) + "\n"


def csv_text(analysis: dict[str, Any]) -> str:
    out = io.StringIO()
    table_rows = rows(analysis)
    writer = csv.DictWriter(out, ["task", "protocol_hash", *table_rows[0]], lineterminator="\n")
    writer.writeheader()
    for r in table_rows:
        writer.writerow({"task": analysis["task"], "protocol_hash": analysis["protocol_hash"], **r})
    return out.getvalue()


def figure(analysis: dict[str, Any]) -> Figure:
    models = list(analysis["models"])
    cols = min(4, len(models))
    nrows = -(-len(models) // cols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(3.0 * cols, 2.6 * nrows + 0.4))
        cmap = matplotlib.colormaps["tab10"]
        for i, model in enumerate(models):
            m = analysis["models"][model]
            ax = fig.add_subplot(nrows, cols, i + 1)
            for j, (scheme, c) in enumerate(m["curves"].items()):
                lo = [max(a - s, a * 0.1, 1e-4) for a, s in zip(c["error_mean"], c["error_std"])]
                means = [max(a, 1e-4) for a in c["error_mean"]]  # an error of 0 has no place on a log axis
                ax.plot(c["dt"], means, LINESTYLES.get(scheme, "-"), marker="osDv^"[j % 5], markersize=3,
                        color=cmap(j % 10), label=scheme)
                ax.fill_between(c["dt"], lo, [a + s for a, s in zip(means, c["error_std"])], color=cmap(j % 10),
                                alpha=0.1, linewidth=0)
            if m["trained"]["dt"] is not None:
                ax.axvline(m["trained"]["dt"], color="grey", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
            ax.set_title(f"{model} (n={len(m['seeds'])}): {m['verdict']}", fontsize=7)
            ax.set_xlabel("evaluation Δt (grey: trained)", fontsize=7)
            ax.set_ylabel("test error", fontsize=7)
            ax.legend(fontsize=5)
        banner = " — PIPELINE CHECK, NOT FOR CITING" if pipeline_check_banner(analysis["tier"]) else ""
        fig.suptitle(f"{analysis['task']}, tier {analysis['tier']}: test error vs Δt{banner}", fontsize=9)
        fig.tight_layout()
    return fig


def write(records_root: Path, out_dir: Path, provenance: dict[str, Any],
          tolerance: float = TOLERANCE_POINTS) -> list[Path]:
    """Every classification task's leaderboards/depth-transfer/<task>.{md,csv,png,svg}, from the records alone (a
    rendering of the tier's records, not a study: the claims read the records themselves)."""
    written = []
    out_dir = Path(out_dir)
    for task, chosen in collect(records_root).items():
        analysis = analyse(chosen, tolerance)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / f"{task}.md", table(analysis, provenance))
        write_atomic(out_dir / f"{task}.csv", csv_text(analysis))
        written += [out_dir / f"{task}.md", out_dir / f"{task}.csv", *_save(figure(analysis), out_dir / task)]
    return written

"""Renders the convergence test (benchmarks/evaluation/convergence.py) from its JSON alone: no torch here.

Writes a log-log figure of error vs Δt (one curve per (training scheme, evaluation scheme), mean over seeds with a
± std band, the training Δt marked) and a Markdown table of observed orders, dips and a verdict per curve.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from benchmarks.io import write_atomic
from benchmarks.reporting.plots import RC, _save

LINESTYLES = {"euler": ":", "midpoint": "--", "rk4": "-"}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(curve: dict[str, Any], scheme_order: int) -> str:
    """Computed from the numbers: a dip in most seeds, else convergence at >= half the scheme's order, else a plateau
    (the model's own error, not the discretisation, dominates the refined half)."""
    order = statistics.fmean(curve["order"])
    if sum(curve["dip"]) * 2 > len(curve["dip"]):
        return "dip: tied to its training Δt"
    if order >= 0.5 * scheme_order:
        return f"converges (order ≥ {scheme_order}/2)"
    return "plateau: model error dominates"


def table(result: dict[str, Any]) -> str:
    prov = result.get("provenance", {})
    lines = [
        f"# Convergence test on {result['task']} ({result['reference']})",
        "",
        f"Produced by `{prov.get('command', '?')}` at commit {str(prov.get('git_commit', '?'))[:12]}"
        f"{' (dirty)' if prov.get('git_dirty') else ''} on {prov.get('device', '?')}, {prov.get('finished', '?')}.",
        f"Error: {result['error']}. Training Δt = {result['train_dt']:g} ({result['n_train']} steps over "
        f"{result['train_dt'] * result['n_train']:g}); {result['seeds']} seeds; observed order = slope of log RMSE vs "
        f"log Δt over Δt ≤ training Δt; dip = RMSE at Δt/2 and Δt/4 both ≥ {result['dip_margin']:g} x RMSE at the "
        "training Δt.",
        "",
        "| train scheme | eval scheme | RMSE at training Δt | finest-Δt RMSE | observed order (mean ± std) "
        "| dip (seeds) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    at = result["dts"].index(result["train_dt"]) if result["train_dt"] in result["dts"] else None
    finest = result["dts"].index(min(result["dts"]))
    for curve in result["curves"]:
        mean, std = _mean_std(curve["order"])
        train_err = (f"{statistics.fmean(r[at] for r in curve['rmse']):.3g}" if at is not None else "n/a")
        fine_err = statistics.fmean(r[finest] for r in curve["rmse"])
        dips = sum(curve["dip"])
        lines.append(f"| {curve['train_scheme']} | {curve['eval_scheme']} | {train_err} | {fine_err:.3g} | "
                     f"{mean:.2f} ± {std:.2f} | {'yes' if dips * 2 > len(curve['dip']) else 'no'} "
                     f"({dips}/{len(curve['dip'])}) | "
                     f"{verdict(curve, result['scheme_orders'][curve['eval_scheme']])} |")
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any]) -> Figure:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(6.4, 4.8))
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["tab10"]
        dts = result["dts"]
        for curve in result["curves"]:
            rank = ("euler", "midpoint", "rk4").index(curve["train_scheme"])
            colour = cmap(rank % 10)
            columns = list(zip(*curve["rmse"]))
            means = [statistics.fmean(c) for c in columns]
            stds = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
            ax.plot(dts, means, LINESTYLES.get(curve["eval_scheme"], "-"), color=colour, marker="osx"[rank],
                    markersize=6 - 1.5 * rank,
                    label=f"train {curve['train_scheme']}, eval {curve['eval_scheme']}")
            ax.fill_between(dts, [max(m - s, m * 1e-3) for m, s in zip(means, stds)],
                            [m + s for m, s in zip(means, stds)], color=colour, alpha=0.1, linewidth=0)
        ax.axvline(result["train_dt"], color="grey", linewidth=0.8)
        ax.annotate("training Δt", (result["train_dt"], 0), xycoords=("data", "axes fraction"),
                    xytext=(3, 4), textcoords="offset points", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("evaluation Δt")
        ax.set_ylabel("test RMSE vs exact flow")
        ax.set_title(f"Convergence test, {result['task']} (mean ± std over {result['seeds']} seeds)")
        # curves of models trained with midpoint and RK4 coincide: distinct markers, legend outside the axes
        ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=6)
        fig.tight_layout()
    return fig


def render(json_path: Path | str, out_dir: Path | str) -> list[Path]:
    """Read the result JSON and write <task>.md, <task>.png, <task>.svg under out_dir."""
    path = Path(json_path)
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the convergence result {path}: {error}; "
                         "run `depthbench convergence` first") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{result['task']}.md"
    write_atomic(md, table(result))
    return [md, *_save(figure(result), out / result["task"])]

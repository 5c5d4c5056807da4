"""Leaderboard figures (PNG + SVG) per (task, protocol), drawn from records only.

- depth transfer: test error vs Δt, log-log, one line per solver scheme, star at the training Δt; the
  convergence test of Queiruga et al. (arXiv 2008.02389): a model that learned an ODE shows a straight
  line of slope ≈ the scheme's order, a model tied to its training discretisation does not;
- robust accuracy vs attack radius (FGSM dashed, PGD solid, one colour per model);
- accuracy vs latency and accuracy vs NFE, Pareto front marked, model names placed apart by adjustText.
- stiffness along depth: the rate Jacobian's largest singular value at every track point, depth rescaled to
  [0, 1] per stage (mean over the diagnosed samples and over seeds), stages side by side, one line per model.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, so no global pyplot state or backend
switch leaks into the caller. A plot whose data no record has is skipped (no empty figures).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from adjustText import adjust_text
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

from benchmarks.io import atomic_output
from benchmarks.reporting.tables import attack_key
from benchmarks.specs import MetricKey

# Fixed salt and no date: the SVG then has the same bytes for the same records (ids are hashes otherwise salted with
# a random uuid); no Software text in the PNG, so a matplotlib upgrade alone does not change every image.
RC = {"svg.hashsalt": "depthbench", "font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7}
METADATA = {"png": {"Software": None}, "svg": {"Date": None}}
MARKERS = "osD^vP*Xph"


def _colours(table: pd.DataFrame) -> dict[str, Any]:
    """One colour (and marker) per model, in leaderboard order, shared by all figures of a table."""
    cmap = matplotlib.colormaps["tab10"]
    return {m: (cmap(i % 10), MARKERS[(i // 10) % len(MARKERS)]) for i, m in enumerate(table.model)}


def _save(fig: Figure, base: Path) -> list[Path]:
    FigureCanvasAgg(fig)
    paths = []
    for ext in ("png", "svg"):
        path = Path(f"{base}.{ext}")
        with atomic_output(path) as tmp, matplotlib.rc_context(RC):  # readers see the old or the whole new image
            fig.savefig(tmp, format=ext, dpi=110, metadata=METADATA[ext])
        paths.append(path)
    return paths


def _dt_label(dt: float, _pos: object = None) -> str:
    steps = 1 / dt  # Δt = T / n is read more easily as "1/n" (horizon 1) than in scientific notation
    return f"1/{round(steps)}" if steps > 1.5 and abs(steps - round(steps)) < 1e-6 else f"{dt:.3g}"


def _readable_log_axis(axis: Any) -> None:
    """Plain numbers on a log axis, labelling a few minor ticks only when the range spans less than 2 decades."""
    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _transfer_points(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Depth-transfer entries of OK records as rows (model, seed, scheme, dt, rtol, y, trained) + y label."""
    rows = []
    for model, seed, entries in zip(frame.model, frame.seed, frame.depth_transfer):
        for e in entries:
            rows.append({"model": model, "seed": seed, "scheme": str(e.get("scheme")), "dt": e.get("dt"),
                         "rtol": e.get("rtol"), "trained": bool(e.get("trained")), "error": e.get("error"),
                         "accuracy": e.get("accuracy"), "mse": e.get("mse")})
    points = pd.DataFrame(rows, columns=["model", "seed", "scheme", "dt", "rtol", "trained", "error", "accuracy",
                                         "mse"])
    for name in ("dt", "rtol", "error", "accuracy", "mse"):
        points[name] = pd.to_numeric(points[name], errors="coerce")
    fixed = points[points.dt.notna()]
    # One y quantity per figure: the output distance to the finest manifestation when every fixed-step entry
    # has it (the convergence test proper), else the test error.
    if len(fixed) and fixed.error.notna().all():
        points["y"], label = points.error, "distance to finest solution"
    elif points.accuracy.notna().any():
        points["y"], label = 1.0 - points.accuracy, "test error (1 − accuracy)"
    else:
        points["y"], label = points.mse, "test MSE"
    return points[points.y.notna()], label


def depth_transfer_figure(frame: pd.DataFrame, table: pd.DataFrame) -> Figure | None:
    points, ylabel = _transfer_points(frame)
    models = [m for m in table.model if m in set(points.model)]
    if not models:
        return None
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    cmap = matplotlib.colormaps["tab10"]
    schemes = sorted(set(points.scheme))
    order = table.set_index("model").get("dt_order_mean")
    for ax, model in zip(axes.flat, models):
        mine = points[points.model == model]
        for i, scheme in enumerate(schemes):
            colour, rows = cmap(i % 10), mine[mine.scheme == scheme]
            fixed = rows[rows.dt.notna()].assign(dt=lambda r: r.dt.round(12))
            mean = fixed.groupby("dt").y.mean()  # mean over seeds
            mean = mean[mean > 0]  # log axes: the finest manifestation has distance 0 to itself
            if len(mean):
                ax.plot(mean.index, mean.values, "o-", color=colour, ms=3, label=scheme)
            trained = fixed[fixed.trained].dt.unique()
            for dt in trained:
                if dt in mean.index:
                    ax.plot([dt], [mean[dt]], "*", color=colour, ms=12, mec="black", mew=0.6)
            for rtol, group in rows[rows.dt.isna()].groupby("rtol", dropna=False):
                value = group.y.mean()
                if value > 0:  # adaptive solvers have no Δt: a horizontal reference line at their error
                    tag = " trained" if group.trained.any() else ""
                    ax.axhline(value, color=colour, ls=":", lw=1, label=f"{scheme} rtol={rtol:g}{tag}")
        title = model
        if order is not None and not pd.isna(order.get(model)):
            title += f" (fitted order {order[model]:.2f})"
        ax.set(xscale="log", yscale="log", title=title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(loc="best")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    dts = sorted(points.dt.dropna().round(12).unique())
    if 0 < len(dts) <= 8:  # the evaluated step sizes themselves as ticks (axes are shared: set once)
        axes[0, 0].xaxis.set_major_locator(FixedLocator(dts))
        axes[0, 0].xaxis.set_major_formatter(FuncFormatter(_dt_label))
        axes[0, 0].xaxis.set_minor_locator(NullLocator())
    else:
        _readable_log_axis(axes[0, 0].xaxis)
    fig.supxlabel("Δt (step size at evaluation)")
    fig.supylabel(ylabel)
    fig.suptitle(f"Depth transfer, {table.attrs['task']} / {table.attrs['protocol']}: ★ = training Δt")
    return fig


def attack_figure(table: pd.DataFrame) -> Figure | None:
    """Mean robust accuracy (%) vs radius, error bars = std over seeds: FGSM alone and the suite's worst case."""
    attacks = [m for m in table.attrs.get("metrics", [])
               if MetricKey.parse(m).name in ("fgsm", "robust") and attack_key(m)]
    if not attacks:
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    colours = _colours(table)
    for _, row in table.iterrows():
        colour, marker = colours[row["model"]]
        for kind, style in (("fgsm", "--"), ("robust", "-")):
            names = [m for m in attacks if MetricKey.parse(m).name == kind and not pd.isna(row[f"{m}_mean"])]
            if names:
                eps = [attack_key(m)[1] for m in names]
                ax.errorbar(eps, [100 * row[f"{m}_mean"] for m in names], capsize=2, color=colour, ls=style,
                            marker=marker, ms=4, yerr=[100 * (0 if pd.isna(row[f"{m}_std"]) else row[f"{m}_std"])
                                                        for m in names])
    handles = [Line2D([], [], color=colours[m][0], marker=colours[m][1],
                      label=m + (" (unreliable)" if "unreliable" in f else ""))
               for m, f in zip(table.model, table["flags"])]
    handles += [Line2D([], [], color="grey", ls="--", label="FGSM"),
                Line2D([], [], color="grey", label="worst case of the suite")]
    ax.legend(handles=handles, loc="best")
    ax.set(xlabel="attack radius ε", ylabel="robust accuracy (%)",
           title=f"Robust accuracy, {table.attrs['task']} / {table.attrs['protocol']}")
    ax.grid(True, alpha=0.3)
    return fig


def stiffness_figure(frame: pd.DataFrame, table: pd.DataFrame) -> Figure | None:
    """T * sigma_max(df/dx) vs depth position (stage + fraction of its interval), log y, one line per model: with
    every stage's depth rescaled to [0, 1], models that integrate over different intervals are comparable."""
    rows = [{"model": model, "x": e["stage"] + (e["t"] - e["t0"]) / (e["t1"] - e["t0"]),
             "sigma": (e["t1"] - e["t0"]) * e["sigma"]}
            for model, entries in zip(frame.model, frame.trajectory) for e in entries
            if e.get("sigma") is not None and e["sigma"] > 0 and e.get("t1", 0) > e.get("t0", 0)]
    if not rows:
        return None
    points = pd.DataFrame(rows).assign(x=lambda r: r.x.round(9))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    colours = _colours(table)
    for model in [m for m in table.model if m in set(points.model)]:
        mean = points[points.model == model].groupby("x").sigma.mean()  # mean over seeds
        colour, marker = colours[model]
        ax.plot(mean.index, mean.values, "-", marker=marker, color=colour, ms=4, label=model)
    stages = int(points.x.max()) + 1
    for boundary in range(1, stages):
        ax.axvline(boundary, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="depth (stage + position t/T within it)", ylabel="T·σ_max(∂f/∂x), mean over samples",
           title=f"Stiffness along depth, {table.attrs['task']} / {table.attrs['protocol']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    return fig


def pareto_front(xs: list[float], ys: list[float], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both cost (x, lower is better) and quality (y)."""
    sign = 1 if higher_is_better else -1
    best, front = -math.inf, []
    for i in sorted(range(len(xs)), key=lambda i: (xs[i], -sign * ys[i])):
        if sign * ys[i] > best:
            best = sign * ys[i]
            front.append(i)
    return front


def pareto_figure(table: pd.DataFrame, cost: str, cost_label: str) -> Figure | None:
    primary = table.attrs.get("primary")
    if not primary or cost not in table.attrs.get("metrics", []):
        return None
    data = table[table[f"{cost}_mean"].notna() & table[f"{primary}_mean"].notna()]
    if data.empty:
        return None
    accuracy = primary == "accuracy"
    xs = [float(v) for v in data[f"{cost}_mean"]]
    ys = [float(v) * (100 if accuracy else 1) for v in data[f"{primary}_mean"]]
    front = pareto_front(xs, ys, higher_is_better=accuracy)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    colours = _colours(table)
    for i, model in enumerate(data.model):
        colour, marker = colours[model]
        ax.plot([xs[i]], [ys[i]], marker, color=colour, ms=7, mfc=colour if i in front else "none")
    ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="black", lw=1, alpha=0.6)
    # The front is explained in the title rather than a legend: a legend would be one more box for labels to avoid.
    ax.set(xscale="log", xlabel=cost_label, ylabel="test accuracy (%)" if accuracy else "test MSE",
           title=f"{table.attrs['task']} / {table.attrs['protocol']}: line and filled markers = Pareto front")
    _readable_log_axis(ax.xaxis)
    ax.margins(0.12)  # room for the model-name labels
    if not accuracy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    _place_labels(fig, ax, list(data.model), xs, ys)
    return fig


def _place_labels(fig: Figure, ax: Any, labels: list[str], xs: list[float], ys: list[float]) -> None:
    """Model names next to their points, moved apart (adjustText) so that no two overlap; a moved name gets a
    thin line to its point. Labels stay out of the layout, so the axes do not move after they are placed."""
    texts = [ax.text(x, y, label, fontsize=7) for label, x, y in zip(labels, xs, ys)]
    for text in texts:
        text.set_in_layout(False)
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # runs the constrained layout: adjustText needs the final axes geometry
    # A fixed iteration budget instead of adjustText's default 1 s time limit: the same input gives the same image.
    # Stronger push from the points than the default, so a name never sits on a neighbour's marker.
    adjust_text(texts, x=xs, y=ys, ax=ax, iter_lim=500, expand=(1.2, 1.6), force_static=(0.3, 0.6),
                ensure_inside_axes=True, arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    for artist in ax.patches + ax.texts:
        artist.set_in_layout(False)


def write_plots(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path | str, stem: str) -> list[Path]:
    """All figures of one table as `<out_dir>/<stem>_<kind>.png|svg`; returns the paths written.

    `frame` is `load_frame`'s; only the OK records of this table's (task, protocol, hash) are used."""
    at = table.attrs
    mine = frame[(frame.task == at["task"]) & (frame.protocol == at["protocol"])
                 & (frame.protocol_hash == at["protocol_hash"]) & (frame.status == "ok")]
    paths = []
    with matplotlib.rc_context(RC):  # rc applies when artists are created, not only when saving
        figures = {
            "depth_transfer": depth_transfer_figure(mine, table),
            "attacks": attack_figure(table),
            "pareto_latency": pareto_figure(table, "latency_ms", "latency (ms, batch 1, median)"),
            "pareto_nfe": pareto_figure(table, "nfe", "NFE (function evaluations per forward)"),
            "stiffness": stiffness_figure(mine, table),
        }
        for kind, figure in figures.items():
            if figure is not None:
                paths += _save(figure, Path(out_dir) / f"{stem}_{kind}")
    return paths


def line_figure(study: dict[str, Any]) -> Figure | None:
    """The study's declared line plot (`details["figure_spec"]`, a registry `LineFigure`): y against x per series,
    the mean over the rows (seeds) that share an x, from the rows that match `where`."""
    spec = study["details"].get("figure_spec")
    if not spec:
        return None
    points = [r for r in study["rows"] if all(r.get(k) == v for k, v in spec.get("where", {}).items())
              and isinstance(r.get(spec["x"]), int | float) and isinstance(r.get(spec["y"]), int | float)]
    if not points:
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.2, 3.6))
        ax = fig.add_subplot()
        for series in sorted({str(r[spec["series"]]) for r in points}):
            mine = [r for r in points if str(r[spec["series"]]) == series]
            xs = sorted({r[spec["x"]] for r in mine})
            ys = [statistics.fmean(r[spec["y"]] for r in mine if r[spec["x"]] == x) for x in xs]
            ax.plot(xs, ys, marker="o", label=series)
        ax.set_xscale("log" if spec.get("logx") else "linear")
        ax.set_yscale("log" if spec.get("logy") else "linear")
        ax.set_xlabel(spec["xlabel"])
        ax.set_ylabel(spec["ylabel"])
        ax.set_title(f"{study['details'].get('title', study['study'])}: {study['task']} "
                     f"(mean over {len(study['seeds'])} seeds)", fontsize=8)
        ax.legend()
        fig.tight_layout()
    return fig

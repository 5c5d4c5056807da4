"""What the generated outputs look like to a reader: LaTeX that compiles, plots whose labels do not collide and
whose files do not change between runs, the smoke tier's "not for citing" banner, a page that fits a laptop
screen, and a CITATION.cff with date and URL.

The wide table below has every column a smoke table has (28), with the numbers of a real smoke run, including
the two In-ResNets whose Pareto labels used to overlap.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from itertools import combinations
from pathlib import Path

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from benchmarks.reporting.leaderboard import aggregate, load_frame, render_latex, repository_url, write_leaderboards
from benchmarks.reporting.page import GROUPS, write_page
from benchmarks.reporting.plots import RC, pareto_figure
from benchmarks.reporting.render import render_citation
from benchmarks.store.records import save_record

from data_on_disk import REPO, skip_or_fail
from leaderboard_records import SMOKE, STANDARD, _card, _record, build
from waiting import SAFETY_NET_S

# (model, test accuracy, latency ms, NFE) of the smoke run behind issue #9's overlapping labels
MODELS = [("neural-ode", 0.795, 9.888, 26), ("resnet", 0.70, 1.397, 3), ("inresnet-lambda", 0.6175, 0.874, 3),
          ("inresnet", 0.615, 0.864, 3), ("continuousnet", 0.6025, 2.12, 8), ("continuousnet-euler", 0.59, 1.088, 4),
          ("anode", 0.425, 17.832, 32)]


def wide_metrics(acc: float, latency: float, nfe: int) -> dict:
    metrics = {"accuracy": acc, "val_accuracy": acc + 0.05, "latency_ms": latency, "throughput": 20000 / latency,
               "nfe": nfe, "params": 14500, "flops": 1.79e6 * nfe, "train_seconds": 3.1 * nfe,
               "dt_delta_2x": -3.0, "dt_delta_half": -40.0, "dt_fewest_nfe": 3.0, "dt_speedup": 1.0,
               "line_shape": 1.5, "jacobian_sigma_max": 16.7, "jacobian_h_sigma_max": 5.6}
    for kind in ("robust", "fgsm", "pgd"):  # tables show the suite's worst case; single attacks go to the CSV
        metrics.update({f"{kind}@{eps}": acc / (1 + 10 * eps) for eps in (0.05, 0.1, 0.2)})
    metrics.update({f"noise@{sigma}": acc - sigma / 3 for sigma in (0.1, 0.2, 0.3)})
    return metrics


def make_wide(root: Path, protocol: dict = SMOKE) -> Path:
    card = _card("chen2018neural", "Neural Ordinary Differential Equations", "https://arxiv.org/abs/1806.07366")
    for model, acc, latency, nfe in MODELS:
        save_record(root, _record(model, 0, wide_metrics(acc, latency, nfe), card, protocol=protocol))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return aggregate(load_frame(make_wide(tmp_path_factory.mktemp("wide") / "records")))


def latex_sources(site: Path, wide: dict) -> dict[str, str]:
    """Every table the suite renders here: synthetic (hostile card text), wide (every label), and the committed
    records under results/ (read only as input; whatever protocol they were made under)."""
    texts = {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8") for p in site.rglob("*.tex")}
    texts.update({f"wide/{k[0]}": render_latex(t) for k, t in wide.items()})
    if (REPO / "results").is_dir():
        texts.update({f"results/{k[0]}-{k[1]}": render_latex(t) for k, t in aggregate(load_frame(REPO / "results"))
                      .items()})
    return texts


def test_latex_is_ascii_with_math_symbols(site: Path, wide: dict) -> None:
    texts = latex_sources(site, wide)
    assert len(texts) >= 3
    for name, tex in texts.items():
        bad = sorted({ch for ch in tex if not ch.isascii()})
        assert not bad, f"{name}: non-ASCII characters {bad} (pdflatex without inputenc support fails on them)"
    head = next(line for line in texts["wide/digits"].splitlines() if line.startswith("Model &"))
    assert r"max T$\cdot$$\sigma$($\partial$f/$\partial$x)" in head and r"$\Delta$ 2$\times$ steps" in head
    assert "robust $\\varepsilon$=0.05 (\\%)" in head and "$\\frac{1}{2}$$\\times$" in head
    evil = texts["leaderboards/standard/digits.tex"]
    assert r"\textless{}script\textgreater{}" in evil  # a card's markup is text, not a broken command


def test_every_table_compiles_with_its_declared_packages(site: Path, wide: dict, tmp_path: Path) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        skip_or_fail("pdflatex is not installed (apt-get install --no-install-recommends texlive-latex-base "
                     "texlive-latex-recommended)")
    for i, (name, tex) in enumerate(sorted(latex_sources(site, wide).items())):
        packages = re.search(r"^% needs \\usepackage\{([^}]*)\}$", tex, re.MULTILINE)
        assert packages, f"{name} does not declare its packages"
        (tmp_path / f"t{i}.tex").write_text(tex, encoding="utf-8")
        wrapper = (f"\\documentclass{{article}}\n\\usepackage{{{packages.group(1)}}}\n\\begin{{document}}\n"
                   f"\\input{{t{i}.tex}}\n\\end{{document}}\n")
        (tmp_path / f"doc{i}.tex").write_text(wrapper, encoding="utf-8")
        done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", f"doc{i}.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=SAFETY_NET_S)
        log = (tmp_path / f"doc{i}.log").read_text(encoding="latin-1") if (tmp_path / f"doc{i}.log").exists() else ""
        assert done.returncode == 0, f"{name} does not compile:\n{done.stdout[-3000:]}"
        assert "Unicode character" not in log and "Missing character" not in log, name


def _label_boxes(fig: matplotlib.figure.Figure, labels: set[str]) -> dict:
    canvas = FigureCanvasAgg(fig)
    fig.savefig(io.BytesIO(), format="png", dpi=110)  # the final layout, as written to disk
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    return {t.get_text(): t.get_window_extent(renderer) for t in ax.texts if t.get_text() in labels}


def test_pareto_labels_do_not_overlap(wide: dict) -> None:
    table = wide[("digits", "smoke", SMOKE["hash"])]
    names = {m for m, *_ in MODELS}
    for cost in ("latency_ms", "nfe"):  # the In-ResNets sit on the same point of both plots
        with matplotlib.rc_context(RC):
            fig = pareto_figure(table, cost, cost)
        boxes = _label_boxes(fig, names)
        assert set(boxes) == names
        for (a, box_a), (b, box_b) in combinations(boxes.items(), 2):
            assert not box_a.overlaps(box_b), f"{cost}: labels {a} and {b} overlap ({box_a} vs {box_b})"
        axes_box = fig.axes[0].get_window_extent()
        for name, box in boxes.items():  # inside the axes, so not cut off or drawn over the tick labels
            assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 + 1, name


PLOT_SCRIPT = """
import sys
from benchmarks.reporting.leaderboard import aggregate, load_frame
from benchmarks.reporting.plots import write_plots
frame = load_frame(sys.argv[1])
for key, table in aggregate(frame).items():
    write_plots(frame, table, sys.argv[2], key[0])
"""


def test_plot_files_are_identical_across_processes(tmp_path: Path) -> None:
    """Fresh interpreters: ids salted by a random uuid or label placement bounded by wall time would differ."""
    records = make_wide(tmp_path / "records")
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", PLOT_SCRIPT, str(records), str(tmp_path / run)], check=True,
                       cwd=REPO, timeout=SAFETY_NET_S)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"digits_pareto_latency.svg", "digits_pareto_latency.png", "digits_attacks.svg"} <= set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        if name.endswith(".svg"):
            assert "<dc:date>" not in (tmp_path / "a" / name).read_text(encoding="utf-8")
        else:  # no tIME chunk and no text chunk naming a date or the matplotlib version
            data = (tmp_path / "a" / name).read_bytes()
            assert b"tIME" not in data and b"Software" not in data


def test_smoke_tables_say_not_for_citing(site: Path) -> None:
    warning = "Pipeline check, not for citing"
    smoke_md = (site / "leaderboards/smoke/spiral.md").read_text(encoding="utf-8")
    assert f"> **⚠ {warning}:**" in smoke_md.split("- **Protocol:**")[0]  # above the numbers
    assert warning not in (site / "leaderboards/standard/digits.md").read_text(encoding="utf-8")
    index = (site / "leaderboards/README.md").read_text(encoding="utf-8")
    assert f"**⚠ {warning}:**" in index and "| spiral | smoke (pipeline check, not for citing) |" in index
    assert "| digits | standard |" in index
    readme = (site / "README.md").read_text(encoding="utf-8")
    assert warning not in readme  # README shows the standard table; the smoke one is a link, marked as such
    assert "(leaderboards/smoke/spiral.md) (pipeline check, not for citing)" in readme
    tex = (site / "leaderboards/smoke/spiral.tex").read_text(encoding="utf-8")
    assert "% PIPELINE CHECK, NOT FOR CITING:" in tex and rf"\caption{{\textbf{{{warning}.}}" in tex
    assert warning not in (site / "leaderboards/standard/digits.tex").read_text(encoding="utf-8")
    page = (site / "leaderboards/index.html").read_text(encoding="utf-8")
    smoke_part = page.split("<h2>spiral")[1]
    assert f'<p class="banner" role="note">⚠ {warning}:' in smoke_part.split("<table")[0]
    assert 'class="banner"' not in page.split("<h2>digits")[1].split("<h2>")[0]


class _Page(HTMLParser):
    """Body classes, group checkboxes and each table wrapper's classes from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.boxes, self.wraps = "", {}, []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs.get("class") or ""
        elif tag == "input" and "data-group" in attrs:
            self.boxes[attrs["data-group"]] = "checked" in attrs
        elif tag == "div" and "wrap" in (attrs.get("class") or "").split():
            self.wraps.append(attrs["class"].split())


def _dump(browser: str, url: str, profile: Path) -> _Page:
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--window-size=1400,900", f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=SAFETY_NET_S)
    assert done.returncode == 0, done.stderr[-2000:]
    page = _Page()
    page.feed(done.stdout)
    return page


def test_page_fits_a_laptop_screen(wide: dict, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        skip_or_fail("chromium is not installed (apt-get install -y chromium)")
    path = write_page(wide, {}, tmp_path / "index.html")
    html = path.read_text(encoding="utf-8")
    assert html.count('class="t model"') == 1 + len(MODELS)  # the sticky column: header and every row
    default = _dump(browser, path.as_uri(), tmp_path / "p1")
    assert set(default.boxes) == set(GROUPS) == {"accuracy", "robustness", "cost", "transfer", "diagnostics"}
    assert default.boxes["accuracy"] and default.boxes["cost"] and not default.boxes["robustness"]
    assert "hide-robustness" in default.body and "hide-accuracy" not in default.body
    assert default.wraps == [["wrap"]]  # measured by the page itself at 1400 px: no horizontal scrolling
    everything = _dump(browser, path.as_uri() + "#show=all", tmp_path / "p2")
    assert "hide-" not in everything.body  # (a DOM dump shows the `checked` attribute, not the live state)
    assert "overflows" in everything.wraps[0]  # the measurement can fail: all 28 columns do not fit


def test_citation_date_and_repository(site: Path, tmp_path: Path) -> None:
    cff = (site / "CITATION.cff").read_text(encoding="utf-8").splitlines()
    assert "date-released: 2025-03-03" in cff  # the newest record's finish date, not today's
    assert not any(line.startswith(("url:", "repository-code:")) for line in cff)  # no git remote: no URL
    git = shutil.which("git")
    if git is None:
        skip_or_fail("git is not installed")  # skips outside CI only, as the data tests do
    repo = tmp_path / "repo"
    make_wide(repo / "records", STANDARD)
    subprocess.run([git, "init", "-q", str(repo)], check=True)
    subprocess.run([git, "-C", str(repo), "remote", "add", "origin", "git@github.com:example/depthbench.git"],
                   check=True)
    assert repository_url(repo) == "https://github.com/example/depthbench"
    write_leaderboards(repo / "records", repo / "leaderboards", None, repo / "CITATION.cff")
    lines = (repo / "CITATION.cff").read_text(encoding="utf-8").splitlines()
    assert 'repository-code: "https://github.com/example/depthbench"' in lines
    assert 'url: "https://github.com/example/depthbench"' in lines and "date-released: 2025-03-01" in lines
    subprocess.run([git, "-C", str(repo), "remote", "set-url", "origin", "https://bob:s3cret@example.org/x/y.git"],
                   check=True)
    assert repository_url(repo) == "https://example.org/x/y"  # credentials in a remote are never published
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n\n[project.urls]\nRepository = '
                                         '"https://example.com/depthbench"\n', encoding="utf-8")
    assert repository_url(repo) == "https://example.com/depthbench"  # a declared URL wins over the remote
    assert "date-released" not in render_citation([], "1.0")  # no records, no date

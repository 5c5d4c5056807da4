"""Leaderboard generation from synthetic records (the committed leaderboards come from real runs).

Checks that numbers are means/stds of OK records only, that every output states where its numbers come from,
that outputs are byte-for-byte deterministic, that card text cannot inject HTML, and (in a real headless
Chromium) that clicking a header sorts the HTML table.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmarks.protocols import PROTOCOLS
from benchmarks.reporting.leaderboard import aggregate, load_frame, render_markdown, suite_version, write_leaderboards
from benchmarks.reporting.page import write_page
from benchmarks.store.records import save_record

from leaderboard_records import EVIL, STANDARD, _card, _record, build
from waiting import SAFETY_NET_S


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("site"))


def tables_of(site: Path) -> dict:
    return aggregate(load_frame(site / "records"))


def test_frame_has_one_row_per_record(site: Path) -> None:
    frame = load_frame(site / "records")
    assert len(frame) == 11
    assert {"model", "seed", "status", "accuracy", "fgsm@0.1", "git_commit", "device", "record"} <= set(frame.columns)
    assert "throughput" not in frame.columns
    assert frame.record.str.startswith("records/digits/3f2a9c1d0b7e/").sum() == 8


def test_aggregate_means_stds_and_failures(site: Path) -> None:
    digits = tables_of(site)[("digits", "standard", "3f2a9c1d0b7e")].set_index("model")
    assert digits.loc["resnet", "accuracy_mean"] == pytest.approx(0.92)
    assert digits.loc["resnet", "accuracy_std"] == pytest.approx(0.02)
    assert digits.loc["resnet", "seeds"] == 3 and digits.loc["resnet", "failed"] == 0
    assert digits.loc["resnet", "params_n"] == 2 and digits.loc["resnet", "params_mean"] == 12345
    # the failed seed's 0.99 must not leak into the mean
    assert digits.loc["node", "accuracy_mean"] == pytest.approx(0.82)
    assert (digits.loc["node", "seeds"], digits.loc["node", "failed"]) == (2, 1)
    assert digits.loc["node", "failures"] == ("seed 2: nan loss at epoch 3",)
    assert digits.loc["node", "flags"] == ("unreliable", "unreliable:vanishing-input-gradients")
    assert digits.loc["evil", "seeds"] == 0 and digits.loc["evil", "accuracy_n"] == 0
    assert list(digits.index) == ["resnet", "node", "anode", "evil"]  # accuracy descending, failed-only last


def test_markdown_numbers_and_provenance(site: Path) -> None:
    text = (site / "leaderboards/standard/digits.md").read_text(encoding="utf-8")
    assert "92.00 ± 2.00" in text and "82.00 ± 2.83" in text and "99.00" not in text
    assert "| 12.3k (n=2) |" in text
    assert "| # | model | n | test acc. (%)" in text
    for line in ("standard v2, hash 3f2a9c1d0b7e", "2025-03-01T08:00:00+00:00 to 2025-03-03T09:30:00+00:00",
                 "NVIDIA H100 80GB", "torch 2.4.1; torchdiffeq 0.2.4; torchattacks 3.5.1", "0123456789ab",
                 "sorted by test accuracy, descending", "seed 2: nan loss at epoch 3",
                 "12.0 h in total over 8 runs"):
        assert line in text
    assert "[resnet](https://arxiv.org/abs/1512.03385" in text
    assert "(../../records/digits/3f2a9c1d0b7e/resnet/seed2.json)" in text
    assert text.index("[resnet]") < text.index("[node]") < text.index("[anode]")
    assert "javascript:" not in text and "<script>" not in text
    assert "| commit |" not in text  # one commit for the whole table: the header names it
    assert "shared the device" not in text  # records without concurrency information ran alone
    # The headline worst case per radius (sorted) with its interval; single attacks only in the CSV.
    assert "| robust ε=0.03 (%) | robust ε=0.1 (%) |" in text and "FGSM ε=" not in text and "PGD ε=" not in text
    assert "| 25.00 ± 0.00 (CI 20.00–30.00) |" in text
    assert "| 35.00 ± 0.00 (unreliable) |" in text  # node's suite failed a sanity check: its cell says so
    spiral = (site / "leaderboards/smoke/spiral.md").read_text(encoding="utf-8")
    assert "test MSE, ascending" in spiral and "2.00e-02 ± 1.41e-02" in spiral
    assert spiral.index("[resnet]") < spiral.index("[node]")


def test_csv_plain_numbers_and_provenance(site: Path) -> None:
    rows = list(csv.DictReader(io.StringIO((site / "leaderboards/standard/digits.csv").read_text(encoding="utf-8"))))
    by_model = {r["model"]: r for r in rows}
    assert float(by_model["resnet"]["accuracy_mean"]) == pytest.approx(0.92)
    assert float(by_model["node"]["accuracy_std"]) == pytest.approx(0.0282842712)
    assert by_model["anode"]["accuracy_std"] == ""  # one seed: no std, rather than a made-up 0
    assert by_model["evil"]["accuracy_mean"] == "" and by_model["evil"]["failed"] == "1"
    assert by_model["resnet"]["torch"] == "2.4.1" and by_model["resnet"]["git_commits"].startswith("0123456789ab")
    assert "records/digits/3f2a9c1d0b7e/resnet/seed0.json" in by_model["resnet"]["records"]
    assert float(by_model["resnet"]["run_seconds"]) == 3 * 5400  # three runs of 1.5 h each, start to finish
    assert "throughput_mean" not in rows[0] and "test_mse_mean" not in rows[0]


def test_latex_booktabs_citations(site: Path) -> None:
    tex = (site / "leaderboards/standard/digits.tex").read_text(encoding="utf-8")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"resnet~\citet{he2016deep} & 3 & 92.00 $\pm$ 2.00" in tex
    assert "% Packages: torch 2.4.1" in tex and "sorted by test accuracy, descending" in tex


def test_absent_metric_has_no_column(site: Path) -> None:
    for suffix in (".md", ".csv", ".tex"):
        text = (site / f"leaderboards/standard/digits{suffix}").read_text(encoding="utf-8")
        assert "throughput" not in text and "peak train" not in text
    assert "FGSM" not in (site / "leaderboards/smoke/spiral.md").read_text(encoding="utf-8")


def test_readme_markers(site: Path, tmp_path: Path) -> None:
    readme = (site / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# demo\n\nintro\n<!-- leaderboard:start -->\n") and readme.endswith(
        "<!-- leaderboard:end -->\noutro\n")
    assert "stale" not in readme and "### digits" in readme and "### spiral" not in readme  # one table: standard
    assert "(records/digits/3f2a9c1d0b7e/resnet/seed0.json)" in readme  # links relative to the README
    assert "- [spiral — smoke (hash " in readme and "](leaderboards/smoke/spiral.md) (pipeline check" in readme
    assert "[leaderboards/index.html](leaderboards/index.html)" in readme
    index = (site / "leaderboards/README.md").read_text(encoding="utf-8")
    assert "[md](standard/digits.md)" in index and "[csv](smoke/spiral.csv)" in index
    assert "resnet (92.00)" in index and "<script>" not in index
    plain = tmp_path / "README.md"
    plain.write_text("no markers here\n", encoding="utf-8")
    write_leaderboards(site / "records", tmp_path / "lb", plain, None)
    assert plain.read_text(encoding="utf-8") == "no markers here\n"


def test_bibtex_dedup_and_citation(site: Path) -> None:
    bib = (site / "leaderboards/references.bib").read_text(encoding="utf-8")
    assert bib.count("{chen2018neural,") == 1 and bib.count("{he2016deep,") == 1
    assert "@misc{depthbench," in bib
    cff = (site / "CITATION.cff").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # no YAML library here: check the key lines
        lines = cff.splitlines()
        for line in ("cff-version: 1.2.0", 'title: "depthbench"', "references:", "    year: 2018"):
            assert line in lines
        assert any(line.startswith("message: ") for line in lines)
        assert f'version: "{suite_version()}"' in lines
        assert '    title: "Deep Residual Learning"' in lines
    else:
        data = yaml.safe_load(cff)
        assert data["cff-version"] == "1.2.0" and data["title"] == "depthbench" and data["message"]
        assert "Deep Residual Learning" in {r["title"] for r in data["references"]}


def test_outputs_are_deterministic(site: Path, tmp_path: Path) -> None:
    other = build(tmp_path)  # same records in another directory: same bytes, no absolute path leaks
    names = sorted(p.relative_to(site).as_posix() for p in site.rglob("*")
                   if p.suffix in {".md", ".csv", ".tex", ".html", ".bib", ".cff", ".svg"})
    assert "leaderboards/index.html" in names and "leaderboards/standard/plots/digits_depth_transfer.svg" in names
    for name in names:
        assert (site / name).read_bytes() == (other / name).read_bytes(), name


def test_plots_written_and_skipped(site: Path) -> None:
    plots = {p.name for p in (site / "leaderboards").rglob("*.png")}
    assert {"digits_depth_transfer.png", "digits_attacks.png", "digits_pareto_latency.png",
            "digits_pareto_nfe.png", "spiral_depth_transfer.png", "spiral_pareto_nfe.png"} <= plots
    assert "spiral_attacks.png" not in plots  # regression: no attack metrics, no attack plot
    assert "spiral_pareto_latency.png" not in plots  # no latency recorded for spiral
    assert "digits_stiffness.png" in plots and "spiral_stiffness.png" not in plots  # no profile in spiral records


def test_html_escapes_record_text(site: Path) -> None:
    page = (site / "leaderboards/index.html").read_text(encoding="utf-8")
    assert page.count("<script>") == 1  # ours, at the end
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="https://example.org/?q=&lt;b&gt;"' in page
    assert "javascript:" not in page
    assert 'src="standard/plots/digits_attacks.png"' in page


def test_stale_tables_are_removed(tmp_path: Path) -> None:
    build(tmp_path)
    assert (tmp_path / "leaderboards/smoke/spiral.md").exists()
    shutil.rmtree(tmp_path / "records/spiral")
    write_leaderboards(tmp_path / "records", tmp_path / "leaderboards", None, None)
    assert not (tmp_path / "leaderboards/smoke/spiral.md").exists()
    assert not (tmp_path / "leaderboards/smoke/plots/spiral_pareto_nfe.png").exists()
    assert (tmp_path / "leaderboards/standard/digits.md").exists()


def test_protocol_hashes_are_never_mixed(tmp_path: Path) -> None:
    card = _card("he2016deep", "Deep Residual Learning", "https://arxiv.org/abs/1512.03385")
    save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.5}, card))
    save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.9}, card, protocol={**STANDARD, "hash": "b" * 12}))
    tables = aggregate(load_frame(tmp_path))
    assert sorted(k[2] for k in tables) == ["3f2a9c1d0b7e", "b" * 12]
    assert {t.accuracy_mean.iloc[0] for t in tables.values()} == {0.5, 0.9}
    assert "50.00" in render_markdown(tables[("digits", "standard", "3f2a9c1d0b7e")])


def test_a_table_of_an_earlier_definition_of_its_tier_says_so(tmp_path: Path) -> None:
    card = _card("he2016deep", "Deep Residual Learning", "https://arxiv.org/abs/1512.03385")
    current = PROTOCOLS["cpu"].header("fashion-mnist")
    for protocol in (current, {**current, "hash": "b" * 12}):
        save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.5}, card, task="fashion-mnist", protocol=protocol))
    tables = aggregate(load_frame(tmp_path))
    assert "**Outdated:**" not in render_markdown(tables[("fashion-mnist", "cpu", current["hash"])])
    assert (f"- **Outdated:** these records are of hash {'b' * 12}, not of the `cpu` tier as this code defines it "
            f"(hash {current['hash']})") in render_markdown(tables[("fashion-mnist", "cpu", "b" * 12)])


def test_eval_batch_and_batch_coupling_are_shown(tmp_path: Path) -> None:
    card = _card("he2016deep", "Deep Residual Learning", "https://arxiv.org/abs/1512.03385")
    save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.5, "eval_batch": 400, "batch_coupling": 1e-16}, card))
    save_record(tmp_path, _record("node", 0, {"accuracy": 0.9, "eval_batch": 400, "batch_coupling": 1e-4}, card,
                                  flags=["batch-coupled"]))
    text = render_markdown(aggregate(load_frame(tmp_path))[("digits", "standard", "3f2a9c1d0b7e")])
    assert "- **Eval batch:** 400 examples per forward pass" in text
    node_row = next(line for line in text.splitlines() if "[node]" in line)
    assert "batch-coupled" in node_row
    assert "batch-coupled" not in next(line for line in text.splitlines() if "[resnet]" in line)


def test_rows_from_several_commits_name_their_own(tmp_path: Path) -> None:
    card = _card("he2016deep", "Deep Residual Learning", "https://arxiv.org/abs/1512.03385")
    save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.5}, card))
    other = _record("node", 0, {"accuracy": 0.9}, card)
    other.provenance = {**other.provenance, "git_commit": "f" * 40, "git_dirty": True, "concurrent_runs": 3}
    save_record(tmp_path, other)
    key = ("digits", "standard", "3f2a9c1d0b7e")
    table = aggregate(load_frame(tmp_path))[key]
    text = render_markdown(table)
    assert "| commit | records |" in text and "each row's in its commit column" in text
    node_row = next(line for line in text.splitlines() if "[node]" in line)
    assert "| ffffffffffff+dirty |" in node_row and "0123456789ab" not in node_row
    assert "up to 3 runs shared the device at a time" in text
    page = write_page({key: table}, {}, tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'data-key="commit"' in page and "ffffffffffff+dirty" in page


class _Rows(HTMLParser):
    """Collects, for one table id, the data-sort value of every cell of every body row."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows, self.headers = table_id, False, [], []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("id") == self.table_id
        elif self.inside and tag == "th" and "data-key" in attrs:
            self.headers.append((attrs["data-key"], attrs.get("aria-sort")))
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td" and self.rows:
            self.rows[-1].append(attrs.get("data-sort"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False


def test_chromium_sorts_table(site: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    table_id = "t-standard-digits-3f2a9c1d0b7e"
    url = (site / "leaderboards/index.html").resolve().as_uri() + f"#sort={table_id}:latency_ms"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=SAFETY_NET_S)
    assert done.returncode == 0, done.stderr[-2000:]
    parser = _Rows(table_id)
    parser.feed(done.stdout)
    keys = [key for key, _ in parser.headers]
    assert dict(parser.headers)["latency_ms"] == "ascending"
    column = keys.index("latency_ms")
    models = [row[keys.index("model")] for row in parser.rows[1:]]  # rows[0] is the header row
    latencies = [row[column] for row in parser.rows[1:]]
    # node 0.5 < resnet 2.0 < anode 5.0; evil (failed, no value) stays last
    assert models == ["node", "resnet", "anode", "evil"], (models, latencies)
    assert latencies[-1] == ""

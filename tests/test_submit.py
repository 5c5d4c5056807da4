"""Submitting a model (issue #12): protocol hash, plugin provenance, evaluated checkpoints, links and citations,
claimed vs reproduced numbers, and the example plugin package of CONTRIBUTING.md installed by pip and benchmarked."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from benchmarks import suite
from benchmarks.cli import main
from benchmarks.data import tasks
from benchmarks.evaluation.metrics import accuracy
from benchmarks.execution import runner, runs
from benchmarks.execution.evaluate import EVALUATED_FLAG
from benchmarks.protocols import SMOKE, Evaluation, Recipe, Tolerance
from benchmarks.reporting.leaderboard import aggregate, load_frame, render_bibtex, render_citation, write_leaderboards
from benchmarks.store.provenance import model_source
from benchmarks.store.records import Record, iter_records, save_record
from zoo import registry, template

from waiting import SAFETY_NET_S

EXAMPLE = Path(__file__).parent / "example_plugin"
# The smallest protocol that still runs every phase: one epoch on 300 digits.
DIGITS_HASH = SMOKE.task_hash("digits")
TINY = dataclasses.replace(
    SMOKE, name="test-tiny", tasks=("digits",), seeds=(0,), data_limit=300,
    recipes={"digits": Recipe(epochs=1, batch_size=32, lr=1e-2)},
    evaluation=Evaluation(attack_subset=50, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                          square_queries=5, autoattack_targets=1, transfer_subset=50, transfer_factors=(1.0, 2.0),
                          transfer_schemes=("euler",), transfer_tolerances=(1e-2,), latency_repeats=2,
                          throughput_batch=16, eval_batch=100, diagnostic_subset=16, track_points=4,
                          jacobian_iterations=3),
)


# --- the protocol hash, per (tier, task) --------------------------------------------------------------------------


def test_the_hash_ignores_which_runs_a_tier_does_its_prose_and_how_results_are_compared() -> None:
    for change in ({"models": SMOKE.models + ("my-plugin-model",)}, {"models": SMOKE.models[:2]},
                   {"description": "reworded"}, {"seeds": (0, 1, 2)}, {"tasks": ("digits",)},
                   {"citable": True}, {"rank": 3}, {"tolerance": Tolerance(accuracy_points=0.1, mse_relative=0.1)}):
        assert dataclasses.replace(SMOKE, **change).hashes() == SMOKE.hashes(), change


def test_a_new_task_or_another_tasks_recipe_orphans_no_record() -> None:
    more = dataclasses.replace(SMOKE, recipes={**SMOKE.recipes, "fashion-mnist": Recipe(epochs=1, batch_size=8)})
    assert more.task_hash("digits") == DIGITS_HASH
    changed = dataclasses.replace(SMOKE, recipes={**SMOKE.recipes, "pendulum": Recipe(epochs=9, batch_size=8)})
    assert changed.task_hash("digits") == DIGITS_HASH
    assert changed.task_hash("pendulum") != SMOKE.task_hash("pendulum")
    assert len(set(SMOKE.hashes().values())) == len(SMOKE.hashes())  # every task its own hash
    with pytest.raises(ValueError, match="no recipe for task 'cifar10'"):
        SMOKE.task_hash("cifar10")


def test_the_hash_covers_everything_that_changes_a_number(monkeypatch) -> None:
    changes = [{"recipes": {**SMOKE.recipes, "digits": Recipe(epochs=5, batch_size=32, lr=5e-3)}},
               {"evaluation": dataclasses.replace(SMOKE.evaluation, pgd_steps=20)},
               {"model_overrides": {"width": 32, "depth": 3}}, {"data_limit": 100}, {"version": 99}]
    for change in changes:
        assert dataclasses.replace(SMOKE, **change).task_hash("digits") != SMOKE.task_hash("digits"), change
    before = SMOKE.task_hash("digits")
    # A task's eps grid lives in benchmarks/data/tasks.py, yet changes the robust accuracies of every record.
    digits = tasks.get_task("digits")
    monkeypatch.setitem(tasks._TASKS, "digits", dataclasses.replace(digits, attack_eps=(0.05, 0.1)))
    assert SMOKE.task_hash("digits") != before
    monkeypatch.setitem(tasks._TASKS, "digits", dataclasses.replace(digits, noise_sigmas=(0.5,)))
    assert SMOKE.task_hash("digits") != before
    monkeypatch.setitem(tasks._TASKS, "digits", digits)
    # The attack suite: its version and its declaration (not its prose).
    monkeypatch.setattr(suite, "SUITE_VERSION", suite.SUITE_VERSION + 1)
    assert SMOKE.task_hash("digits") != before
    monkeypatch.setattr(suite, "SUITE_VERSION", suite.SUITE_VERSION - 1)
    assert SMOKE.task_hash("digits") == before
    declared = suite.ATTACK_SUITE
    monkeypatch.setattr(suite, "ATTACK_SUITE", (declared[1], declared[0], *declared[2:]))
    assert SMOKE.task_hash("digits") != before
    monkeypatch.setattr(suite, "ATTACK_SUITE", tuple(dataclasses.replace(a, doc="reworded", label="x")
                                                     for a in declared))
    assert SMOKE.task_hash("digits") == before


def test_records_keep_the_resolved_solver_of_every_stage() -> None:
    model = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2, stages=2,
                             adjoint=True)
    assert runs.solver_settings(model) == 2 * [{"scheme": "dopri5", "n_steps": None, "rtol": 1e-3, "atol": 1e-3,
                                                  "adjoint": True, "max_num_steps": 1000,
                                                  "backend": template.ADAPTIVE_BACKEND}]
    assert runs.solver_settings(torch.nn.Linear(2, 2)) == []  # a model without zoo solvers


# --- the example plugin package, installed with pip -----------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    """tests/example_plugin committed to a scratch git repository and `pip install git+file://` from it into a
    target directory (offline, no dependencies, no build isolation): what pip records for a VCS install."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "depthbench-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _git(source, "init", "-q")
    _git(source, "add", ".")
    _git(source, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "example")
    commit = _git(source, "rev-parse", "HEAD")
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), f"git+file://{source}"],
                          capture_output=True, text=True, timeout=SAFETY_NET_S)
    assert done.returncode == 0, done.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(target))
        patch.setattr(registry, "_entry_points_loaded", False)
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        patch.setattr(registry, "_CLASHES", {})
        patch.setattr(registry, "_BROKEN", [])
        try:
            yield commit
        finally:
            for name in [m for m in sys.modules if m.startswith("depthbench_example")]:
                sys.modules.pop(name)


def test_plugin_models_name_the_distribution_version_and_commit_that_provided_them(example_plugin) -> None:
    assert {"example-heun-net", "example-mlp"} <= set(zoo.list_models())
    found = registry.model_distribution("example-heun-net")
    assert found == {"distribution": "depthbench-example", "version": "0.1.0",
                     "entry_point": "depthbench_example.models:heun_net"}
    source = model_source("example-mlp")
    assert source["kind"] == "plugin" and source["vcs"] == "git" and source["commit"] == example_plugin
    assert source["url"].startswith("file://")
    assert registry.model_distribution("resnet") is None and model_source("resnet") == {"kind": "in-tree"}


def test_a_tier_runs_its_models_then_every_installed_plugin_by_default(example_plugin, capsys) -> None:
    assert runner.tier_models(SMOKE) == [*SMOKE.models, "example-heun-net", "example-mlp"]
    assert main(["list"]) == 0
    assert "example-mlp (depthbench-example 0.1.0)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_example_plugin_goes_from_pip_install_to_a_cited_leaderboard_row(example_plugin, tmp_path) -> None:
    results = tmp_path / "results"
    summary = runner.run_tier(TINY, models=["example-heun-net", "example-mlp"], results_dir=results,
                              device=torch.device("cpu"), progress=False)
    assert len(summary.written) == 2 and not summary.failed
    records = {r.model: r for _, r in iter_records(results)}
    # The plain nn.Module: benchmarked, with the metrics it has no capability for recorded as not applicable.
    plain = records["example-mlp"]
    assert plain.status == "ok" and "accuracy" in plain.metrics and "robust@0.1" in plain.metrics
    assert "nfe" in plain.not_applicable and plain.depth_transfer == [] and plain.solver == []
    record = records["example-heun-net"]
    assert record.status == "ok" and record.metrics["accuracy"] > 0.1  # one epoch on 300 digits: above chance
    # depth 3 on the hat basis: 2 elements, one step each
    assert record.solver == [{"scheme": "heun", "n_steps": 2, "rtol": 1e-3, "atol": 1e-3, "adjoint": False,
                              "max_num_steps": 1000}]
    assert record.provenance["model_source"]["commit"] == example_plugin
    write_leaderboards(results, out_dir=tmp_path / "boards", readme=None, citation=tmp_path / "CITATION.cff")
    table = (tmp_path / "boards" / "test-tiny" / "digits.md").read_text()
    assert "| model code |" in table and f"depthbench-example 0.1.0 (git {example_plugin[:12]})" in table
    assert "[example-heun-net](https://arxiv.org/abs/2008.02389" in table
    assert "| n/a |" in next(line for line in table.splitlines() if "[example-mlp]" in line)
    page = (tmp_path / "boards" / "index.html").read_text()
    assert f"depthbench-example 0.1.0 (git {example_plugin[:12]})</td>" in page
    bib = (tmp_path / "boards" / "references.bib").read_text()
    assert "@article{queiruga2020continuous" in bib and "warning" not in bib  # the same entry as the in-tree card
    csv_text = (tmp_path / "boards" / "test-tiny" / "digits.csv").read_text()
    assert "model_source" in csv_text.splitlines()[0] and "depthbench-example 0.1.0" in csv_text


# --- evaluating submitted weights -----------------------------------------------------------------------------------


def _smoke_resnet() -> torch.nn.Module:
    torch.manual_seed(3)
    task = tasks.get_task("digits")
    return zoo.create_model("resnet", input_shape=task.input_shape, num_classes=task.num_classes,
                            **SMOKE.model_overrides)


@pytest.mark.slow
def test_evaluate_measures_submitted_weights_under_their_own_key(tmp_path, capsys) -> None:
    model = _smoke_resnet()
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    results = tmp_path / "results"
    # A trained record of the same model and seed must stay a row of its own.
    save_record(results, Record(model="resnet", task="digits", seed=0, protocol=SMOKE.header("digits"),
                                metrics={"accuracy": 0.5}, card=zoo.model_card("resnet").to_dict()))
    assert main(["evaluate", "resnet", "--checkpoint", str(checkpoint), "--task", "digits", "--tier", "smoke",
                 "--results", str(results), "--device", "cpu"]) == 0
    assert sha[:12] in capsys.readouterr().err
    records = {r.model: r for _, r in iter_records(results)}
    evaluated = records[f"resnet@{sha[:12]}"]
    assert evaluated.status == "ok" and EVALUATED_FLAG in evaluated.flags
    assert evaluated.provenance["checkpoint"] == {"file": "weights.pt", "sha256": sha}
    assert evaluated.metrics["epochs"] == 0 and evaluated.solver[0]["scheme"] == "euler"
    data = tasks.get_task("digits").load()
    expected = accuracy(model.eval(), data.test.inputs(), data.test.y, batch_size=400)
    assert evaluated.metrics["accuracy"] == pytest.approx(expected)  # the submitted weights, not retrained ones
    table, = aggregate(load_frame(results, repo_root=tmp_path)).values()
    assert set(table.model) == {"resnet", f"resnet@{sha[:12]}"}
    assert list(table.loc[table.model == "resnet", "accuracy_mean"]) == [0.5]
    board = write_leaderboards(results, out_dir=tmp_path / "boards", readme=None, citation=None)
    assert board and EVALUATED_FLAG in (tmp_path / "boards" / "smoke" / "digits.md").read_text()


def test_evaluate_names_an_unknown_model_or_a_size_it_does_not_take(tmp_path, capsys, monkeypatch) -> None:
    checkpoint = tmp_path / "w.pt"
    torch.save(_smoke_resnet().state_dict(), checkpoint)
    assert main(["evaluate", "nope", "--checkpoint", str(checkpoint), "--task", "digits"]) == 2
    assert "unknown model 'nope'; known models:" in capsys.readouterr().err
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    sizeless = dataclasses.replace(registry.model_card("resnet"), name="sizeless")
    registry.register_model(sizeless)(lambda input_shape, num_classes: None)
    assert main(["evaluate", "sizeless", "--checkpoint", str(checkpoint), "--task", "digits"]) == 2
    assert "cannot build 'sizeless' at tier 'smoke''s size" in capsys.readouterr().err


class Opaque:  # pickled as code, which weights_only refuses
    def __init__(self) -> None:
        self.weights = torch.zeros(2)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Opaque(), "not a weights-only checkpoint"),
    (lambda: [torch.zeros(2)], "holds no state dict"),
    (lambda: {k: v for k, v in _smoke_resnet().state_dict().items() if "head" not in k}, "missing keys: head."),
    (lambda: zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=3).state_dict(),
     "shape mismatches"),
    (lambda: {**_smoke_resnet().state_dict(), "extra.weight": torch.zeros(1)}, "unexpected keys: extra.weight"),
])
def test_bad_checkpoints_are_refused_with_a_clear_message(make, message, tmp_path, capsys) -> None:
    checkpoint = tmp_path / "bad.pt"
    torch.save(make(), checkpoint)
    assert main(["evaluate", "resnet", "--checkpoint", str(checkpoint), "--task", "digits",
                 "--results", str(tmp_path / "results"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()  # nothing recorded


# --- links, citations, claims ---------------------------------------------------------------------------------------


def _card(name: str, **fields) -> dict:
    card = {"name": name, "family": "x", "title": f"Paper of {name}", "authors": "A. Author and B. Author",
            "year": 2024, "arxiv": "", "doi": "", "url": "", "bibkey": f"{name}2024", "bibtex": "", "variant": ""}
    return {**card, **fields}


def _write(root: Path, model: str, card: dict, accuracies: list[float | None]) -> None:
    for seed, acc in enumerate(accuracies):
        ok = acc is not None
        save_record(root, Record(model=model, task="digits", seed=seed, protocol=SMOKE.header("digits"), card=card,
                                 status="ok" if ok else "failed", error=None if ok else "RuntimeError: boom",
                                 metrics={"accuracy": acc} if ok else {}))


def test_cards_link_to_arxiv_else_doi_else_url_and_only_successful_models_are_cited(tmp_path) -> None:
    assert zoo.ModelCard(name="m", family="f", title="t", authors="a", year=2024, arxiv="", bibkey="k", bibtex="",
                         variant="v", doi="10.1000/182").link == "https://doi.org/10.1000/182"
    _write(tmp_path, "doi-model", _card("doi-model", doi="10.1000/182"), [0.9])
    _write(tmp_path, "url-model", _card("url-model", url="https://example.org/paper"), [0.8])
    _write(tmp_path, "arxiv-model", _card("arxiv-model", arxiv="2008.02389", doi="10.1000/182"), [0.7])
    _write(tmp_path, "broken-model", _card("broken-model", doi="10.9999/broken"), [None, None])
    new_card = zoo.ModelCard(name="card-model", family="f", title="Paper of card-model", authors="A. Author",
                             year=2024, arxiv="", bibkey="card-model2024", bibtex="", variant="v",
                             doi="10.1000/183", url="https://code.example.org").to_dict()
    _write(tmp_path, "card-model", new_card, [0.6])  # a card's own link: its DOI before its (code) URL
    tables = aggregate(load_frame(tmp_path, repo_root=tmp_path))
    table, = tables.values()
    links = dict(zip(table.model, table.url))
    assert links == {"doi-model": "https://doi.org/10.1000/182", "url-model": "https://example.org/paper",
                     "arxiv-model": "https://arxiv.org/abs/2008.02389", "broken-model": "https://doi.org/10.9999/broken",
                     "card-model": "https://doi.org/10.1000/183"}
    bib, cff = render_bibtex(tables.values(), "0.1"), render_citation(tables.values(), "0.1")
    for cited in ("doi-model", "url-model", "arxiv-model"):
        assert f"{cited}2024" in bib and f"Paper of {cited}" in cff
    assert "doi = {10.1000/182}" in bib and "type: doi" in cff
    assert "broken-model" not in bib and "broken-model" not in cff  # all its runs failed: no number, no citation


def test_claimed_and_reproduced_numbers_are_compared_within_the_stated_tolerance(tmp_path) -> None:
    claims = [{"task": "digits", "protocol": "smoke", "metric": "accuracy", "value": 0.90, "tolerance": 0.02,
               "source": "Table 1"},
              {"task": "digits", "protocol": "smoke", "metric": "accuracy", "value": 0.99, "tolerance": 0.02,
               "source": "Table 2"},
              {"task": "digits", "protocol": "smoke", "metric": "accuracy", "value": 0.91,
               "source": "Table <3> & \"co\""},
              {"task": "digits", "protocol": "standard", "metric": "accuracy", "value": 0.5, "source": "elsewhere"}]
    _write(tmp_path, "claimer", _card("claimer", claims=claims), [0.90, 0.92])
    _write(tmp_path, "quiet", _card("quiet"), [0.5])
    written = write_leaderboards(tmp_path, out_dir=tmp_path / "boards", readme=None, citation=None)
    md = (tmp_path / "boards" / "smoke" / "digits.md").read_text()
    assert "Claimed vs reproduced" in md
    assert "| claimer | accuracy | 90.00 | 91.00 ± 1.41 (n=2) | +1.00 | ±2.00 | within | Table 1 |" in md
    assert "| claimer | accuracy | 99.00 | 91.00 ± 1.41 (n=2) | -8.00 | ±2.00 | ⚠ outside | Table 2 |" in md
    assert "elsewhere" not in md  # a claim about another protocol is not compared with this table
    page = (tmp_path / "boards" / "index.html").read_text()
    assert '<table class="claims">' in page and "<td>⚠ outside</td><td>Table 2</td>" in page
    assert "<td>Table &lt;3&gt; &amp; &quot;co&quot;</td>" in page  # the template escapes every cell
    claims_csv = tmp_path / "boards" / "smoke" / "digits.claims.csv"
    assert claims_csv in written
    lines = claims_csv.read_text().splitlines()
    assert lines[0].startswith("task,protocol,protocol_hash,model,metric,claimed,mean,std,n,difference")
    assert lines[2].startswith(f"digits,smoke,{DIGITS_HASH},claimer,accuracy,0.99,0.91,")
    assert ",True,Table 2" in lines[2]


def test_a_malformed_claim_is_an_error_naming_the_model(tmp_path) -> None:
    _write(tmp_path, "sloppy", _card("sloppy", claims=[{"task": "digits", "metric": "accuracy", "value": "93%"}]),
           [0.9])
    with pytest.raises(ValueError, match="model 'sloppy': card claim #1 lacks protocol, source"):
        write_leaderboards(tmp_path, out_dir=tmp_path / "boards", readme=None, citation=None)

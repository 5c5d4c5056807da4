"""Submitting a model from one's own package: every wrong turn ends in a clear message and breaks nothing else.

Each test installs tiny plugin distributions (a module plus a dist-info with a `depthbench.models` entry point)
into a temporary directory on sys.path, with a fresh registry state.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.data.tasks import get_task
from benchmarks.evaluation.check import ModelCheckFailed, check_model
from benchmarks.execution import runner, runs
from benchmarks.protocols import SMOKE, Evaluation, Recipe
from benchmarks.reporting.tables import aggregate, cell, display_columns, load_frame
from benchmarks.store.records import save_record
from zoo import registry

CARD = dict(
    family="plain-cnn", title="A Plain Convolutional Network", authors="Ada Lovelace", year=2024,
    venue="Workshop on Plain Networks", arxiv="2401.01234", bibkey="lovelace2024plain",
    bibtex="@inproceedings{lovelace2024plain,\n  title = {A Plain Convolutional Network},\n"
           "  author = {Lovelace, Ada},\n  year = {2024}\n}",
    variant="two conv layers and a linear head", differences="none", licence="MIT",
)
MODELS = '''
import torch
from torch import nn

CARD = {card!r}


class PlainCNN(nn.Module):
    """A plain module: no nfe, no solvers, no manifest, no tracks."""

    def __init__(self, input_shape, num_classes, width=8, **overrides):
        super().__init__()
        size = 1
        for n in input_shape:
            size *= n
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(size, width), nn.Tanh(), nn.Linear(width, num_classes))
        self.extra = 0

    def forward(self, x):
        return self.body(x)


def plain(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes, **overrides)
plain.card = CARD


class NaNInEval(PlainCNN):
    def forward(self, x):
        out = self.body(x)
        return out if self.training else out * float("nan")


def nan_in_eval(input_shape, num_classes, **overrides):
    return NaNInEval(input_shape, num_classes, **overrides)
nan_in_eval.card = CARD


def one_too_many(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes + 1, **overrides)
one_too_many.card = CARD


class Tuple(PlainCNN):
    def forward(self, x):
        return self.body(x), x


def tuple_output(input_shape, num_classes, **overrides):
    return Tuple(input_shape, num_classes, **overrides)
tuple_output.card = CARD


def bad_card(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes, **overrides)
bad_card.card = {{**CARD, "title": "", "arxiv": "1234.5"}}


def claims_nfe(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes, **overrides)
claims_nfe.card = {{**CARD, "capabilities": ["nfe"]}}


def no_card(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes, **overrides)


class Float64(PlainCNN):
    def forward(self, x):
        return self.body(x).double()


def float64_output(input_shape, num_classes, **overrides):
    return Float64(input_shape, num_classes, **overrides)
float64_output.card = CARD


def hangs_when_built(input_shape, num_classes, **overrides):
    import time
    while True:  # waits on something that never comes
        try:
            time.sleep(3600)
        except Exception:  # a plugin's own catch-all must not keep the check from stopping it
            pass
hangs_when_built.card = CARD


class HangsInForward(PlainCNN):
    def forward(self, x):
        while True:
            pass


def hangs_in_forward(input_shape, num_classes, **overrides):
    return HangsInForward(input_shape, num_classes, **overrides)
hangs_in_forward.card = CARD


def doi_only(input_shape, num_classes, **overrides):
    return PlainCNN(input_shape, num_classes, **overrides)
doi_only.card = {{k: v for k, v in CARD.items() if k != "arxiv"}} | {{"doi": "10.1000/xyz123"}}
'''


def install(root: Path, dist: str, entries: dict[str, str], module: str | None = None, source: str = "") -> None:
    """A distribution `dist` 0.1 with `entries` (name -> module:attr) in the depthbench.models group."""
    if module:
        (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text("[depthbench.models]\n" + lines)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A fresh registry (built-ins only) and a sys.path directory to install plugin distributions into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_CLASHES", {})
    monkeypatch.setattr(registry, "_BROKEN", [])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("myplugin", "otherplugin", "brokenplugin")):
            sys.modules.pop(name, None)
    importlib.invalidate_caches()


def install_models(root: Path, entries: dict[str, str], dist: str = "myplugin") -> None:
    install(root, dist, {n: f"myplugin_models:{v}" for n, v in entries.items()}, "myplugin_models",
            MODELS.format(card=CARD))


def load(root: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = zoo.list_models()
    root.joinpath("warnings.txt").write_text("\n".join(str(w.message) for w in caught))
    return names


def test_a_plain_module_with_a_dict_card_registers_and_passes_the_check(plugins) -> None:
    install_models(plugins, {"plain-cnn": "plain"})
    assert "plain-cnn" in load(plugins) and "resnet" in zoo.list_models()
    card = zoo.model_card("plain-cnn")
    assert card.title == CARD["title"] and card.link == "https://arxiv.org/abs/2401.01234"
    assert "distribution myplugin 0.1" in registry.model_source("plain-cnn")
    report = check_model("plain-cnn", ["digits", "pendulum"])
    assert report.ok, report.text()
    assert "n/a" in report.text()  # no nfe: NFE columns will read n/a
    model = zoo.create_model("plain-cnn", input_shape=(1, 8, 8), num_classes=10)
    assert zoo.capabilities(model) == frozenset()


QUICK = dataclasses.replace(
    SMOKE, name="test-plugins", recipes={"digits": Recipe(epochs=1, batch_size=64, lr=1e-2)},
    evaluation=Evaluation(attack_subset=50, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                          square_queries=5, autoattack_targets=1, transfer_subset=50, latency_repeats=2,
                          throughput_batch=16, eval_batch=200, diagnostic_subset=16),
    model_overrides={"width": 8, "depth": 2}, data_limit=300,
)


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    return task, task.load(limit=300)


def test_a_plain_module_is_benchmarked_with_capability_metrics_not_applicable(plugins, digits, tmp_path) -> None:
    install_models(plugins, {"plain-cnn": "plain"})
    load(plugins)
    task, data = digits
    record = runs.run_one(QUICK, task, data, "plain-cnn", 0, torch.device("cpu"))
    assert record.status == "ok", record.error
    assert 0.0 <= record.metrics["accuracy"] <= 1.0 and "fgsm@0.1" in record.metrics and "latency_ms" in record.metrics
    assert {"nfe", "dt_fewest_nfe", "line_shape", "jacobian_sigma_max"} <= set(record.not_applicable)
    assert "nfe" not in record.metrics and record.depth_transfer == [] and record.trajectory == []
    # Beside a built-in that has them, the plain model's cells read n/a (not "not recorded").
    resnet = runs.run_one(QUICK, task, data, "resnet", 0, torch.device("cpu"))
    results = tmp_path / "results"
    save_record(results, record)
    save_record(results, resnet)
    (table,) = aggregate(load_frame(results, repo_root=tmp_path)).values()
    columns = {c.key: c for c in display_columns(table)}
    row = table.set_index("model").loc["plain-cnn"]
    row["model"] = "plain-cnn"
    assert cell(row, columns["nfe"])[0] == "n/a" and cell(row, columns["line_shape"])[0] == "n/a"
    assert cell(row, columns["accuracy"])[0] is not None
    # The whole leaderboard (tables, plots, page) renders with the plain model ranked among the built-ins.
    from benchmarks.reporting.leaderboard import write_leaderboards

    write_leaderboards(results, out_dir=tmp_path / "boards", readme=None, citation=None)
    (board,) = (tmp_path / "boards").glob("*/digits.md")
    line = next(line for line in board.read_text().splitlines() if "[plain-cnn]" in line)
    assert "| n/a |" in line and line.startswith(("| 1 |", "| 2 |"))  # ranked, with n/a cells


def test_a_bad_card_names_distribution_entry_point_and_fields_and_breaks_nothing(plugins) -> None:
    install_models(plugins, {"bad-card": "bad_card", "plain-cnn": "plain"})
    names = load(plugins)
    assert "bad-card" not in names and "plain-cnn" in names and "resnet" in names
    (broken,) = zoo.broken_models()
    text = str(broken)
    assert "'bad-card = myplugin_models:bad_card'" in text and "distribution myplugin 0.1" in text
    assert "title: empty" in text and "arxiv: '1234.5' is not an arXiv id" in text
    assert "bad-card" in (plugins / "warnings.txt").read_text()
    assert zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2) is not None


def test_list_shows_broken_plugins(plugins, capsys) -> None:
    install_models(plugins, {"bad-card": "bad_card"})
    install(plugins, "brokenplugin", {"gone": "brokenplugin_missing:model", "noattr": "myplugin_models:nowhere"})
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet" in out
    assert "broken (not registered): plugin entry point 'gone = brokenplugin_missing:model' (distribution " \
           "brokenplugin 0.1): ModuleNotFoundError" in out
    assert "'noattr = myplugin_models:nowhere'" in out and "AttributeError" in out
    assert "'bad-card = myplugin_models:bad_card'" in out


def test_a_plugin_named_like_a_built_in_is_an_error_naming_both(plugins) -> None:
    install_models(plugins, {"resnet": "plain", "plain-cnn": "plain"})
    assert "resnet" in load(plugins)
    with pytest.raises(registry.ModelNameClash, match=r"'resnet' is claimed by built-in "
                                                      r"zoo\.models\.resnet\.resnet and by "
                                                      r"plugin entry point 'resnet = myplugin_models:plain'"):
        zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10)
    # Only the clashing name is affected.
    assert zoo.create_model("plain-cnn", input_shape=(1, 8, 8), num_classes=10) is not None
    assert zoo.create_model("continuousnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2) is not None


def test_two_plugins_with_one_name_is_an_error_naming_both_distributions(plugins, capsys) -> None:
    install_models(plugins, {"twin": "plain"})
    install(plugins, "otherplugin", {"twin": "otherplugin_models:model"}, "otherplugin_models",
            "from myplugin_models import CARD, PlainCNN\n\n\ndef model(input_shape, num_classes, **size):\n"
            "    return PlainCNN(input_shape, num_classes)\n\n\nmodel.card = CARD\n")
    load(plugins)
    with pytest.raises(registry.ModelNameClash) as error:
        zoo.model_card("twin")
    assert "distribution myplugin 0.1" in str(error.value) and "distribution otherplugin 0.1" in str(error.value)
    assert main(["check", "twin"]) == 2
    assert "claimed by" in capsys.readouterr().err


@pytest.mark.parametrize(("entry", "failing", "message"), [
    ("nan_in_eval", "output shape, dtype, finite (eval mode)", "non-finite values (NaN or inf) for 4 of 4 samples"),
    ("one_too_many", "output shape, dtype, finite (train mode)", "returned shape (4, 11), expected (4, 10)"),
    ("tuple_output", "output shape, dtype, finite (train mode)", "returned a tuple, not a tensor"),
    ("no_card", "model card valid", "no model card: give the constructor a `card` attribute"),
    ("claims_nfe", "model card valid", "the card claims nfe, which the model does not offer"),
    ("float64_output", "output shape, dtype, finite (train mode)", "returned dtype torch.float64, expected "
                                                                   "torch.float32"),
])
def test_check_fails_bad_models_with_the_reason(plugins, entry, failing, message) -> None:
    install_models(plugins, {"bad": entry})
    load(plugins)
    report = check_model("bad", ["digits"])
    assert not report.ok
    failed = {c.name: c.detail for c in report.failures}
    assert failing in failed and message in failed[failing], report.text()


def test_run_refuses_a_model_that_fails_the_check_before_training(plugins, tmp_path, capsys) -> None:
    install_models(plugins, {"nan-eval": "nan_in_eval"})
    load(plugins)
    results = tmp_path / "results"
    assert main(["run", "--models", "nan-eval,resnet", "--tasks", "digits", "--results", str(results),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "depthbench check nan-eval: FAIL" in err and "non-finite values" in err
    assert "check resnet" not in err  # only the failing model's report
    assert not results.exists()  # refused before any run
    with pytest.raises(ModelCheckFailed):
        runner.run_tier(QUICK, models=["nan-eval"], tasks=["digits"], results_dir=results, progress=False)


@pytest.mark.parametrize(("entry", "flag", "message"), [
    ("nan_in_eval", "bad-output", "non-finite values"),
    ("one_too_many", "bad-output", "during training the model returned shape (64, 11), expected (64, 10)"),
    ("tuple_output", "bad-output", "returned a tuple, not a tensor"),
])
def test_bad_outputs_make_a_failed_record_never_a_ranked_row(plugins, digits, entry, flag, message) -> None:
    """Even past the check (here bypassed), evaluation guards turn bad outputs into failed records."""
    install_models(plugins, {"bad": entry})
    load(plugins)
    task, data = digits
    record = runs.run_one(QUICK, task, data, "bad", 0, torch.device("cpu"))
    assert record.status == "failed" and record.flags == [flag] and record.metrics == {}
    assert message in record.error and "ModelOutputError" in record.error


def test_a_new_file_in_zoo_models_registers_without_editing_another_file(tmp_path) -> None:
    """The README's in-tree recipe: a copy of the zoo package plus one new module, imported in a fresh process."""
    package = tmp_path / "zoo"
    shutil.copytree(Path(zoo.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    card = {**CARD, "name": "my-model", "family": "mine"}
    (package / "models" / "mymodel.py").write_text(textwrap.dedent(f"""
        from torch import nn
        from zoo.registry import register_model

        @register_model({card!r})
        def my_model(input_shape, num_classes, **size):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """))
    (package / "models" / "broken_one.py").write_text("raise ImportError('needs a package that is not installed')\n")
    code = "import json, zoo; print(json.dumps([zoo.list_models(), [str(b) for b in zoo.broken_models()]]))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    names, broken = json.loads(out.splitlines()[-1])
    assert "my-model" in names and "resnet" in names
    assert broken == ["in-tree module zoo/models/broken_one.py: ImportError: needs a package that is not installed"]


def test_a_half_declared_capability_fails_the_check_not_the_run(plugins) -> None:
    """Attributes added one by one (the issue's `stack expects a non-empty TensorList`): caught in seconds."""
    source = MODELS.format(card=CARD) + textwrap.dedent('''
        class HalfDeclared(PlainCNN):
            blocks = []

            def tracks(self, x, points=8):
                return []


        def half(input_shape, num_classes, **overrides):
            return HalfDeclared(input_shape, num_classes, **overrides)
        half.card = CARD
    ''')
    install(plugins, "myplugin", {"half": "myplugin_models:half"}, "myplugin_models", source)
    load(plugins)
    failed = {c.name: c.detail for c in check_model("half", ["pendulum"]).failures}
    assert list(failed) == ["tracks() for the trajectory diagnostics"]
    assert "tracks() gave 0 tracks for 0 blocks" in failed["tracks() for the trajectory diagnostics"]


@pytest.mark.parametrize(("entry", "failing"), [("hangs_when_built", "builds"),
                                                ("hangs_in_forward", "output shape, dtype, finite (train mode)")])
def test_a_model_that_hangs_fails_the_check_instead_of_hanging_it(plugins, entry, failing) -> None:
    install_models(plugins, {"hangs": entry})
    load(plugins)
    report = check_model("hangs", ["pendulum"], time_limit=0.5)
    assert [c.name for c in report.failures][:1] == [failing]
    assert "did not finish within 0.5 s (a hang in the model's constructor or forward?)" in report.failures[0].detail
    assert "--time-limit" in report.failures[0].detail


def test_a_dict_card_with_a_doi_and_no_arxiv_key_registers(plugins) -> None:
    install_models(plugins, {"doi-only": "doi_only"})
    assert "doi-only" in load(plugins), (plugins / "warnings.txt").read_text()
    card = zoo.model_card("doi-only")
    assert card.arxiv == "" and card.link == "https://doi.org/10.1000/xyz123"
    assert check_model("doi-only", ["pendulum"]).ok


def test_a_plugin_that_fails_to_import_is_named_with_its_cause_not_as_unknown(plugins, capsys) -> None:
    install(plugins, "brokenplugin", {"gone": "brokenplugin_missing:model"})
    load(plugins)
    assert main(["run", "--models", "gone", "--tasks", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "model 'gone' is installed but could not be registered" in err and "ModuleNotFoundError" in err
    assert "unknown model" not in err
    assert main(["check", "gone"]) == 2
    assert "could not be registered" in capsys.readouterr().err


def test_a_failing_plugin_is_left_out_of_a_default_run_and_the_built_ins_run(plugins, tmp_path, fake_runs,
                                                                             capsys) -> None:
    install_models(plugins, {"nan-eval": "nan_in_eval", "plain-cnn": "plain"})
    load(plugins)
    tier = dataclasses.replace(SMOKE, models=("resnet",))  # the tier's own models, then every installed plugin
    summary = runner.run_tier(tier, tasks=["digits"], results_dir=tmp_path / "results", progress=False,
                              device=torch.device("cpu"))
    assert fake_runs["calls"] == [("digits", "resnet", 0), ("digits", "plain-cnn", 0)]
    assert list(summary.left_out) == ["nan-eval"] and "non-finite values" in summary.left_out["nan-eval"]
    assert "plugin model nan-eval fails `depthbench check` and is left out of this run" in capsys.readouterr().err
    with pytest.raises(ModelCheckFailed, match="nan-eval"):  # named explicitly, it still stops the run
        runner.run_tier(tier, models=["resnet", "nan-eval"], tasks=["digits"], results_dir=tmp_path / "r2",
                        progress=False, device=torch.device("cpu"))

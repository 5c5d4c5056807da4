"""In-ResNet's lambda initialisation (zoo `lambda_init`, the inresnet-init study of Yang et al.) and Zhang's line-shape
score (diagnostics.zhang_line_shape_score, the line-shape study: a ResNet against In-ResNet at lambda = 1)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.data.tasks import get_task
from benchmarks.evaluation.diagnostics import line_shape_score, zhang_line_shape_score
from benchmarks.protocols import Recipe
from benchmarks.store.studies import read_study
from benchmarks.studies import common, inresnet_init, line_shape

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def _inresnet(**extra) -> zoo.DepthModel:
    torch.manual_seed(0)
    return zoo.create_model("inresnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=4, **extra)


def _lambdas(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n.endswith("lam")])


def test_lambda_init_keeps_the_default_and_draws_from_the_range() -> None:
    default, explicit = _inresnet(), _inresnet(lambda_init=(0.2, 0.25))
    for name, value in default.state_dict().items():  # the published records' models: the same draws
        assert torch.equal(explicit.state_dict()[name], value), name
    assert ((_lambdas(default) >= 0.2) & (_lambdas(default) <= 0.25)).all()
    wide = _lambdas(_inresnet(lambda_init=(0.3, 0.4)))
    assert len(wide) == 4 and ((wide >= 0.3) & (wide <= 0.4)).all()
    assert torch.equal(_lambdas(_inresnet(lambda_init=(1.0, 1.0))), torch.ones(4))
    lam = zoo.create_model("inresnet-lambda", input_shape=(2,), num_classes=2, width=4, depth=2, lambda_init=(0, 0.1))
    assert (_lambdas(lam) <= 0.1).all()
    for bad in ((0.4, 0.3), (0.1, math.nan), (0.1,), "ab"):
        with pytest.raises(ValueError, match="lambda_init"):
            _inresnet(lambda_init=bad)


def _track(*points: tuple[float, ...]) -> zoo.Track:
    states = [torch.tensor([p], dtype=torch.float64) for p in points]
    return zoo.Track(list(range(len(points))), states, [None] * (len(points) - 1))


def test_zhang_line_shape_counts_step_directions_only() -> None:
    score = lambda *p: zhang_line_shape_score(_track(*p)).item()  # noqa: E731
    assert score((0, 0), (1, 0), (5, 0), (5.5, 0)) == 1.0  # straight, whatever the step lengths
    assert score((0, 0), (1, 0), (1, 5)) == pytest.approx(math.sqrt(2))  # 2 unit steps at a right angle
    assert line_shape_score(_track((0, 0), (1, 0), (1, 5))).item() == pytest.approx(6 / math.sqrt(26))  # not it
    assert score((0, 0), (1, 0), (1, 1), (2, 1)) == pytest.approx(3 / math.sqrt(5))
    assert score((0, 0), (1, 0), (0, 0)) == math.inf  # back to the start
    assert math.isnan(score((0, 0), (1, 0), (1, 0)))  # a zero step has no direction
    batch = zoo.Track([0, 1, 2], [torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2), 2 * torch.ones(2, 3, 2, 2)],
                      [None, None])
    assert torch.equal(zhang_line_shape_score(batch), torch.ones(2, dtype=torch.float64))  # per sample, any shape


def test_spearman_matches_the_rank_correlation() -> None:
    assert line_shape.spearman([1, 2, 3, 4], [8, 6, 5, 1]) == pytest.approx(-1.0)
    assert line_shape.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)  # tied ranks 1.5, 1.5, 3
    assert math.isnan(line_shape.spearman([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.3, 0.1, 0.7, 0.7, 0.2], [5, 3, 9, 1, 1]
    assert line_shape.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_line_shape_study_reads_both_arms_every_epoch(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=3, batch_size=32, lr=5e-3))
    monkeypatch.setattr(line_shape, "TRACK_IMAGES", 64)
    assert main(["study", "line-shape", "--task", "digits", "--seeds", "0", "--limit", "160", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "l")]) == 0
    study = read_study(tmp_path / "r" / "line-shape" / "digits.json")
    summary = {k: v["values"][0] for k, v in study["summary"].items()}
    rows = {arm: [r for r in study["rows"] if r["arm"] == arm] for arm in ("resnet", "plain")}
    assert [r["epoch"] for r in rows["resnet"]] == [1, 2, 3] == [r["epoch"] for r in rows["plain"]]
    assert all(r["lss"] >= 1.0 for r in study["rows"])  # n / |sum of n unit steps| >= 1
    assert summary["lss_first"] == rows["resnet"][0]["lss"] and summary["lss_last"] == rows["resnet"][-1]["lss"]
    assert summary["lss_accuracy_spearman"] == pytest.approx(line_shape.spearman(
        [r["lss"] for r in rows["resnet"]], [r["train_accuracy"] for r in rows["resnet"]]))
    kept = {arm: next(r["lss"] for r in rows[arm] if r["kept"]) for arm in rows}
    assert summary["lss_resnet"] == pytest.approx(kept["resnet"]) and summary["lss_plain"] == pytest.approx(
        kept["plain"])
    assert summary["lss_plain_minus_resnet"] == pytest.approx(summary["lss_plain"] - summary["lss_resnet"])
    assert (tmp_path / "l" / "line-shape" / "digits.png").is_file()


def test_the_plain_arm_keeps_lambda_at_one_and_drops_the_identity() -> None:
    plain = line_shape.build("plain", get_task("digits"), 0, torch.device("cpu"), {"width": 8, "depth": 3})
    residual = copy.deepcopy(plain)
    for name, p in residual.named_parameters():
        if name.endswith("lam"):
            p.data.zero_()  # lambda = 0: the same blocks with the identity path, x + f(x)
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():  # one Euler step of size 1: plain x + (-x + f(x)) = f(x), residual x + f(x)
        steps = [model.blocks[0].func(0.0, x, (0.0, 1.0)) for model in (plain, residual)]
    torch.testing.assert_close((x + steps[1]) - (x + steps[0]), x)
    assert not any(p.requires_grad for n, p in plain.named_parameters() if n.endswith("lam"))
    assert all(p.requires_grad for n, p in plain.named_parameters() if not n.endswith("lam"))
    with pytest.raises(ValueError, match="no In-ResNet lambda"):
        line_shape.freeze_lambda(zoo.create_model("resnet", input_shape=(2,), num_classes=2, width=4, depth=2))


def test_inresnet_init_study_writes_every_range_and_the_end_to_end_effects(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=1, batch_size=32, lr=5e-3))
    ends = (inresnet_init.INITS[0], inresnet_init.INITS[-1])
    path = inresnet_init.run("digits", [0, 1], tmp_path, limit=120, inits=ends, size={"width": 8, "depth": 3})
    study = read_study(path)
    values = {k: v["values"] for k, v in study["summary"].items()}
    assert set(values) == {f"{r}/{m}" for r in ("0-0.1", "0.3-0.4") for m in ("accuracy", "pgd", "noise")} | {
        "accuracy_drop", "pgd_gain"}
    for i in range(2):
        assert values["accuracy_drop"][i] == values["0-0.1/accuracy"][i] - values["0.3-0.4/accuracy"][i]
        assert values["pgd_gain"][i] == values["0.3-0.4/pgd"][i] - values["0-0.1/pgd"][i]
        for init in ("0-0.1", "0.3-0.4"):  # the test split is within the attack subset here: PGD <= clean
            assert values[f"{init}/pgd"][i] <= values[f"{init}/accuracy"][i]
    plotted = {(r["metric"], r["lambda_init_mid"]) for r in study["rows"] if r["plotted"]}
    assert plotted == {(m, x) for m in ("accuracy", "pgd") for x in (0.05, 0.35)}
    with pytest.raises(ValueError, match="end-to-end effects need"):
        inresnet_init.run("digits", [0], tmp_path, limit=120, inits=((0.1, 0.2),))


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seeds (talks) are not beside this checkout")
def test_the_quoted_seed_rows_are_verbatim() -> None:
    lines = {p.name[:3]: p.read_text(encoding="utf-8").splitlines() for p in SEEDS.glob("*.txt")}
    for where, text in inresnet_init.PAPER["rows"].items():
        seed, line = where.split(":")
        assert lines[seed][int(line) - 1] == text, where
    for key in ("002:385", "002:387"):
        assert line_shape.PAPER["definition"].count(key) == 1

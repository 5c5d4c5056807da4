"""leaderboards/claims.md and .csv: each paper claim of benchmarks/reporting/paper_claims.py with our numbers and a
verdict computed by the rule of the same key, from study files (results/<study>/<task>.json) and tier records.

Verdicts: reproduced / not reproduced / partly / awaiting data. A verdict needs evidence of a stated tier with at
least `MIN_SEEDS` seeds; pipeline-check tiers (smoke) never give one: their numbers may be shown, labelled as not
for citing, and the verdict stays "awaiting data", naming the command that produces the evidence.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.protocols import tier_citable, tier_rank
from benchmarks.reporting.paper_claims import CLAIMS, PaperClaim
from benchmarks.store.records import iter_records
from benchmarks.store.studies import find_studies

REPRODUCED, NOT_REPRODUCED, PARTLY, AWAITING = "reproduced", "not reproduced", "partly", "awaiting data"
MIN_SEEDS = 3
ACCURACY_TOLERANCE = 0.01  # fractions: "about the same accuracy" / "a small drop" = at most 1 point
TIME_SAVING = 0.9  # refinement "saves time" when it trains in at most 0.9 x the full-depth time
SPEEDUP = 1.1  # compression is "faster" from a 1.1 x latency speed-up
O1_MEMORY = 0.1  # adjoint memory is "O(1)" when its peak grows per step by <= 0.1 x the direct method's growth
PGD_GAIN = 0.10  # claim (f): a "large" PGD gain is >= 10 points ...
CLEAN_COST = 0.03  # ... for at most 3 points of clean accuracy (the paper: 1.3 points for 26 points)


@dataclass(frozen=True)
class Outcome:
    verdict: str
    ours: str
    note: str = ""
    figure: str | None = None
    n: int | None = None
    tier: str | None = None


class MissingData(Exception):
    """Evidence that is absent or too thin for a verdict; its message says what to run."""


def combine(verdicts: list[str]) -> str:
    """One verdict from the components of a claim: awaiting parts make a reproduced claim 'partly' (said in notes)."""
    known = [v for v in verdicts if v != AWAITING]
    if not known:
        return AWAITING
    if all(v == REPRODUCED for v in known):
        return REPRODUCED if len(known) == len(verdicts) else PARTLY
    if all(v == NOT_REPRODUCED for v in known):
        return NOT_REPRODUCED
    return PARTLY


def by_count(passed: int, total: int) -> str:
    return REPRODUCED if passed == total else NOT_REPRODUCED if passed == 0 else PARTLY


def citable(tier: str) -> bool:
    return tier_citable(tier)


def _rank(tier: str) -> int:
    return tier_rank(tier)


class Evidence:
    """The study files and records under one results root, read once."""

    def __init__(self, results_root: Path) -> None:
        self.root = Path(results_root)
        self._studies: dict[str, list[dict[str, Any]]] = {}
        self._records: dict[tuple[str, str, str], dict[str, dict[str, list[float]]]] | None = None

    def studies(self, name: str) -> list[dict[str, Any]]:
        if name not in self._studies:
            self._studies[name] = find_studies(self.root, name)
        return self._studies[name]

    def study(self, name: str, command: str) -> dict[str, Any]:
        """The most citable file of a study (tier, then seeds); MissingData if none or too few seeds."""
        found = sorted(self.studies(name), key=lambda s: (_rank(s["tier"]), -len(s["seeds"]), s["task"]))
        if not found:
            raise MissingData(f"no {name} study under {self.root}/{name}/; run `{command}`")
        best = found[0]
        if not citable(best["tier"]):
            raise MissingData(f"{name} study of tier {best['tier']} only (pipeline check); run `{command}`")
        if len(best["seeds"]) < MIN_SEEDS:
            raise MissingData(f"{name} study on {best['task']} has {len(best['seeds'])} seeds (< {MIN_SEEDS})")
        return best

    def records(self) -> dict[tuple[str, str, str], dict[str, dict[str, list[float]]]]:
        """(task, tier, protocol hash) -> model -> metric -> per-seed values, successful records only."""
        if self._records is None:
            out: dict[tuple[str, str, str], dict[str, dict[str, list[float]]]] = defaultdict(
                lambda: defaultdict(lambda: defaultdict(list)))
            for _, rec in iter_records(self.root):
                if rec.status != "ok":
                    continue
                key = (rec.task, str(rec.protocol.get("name")), str(rec.protocol.get("hash")))
                for metric, value in rec.metrics.items():
                    if isinstance(value, int | float) and math.isfinite(value):
                        out[key][rec.model][metric].append(float(value))
            self._records = out
        return self._records


def q(study: dict[str, Any], key: str) -> tuple[float, float, int]:
    """(mean, std, n) of a summary quantity; MissingData naming the file's study and the key if absent."""
    value = study["summary"].get(key)
    if value is None:
        raise MissingData(f"{study['study']}/{study['task']}.json has no summary {key!r}; rerun its command")
    return float(value["mean"]), float(value["std"]), int(value["n"])


def pm(value: tuple[float, float, int], scale: float = 1.0, digits: int = 1) -> str:
    return f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"


def _where(study: dict[str, Any]) -> str:
    return f"{study['task']}, {study['tier']}, n={len(study['seeds'])}"


def _figure(study: dict[str, Any], results_root: Path) -> str:
    """The study's figure; else its table in leaderboards/ (a study without a plot); else the study file."""
    if study.get("figure"):
        return study["figure"]
    table = Path("leaderboards") / study["study"] / f"{study['task']}.md"
    if (Path(results_root).parent / table).is_file():
        return str(table)
    return f"{Path(results_root).as_posix().rstrip('/')}/{study['study']}/{study['task']}.json"


# ------------------------------------------------------------------------------------------------- the rules


def _image_text(study: dict[str, Any]) -> str:
    cn, rn = q(study, "continuousnet/transfers"), q(study, "resnet/dip")
    return (f"continuousnet transfers in {round(cn[0] * cn[2])}/{cn[2]} seeds, resnet dips in "
            f"{round(rn[0] * rn[2])}/{rn[2]}")


def _orders(conv: dict[str, Any]) -> str:
    found = [(s, conv["summary"].get(f"rk4/{s}/order")) for s in ("euler", "midpoint", "rk4")]
    return ", ".join(f"{s} {v['mean']:.2f} ± {v['std']:.2f}" if v else f"{s} n/a (below its fitting floor)"
                     for s, v in found)


def rule_a(ev: Evidence) -> Outcome:
    parts, ours, notes, figure, n, tier = [], [], [], None, None, None
    try:
        conv = ev.study("convergence", "depthbench convergence")
        euler = q(conv, "euler/euler/dip")
        rk4 = [q(conv, f"rk4/{s}/dip") for s in ("euler", "midpoint", "rk4")]
        refine = q(conv, "rk4/rk4/refine_ratio")
        dips, transfers = euler[0] > 0.5, all(d[0] < 0.5 for d in rk4) and refine[0] <= 1.03
        parts.append(REPRODUCED if dips and transfers else NOT_REPRODUCED if not (dips or transfers) else PARTLY)
        ratio = q(conv, "euler/euler/dip_ratio")
        ours.append(f"convergence test ({_where(conv)}): Euler-trained dips in {round(euler[0] * euler[2])}/{euler[2]} "
                    f"seeds (error ×{pm(ratio, digits=0)} at Δt/4); RK4-trained: dips in "
                    f"{round(sum(d[0] * d[2] for d in rk4))}/{sum(d[2] for d in rk4)} (seed, scheme) pairs, "
                    f"RMSE at Δt/16 / at training Δt = {pm(refine, digits=3)}; observed order per eval scheme: "
                    f"{_orders(conv)}")
        figure, n, tier = _figure(conv, ev.root), len(conv["seeds"]), conv["tier"]
    except MissingData as missing:
        parts.append(AWAITING)
        notes.append(f"pendulum: {missing}")
    image = [s for s in ev.studies("depth-transfer") if citable(s["tier"]) and len(s["seeds"]) >= MIN_SEEDS]
    if not image:
        parts.append(AWAITING)
        tiers = sorted({s["tier"] for s in ev.studies("depth-transfer")})
        notes.append("image tasks: awaiting data (depth-transfer studies " + (
            f"of tier {', '.join(tiers)} only, a pipeline check or < {MIN_SEEDS} seeds" if tiers else "absent")
            + "; run `depthbench run --tier standard` on a GPU, then `depthbench claims`)")
        for study in ev.studies("depth-transfer"):  # shown, never judged
            try:
                text = _image_text(study)
            except MissingData:
                continue
            notes.append(f"pipeline check only ({study['tier']} tier, {study['task']}, n={len(study['seeds'])}, "
                         f"not for citing): {text}")
    for study in image:
        try:
            cn, rn = q(study, "continuousnet/transfers"), q(study, "resnet/dip")
        except MissingData as missing:
            parts.append(AWAITING)
            notes.append(str(missing))
            continue
        parts.append(by_count((cn[0] > 0.5) + (rn[0] > 0.5), 2))
        ours.append(f"{study['task']} ({study['tier']}, n={len(study['seeds'])}): {_image_text(study)}")
        figure = figure or _figure(study, ev.root)
    return Outcome(combine(parts), "; ".join(ours) or "—", "; ".join(notes), figure, n, tier)


def rule_b(ev: Evidence) -> Outcome:
    s = ev.study("compression", "depthbench study compression")
    trained, compressed, speed = q(s, "trained_accuracy"), q(s, "compressed_accuracy"), q(s, "latency_speedup")
    drop = trained[0] - compressed[0]
    faster = speed[0] >= SPEEDUP
    verdict = NOT_REPRODUCED if not faster else REPRODUCED if drop <= ACCURACY_TOLERANCE else PARTLY
    ours = (f"{_where(s)}: latency ×{pm(speed, digits=2)} faster, accuracy {pm(trained, 100)} → "
            f"{pm(compressed, 100)} % ({100 * drop:+.2f} pt drop)")
    return Outcome(verdict, ours, f"faster = speed-up ≥ {SPEEDUP:g}; small drop = ≤ {100 * ACCURACY_TOLERANCE:g} pt",
                   _figure(s, ev.root), len(s["seeds"]), s["tier"])


def rule_c(ev: Evidence) -> Outcome:
    s = ev.study("refinement", "depthbench study refinement")
    ref_acc, full_acc = q(s, "refined_accuracy"), q(s, "full_accuracy")
    ref_t, full_t = q(s, "refined_train_seconds"), q(s, "full_train_seconds")
    saves, same = ref_t[0] <= TIME_SAVING * full_t[0], full_acc[0] - ref_acc[0] <= ACCURACY_TOLERANCE
    verdict = NOT_REPRODUCED if not saves else REPRODUCED if same else PARTLY
    ours = (f"{_where(s)}: training {pm(ref_t)} s refined vs {pm(full_t)} s full depth; accuracy "
            f"{pm(ref_acc, 100)} vs {pm(full_acc, 100)} %")
    note = (f"saves time = ≤ {TIME_SAVING:g} × the full-depth time; same accuracy = within "
            f"{100 * ACCURACY_TOLERANCE:g} pt" + ("" if same or not saves else "; time saved, accuracy lost"))
    return Outcome(verdict, ours, note, _figure(s, ev.root), len(s["seeds"]), s["tier"])


def rule_d(ev: Evidence) -> Outcome:
    s = ev.study("memory", "depthbench study memory")
    direct, adjoint = q(s, "direct_peak_bytes_slope"), q(s, "adjoint_peak_bytes_slope")
    op, rp = q(s, "odenet_params"), q(s, "resnet_params")
    oa, ra = q(s, "odenet_accuracy"), q(s, "resnet_accuracy")
    checks = {"fewer parameters": op[0] < rp[0], "accuracy within 1 pt": oa[0] >= ra[0] - ACCURACY_TOLERANCE,
              "O(1) adjoint memory": direct[0] > 0 and adjoint[0] <= O1_MEMORY * direct[0]}
    ours = (f"{_where(s)}: params {op[0]:,.0f} (ODE-Net) vs {rp[0]:,.0f} (ResNet); accuracy {pm(oa, 100)} vs "
            f"{pm(ra, 100)} %; peak memory per extra step {pm(adjoint, 1e-3)} kB (adjoint) vs {pm(direct, 1e-3)} kB "
            "(direct)")
    failed = [name for name, ok in checks.items() if not ok]
    return Outcome(by_count(sum(checks.values()), len(checks)), ours,
                   ("not met: " + ", ".join(failed)) if failed else "all three parts met", _figure(s, ev.root),
                   len(s["seeds"]), s["tier"])


PIPELINE_TASKS = ("digits",)  # the smoke tier's image task: its numbers are shown, never judged


def _pick_records(ev: Evidence, tasks: tuple[str, ...], models: tuple[str, str]
                  ) -> tuple[tuple[str, str, str] | None, tuple[str, str, str] | None]:
    """(the most citable protocol with >= MIN_SEEDS of both models among `tasks`, the first pipeline-check one)."""
    both = [(k, m) for k, m in ev.records().items() if all(x in m for x in models)]
    good = sorted((k for k, m in both if k[0] in tasks and citable(k[1])
                   and min(len(m[x]["accuracy"]) for x in models) >= MIN_SEEDS),
                  key=lambda k: (_rank(k[1]), tasks.index(k[0])))
    smoke = sorted(k for k, _ in both if not citable(k[1]) and k[0] in tasks + PIPELINE_TASKS)
    return (good[0] if good else None), (smoke[0] if smoke else None)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _eps(metric: str) -> float:
    return float(metric.split("@", 1)[1])


def _pipeline_note(ev: Evidence, key: tuple[str, str, str] | None, text: Callable[[dict[str, Any]], str]) -> str:
    if key is None:
        return ""
    return f"pipeline check only ({key[1]} tier, {key[0]}, n=1, not for citing): {text(ev.records()[key])}"


def rule_e(ev: Evidence) -> Outcome:
    models = ("neural-ode", "resnet")
    good, smoke = _pick_records(ev, ("mnist", "fashion-mnist", "cifar10", "cifar10-jpeg"), models)

    def compare(m: dict[str, Any]) -> tuple[int, int, str]:
        metrics = sorted({k for k in m["neural-ode"] if k.split("@")[0] in ("noise", "fgsm") and k in m["resnet"]})
        wins = sum(_mean(m["neural-ode"][k]) > _mean(m["resnet"][k]) for k in metrics)
        text = ", ".join(f"{k} {100 * _mean(m['neural-ode'][k]):.1f} vs {100 * _mean(m['resnet'][k]):.1f}"
                         for k in metrics)
        return wins, len(metrics), f"ODE-Net vs ResNet accuracy (%): {text}"

    if good is None:
        note = _pipeline_note(ev, smoke, lambda m: compare(m)[2])
        raise MissingData("no standard/paper-tier records of neural-ode and resnet on an MNIST/CIFAR-scale task "
                          f"(>= {MIN_SEEDS} seeds); run `depthbench run --tier standard` on a GPU"
                          + (f". {note}" if note else ""))
    m = ev.records()[good]
    wins, total, text = compare(m)
    if total == 0:
        raise MissingData(f"{good[0]} ({good[1]}) records hold no noise@/fgsm@ metrics")
    n = min(len(m[x]["accuracy"]) for x in models)
    return Outcome(by_count(wins, total), f"{good[0]} ({good[1]}, n={n}): {text}",
                   f"ODE-Net ahead in {wins}/{total} noise/FGSM settings", None, n, good[1])


def rule_f(ev: Evidence) -> Outcome:
    models = ("inresnet", "resnet")
    good, smoke = _pick_records(ev, ("cifar10", "cifar10-jpeg"), models)

    def numbers(m: dict[str, Any]) -> tuple[float, float, str]:
        pgd = [k for k in m["inresnet"] if k.startswith("pgd@") and k in m["resnet"]]
        if not pgd:
            raise MissingData("records hold no pgd@ metric")
        key = min(pgd, key=lambda k: abs(_eps(k) - 8 / 255))  # the paper's ε = 8/255, or the nearest recorded
        a_in, a_res = _mean(m["inresnet"]["accuracy"]), _mean(m["resnet"]["accuracy"])
        p_in, p_res = _mean(m["inresnet"][key]), _mean(m["resnet"][key])
        text = (f"clean {100 * a_res:.2f} (ResNet) vs {100 * a_in:.2f} (In-ResNet); {key} {100 * p_res:.2f} vs "
                f"{100 * p_in:.2f}")
        return a_res - a_in, p_in - p_res, text

    if good is None:
        note = _pipeline_note(ev, smoke, lambda m: numbers(m)[2])
        raise MissingData(f"no standard/paper-tier CIFAR-10 records of inresnet and resnet (>= {MIN_SEEDS} seeds); "
                          "run `depthbench run --tier standard` on a GPU" + (f". {note}" if note else ""))
    m = ev.records()[good]
    cost, gain, text = numbers(m)
    verdict = NOT_REPRODUCED if gain <= 0 else REPRODUCED if gain >= PGD_GAIN and cost <= CLEAN_COST else PARTLY
    n = min(len(m[x]["accuracy"]) for x in models)
    return Outcome(verdict, f"{good[0]} ({good[1]}, n={n}): {text} %",
                   f"large gain = ≥ {100 * PGD_GAIN:g} pt PGD for ≤ {100 * CLEAN_COST:g} pt clean", None, n, good[1])


def rule_g(ev: Evidence) -> Outcome:
    s = ev.study("stiffness", "depthbench study stiffness")
    acc, pacc = q(s, "plain_accuracy"), q(s, "penalised_accuracy")
    stiff, pstiff = q(s, "plain_stiffness"), q(s, "penalised_stiffness")
    rob, prob = q(s, "plain_robust_accuracy"), q(s, "penalised_robust_accuracy")
    terr, pterr = q(s, "plain_transfer_error"), q(s, "penalised_transfer_error")
    lower = pstiff[0] < stiff[0]
    keeps = pacc[0] >= acc[0] - ACCURACY_TOLERANCE
    helps = prob[0] > rob[0] or pterr[0] < terr[0]
    verdict = NOT_REPRODUCED if not lower else REPRODUCED if keeps and helps else PARTLY
    ours = (f"{_where(s)}: stiffness {pm(stiff, digits=2)} → {pm(pstiff, digits=2)}; accuracy {pm(acc, 100)} → "
            f"{pm(pacc, 100)} %; robust {pm(rob, 100)} → {pm(prob, 100)} %; transfer error "
            f"{pm(terr, digits=3)} → {pm(pterr, digits=3)} (plain → penalised)")
    note = ", ".join(name for name, ok in (("stiffness lowered", lower), ("accuracy kept", keeps),
                                           ("robustness or transfer helped", helps)) if not ok)
    return Outcome(verdict, ours, ("not met: " + note) if note else "all parts met", _figure(s, ev.root),
                   len(s["seeds"]), s["tier"])


RULES: dict[str, Callable[[Evidence], Outcome]] = {"a": rule_a, "b": rule_b, "c": rule_c, "d": rule_d, "e": rule_e,
                                                   "f": rule_f, "g": rule_g}


def evaluate(results_root: Path) -> list[tuple[PaperClaim, Outcome]]:
    ev = Evidence(results_root)
    out = []
    for claim in CLAIMS:
        try:
            outcome = RULES[claim.key](ev)
        except MissingData as missing:
            outcome = Outcome(AWAITING, "—", str(missing))
        out.append((claim, outcome))
    return out


# ------------------------------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _link(figure: str | None, out_dir: Path) -> str:
    if not figure:
        return "—"
    target = figure if os.path.isabs(figure) else os.path.relpath(figure, out_dir)  # paths from the repo root
    return f"[{Path(figure).name}]({target.replace(os.sep, '/')})"


def markdown(results: list[tuple[PaperClaim, Outcome]], out_dir: Path) -> str:
    lines = [
        "# The papers' claims, checked",
        "",
        "<!-- generated by `depthbench claims` (benchmarks/reporting/claims_board.py) from results/ (study files and "
        "records); edits are overwritten -->",
        "",
        f"Each row: a claim of a paper, the number the paper states, ours (mean ± std over n seeds, with the tier of "
        f"the evidence) and a verdict computed by the rule in `benchmarks/reporting/claims_board.py`. A verdict needs "
        f"evidence of a stated tier with at least {MIN_SEEDS} seeds; pipeline-check (smoke) numbers are shown only as "
        "such and never decide. A claim with parts still awaiting data is at most 'partly' (the notes say which).",
        "",
        "| | claim | paper | paper's number | ours | verdict | notes | figure |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim, o in results:
        paper = f"[{claim.paper}]({claim.url})" + (f" (arXiv {claim.arxiv})" if claim.arxiv else "")
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"({claim.key})", claim.claim, paper, claim.paper_number, o.ours, f"**{o.verdict}**",
            o.note + (f" (evidence: {claim.evidence})" if o.verdict == AWAITING else ""),
            _link(o.figure, out_dir))) + " |")
    return "\n".join(lines) + "\n"


def csv_text(results: list[tuple[PaperClaim, Outcome]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "claim", "paper", "arxiv", "paper_number", "ours", "n", "tier", "verdict", "notes",
                     "figure", "command"])
    for c, o in results:
        writer.writerow([c.key, c.claim, c.paper, c.arxiv, c.paper_number, o.ours, "" if o.n is None else o.n,
                         o.tier or "", o.verdict, o.note, o.figure or "", c.command])
    return out.getvalue()

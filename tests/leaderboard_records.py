"""Synthetic records and a rendered site, shared by the tests that check the leaderboard (test_leaderboard.py,
test_outputs.py): resnet with 3 seeds, node with 2 OK + 1 failed, hostile card text, a regression task under another
protocol."""

from __future__ import annotations

from pathlib import Path

from benchmarks.reporting.leaderboard import write_leaderboards
from benchmarks.store.records import Record, save_record

STANDARD = {"name": "standard", "version": 2, "hash": "3f2a9c1d0b7e"}
SMOKE = {"name": "smoke", "version": 1, "hash": "aaaabbbbcccc"}
PACKAGES = {"torch": "2.4.1", "torchdiffeq": "0.2.4", "torchattacks": "3.5.1"}
EVIL = "<script>alert(1)</script>"


def _card(key: str, title: str, url: str) -> dict:
    return {"name": key, "family": "ode", "title": title, "authors": "Ada Lovelace and Alan Turing", "year": 2018,
            "arxiv": "1806.07366", "url": url, "bibkey": key,
            "bibtex": f"@inproceedings{{{key},\n  title = {{{title}}},\n  year = {{2018}}\n}}"}


def _transfer(seed: int) -> list[dict]:
    out = [{"scheme": s, "n_steps": n, "dt": 1 / n, "nfe": n * p, "accuracy": 0.9 - (1 / n) ** p, "latency_ms": n,
            "trained": s == "rk4" and n == 4} for s, p in (("euler", 1), ("rk4", 4)) for n in (2, 4, 8)]
    return out + [{"scheme": "dopri5", "n_steps": None, "dt": None, "rtol": 1e-3, "nfe": 26, "accuracy": 0.9,
                   "latency_ms": 3.0, "trained": False}]


def _record(model: str, seed: int, metrics: dict, card: dict, task: str = "digits", protocol: dict = STANDARD,
            **extra) -> Record:
    prov = {"git_commit": "0123456789abcdef" * 2 + "01234567", "git_dirty": False, "device": "NVIDIA H100 80GB",
            "started": f"2025-03-0{seed + 1}T08:00:00+00:00", "finished": f"2025-03-0{seed + 1}T09:30:00+00:00",
            "packages": PACKAGES, "command": "depthbench run", "host": "h", "python": "3.11"}
    profile = [{"stage": 0, "t": t, "t0": 0.0, "t1": 3.0, "h": 1.0, "sigma": 1.0 + t + seed} for t in (0.0, 1.0, 2.0)]
    return Record(model=model, task=task, seed=seed, protocol=protocol, metrics=metrics, card=card, provenance=prov,
                  depth_transfer=_transfer(seed), trajectory=profile if task == "digits" else [], **extra)


def make_records(root: Path) -> Path:
    """resnet 3 seeds, node 2 OK + 1 failed, a hostile card, and a regression task under another protocol."""
    node_card = _card("chen2018neural", "Neural Ordinary Differential Equations", "https://arxiv.org/abs/1806.07366")
    resnet_card = _card("he2016deep", "Deep Residual Learning", "https://arxiv.org/abs/1512.03385")
    for seed, acc in enumerate((0.90, 0.92, 0.94)):
        metrics = {"accuracy": acc, "fgsm@0.1": 0.5, "fgsm@0.03": 0.7, "pgd@0.1": 0.3, "latency_ms": 1.0 + seed,
                   "nfe": 4, "robust@0.1": 0.25, "robust_ci_low@0.1": 0.2, "robust_ci_high@0.1": 0.3,
                   "robust@0.03": 0.6, "robust_ci_low@0.03": 0.55, "robust_ci_high@0.03": 0.65}
        metrics.update({"params": 12345} if seed < 2 else {})  # a metric missing in one seed: marked (n=2)
        save_record(root, _record("resnet", seed, metrics, resnet_card))
    for seed, acc in enumerate((0.80, 0.84)):
        save_record(root, _record("node", seed, {"accuracy": acc, "latency_ms": 0.5, "nfe": 20, "fgsm@0.1": 0.4,
                                                 "robust@0.1": 0.35}, node_card,
                                  flags=["unreliable", "unreliable:vanishing-input-gradients"]))
    save_record(root, _record("node", 2, {"accuracy": 0.99}, node_card, status="failed", error="nan loss at epoch 3"))
    # a second model citing the same paper (BibTeX dedup) with hostile text everywhere it can put text
    save_record(root, _record("anode", 0, {"accuracy": 0.70, "nfe": 30, "latency_ms": 5.0},
                              dict(_card("chen2018neural", EVIL, "https://example.org/?q=<b>"), name=EVIL),
                              flags=[EVIL]))
    save_record(root, _record("evil", 0, {}, _card("x", "t", "javascript:alert(1)"), status="failed", error=EVIL))
    for seed, mse in enumerate((0.010, 0.030)):
        save_record(root, _record("node", seed, {"test_mse": mse, "nfe": 12}, node_card, task="spiral", protocol=SMOKE))
    save_record(root, _record("resnet", 0, {"test_mse": 0.005}, resnet_card, task="spiral", protocol=SMOKE))
    return root


def build(base: Path) -> Path:
    make_records(base / "records")
    (base / "README.md").write_text("# demo\n\nintro\n<!-- leaderboard:start -->\nstale\n<!-- leaderboard:end -->\n"
                                    "outro\n", encoding="utf-8")
    write_leaderboards(base / "records", base / "leaderboards", base / "README.md", base / "CITATION.cff")
    return base

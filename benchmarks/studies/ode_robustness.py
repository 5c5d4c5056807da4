"""Yan et al.'s robustness of ODE-Nets against parameter-matched CNNs (seed 002:134-155), on the seed's grid.

The seed: "Made sure that the number of parameters of an ODENet is close to that of its counterpart CNN model"
(002:139), "Same training strategy (learning rate, epochs, ...)" (002:140); on MNIST, Gaussian noise of sigma 50, 75,
100 (0-255 pixels) and FGSM at 0.15, 0.3, 0.5; "ODE-Nets outperform CNN trained on non-perturbed images!" (002:155).
The arms are the cpu tier's `resnet` (the CNN counterpart, 22,762 parameters) and `neural-ode` (21,090: matched by
the zoo's construction), trained with the tier's recipe (its kept weights with `--checkpoints`, else trained here
exactly as the tier does), the same seed. On the whole test set: accuracy under Gaussian noise sigma/255 for sigma in
`SIGMAS` (clamped to [0, 1]; one draw per seed, the same for both arms and every sigma, `noise_robustness`) and under
FGSM at `FGSM_EPS` (the suite's FGSM alone, `attacks.attack_accuracy`: torchattacks on the exact inference model; the
ODE-Net through its dopri5 solver by direct backpropagation). Per seed: f"noise{s}_difference" and
f"fgsm{e:g}_difference" (ODE-Net - CNN), each arm's accuracies (`cnn_noise50`, `odenet_fgsm0.3`, ...) and clean
accuracy (`cnn_accuracy`, `odenet_accuracy`). The task is Fashion-MNIST, not the seed's MNIST.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.evaluation.attacks import attack_accuracy
from benchmarks.evaluation.metrics import eps_key, evaluate, noise_robustness
from benchmarks.protocols import CPU, Protocol
from benchmarks.studies.common import check_seeds, load, provenance, save, trained_model
from benchmarks.studies.registry import register_study

STUDY = "ode-robustness"
ARMS = {"cnn": "resnet", "odenet": "neural-ode"}
SIGMAS = (50, 75, 100)  # on 0-255 pixels, as the seed's MNIST row
FGSM_EPS = (0.15, 0.3, 0.5)
_ROWS = {  # the seed's MNIST rows, verbatim
    "002:144": "\tGaussian noise\t\t\tAdversarial attack\t\t",
    "002:145": "MNIST\t$\\sigma = 50$\t$\\sigma = 75$\t$\\sigma = 100$\tFGSM-0.15\tFGSM-0.3\tFGSM-0.5",
    "002:146": "CNN\t98.1 \\pm 0.7\t85.8 \\pm 4.3\t56.4 \\pm 5.6\t63.4 \\pm 2.3\t24.0 \\pm 8.9\t8.3 \\pm 3.2",
    "002:147": "ODENet\t98.7\\pm0.6\t90.6\\pm5.4\t73.2\\pm8.6\t83.5\\pm0.9\t42.1\\pm2.4\t14.3\\pm2.1",
    "002:155": "ODE-Nets outperform CNN trained on non-perturbed images!",
}
_CNN = ("98.1 ± 0.7", "85.8 ± 4.3", "56.4 ± 5.6", "63.4 ± 2.3", "24.0 ± 8.9", "8.3 ± 3.2")
_ODE = ("98.7 ± 0.6", "90.6 ± 5.4", "73.2 ± 8.6", "83.5 ± 0.9", "42.1 ± 2.4", "14.3 ± 2.1")
_KEYS = tuple(f"noise{s}" for s in SIGMAS) + tuple(f"fgsm{e:g}" for e in FGSM_EPS)
PAPER = {"label": "Yan et al. (seed 002:144-147; MNIST, %)", "rows": _ROWS,
         **{f"cnn_{k}": v for k, v in zip(_KEYS, _CNN)}, **{f"odenet_{k}": v for k, v in zip(_KEYS, _ODE)},
         **{f"{k}_difference": f"{float(o.split()[0]) - float(c.split()[0]):.1f}"
            for k, c, o in zip(_KEYS, _CNN, _ODE)}}


def robustness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, noise_seed: int, batch_size: int,
               ev: Any) -> dict[str, float]:
    """Clean accuracy, mean NFE, and accuracy under every noise sigma and FGSM radius of the grid, on all of x."""
    clean, nfe = evaluate(model, x, y, kind="classification", batch_size=batch_size)
    noise = noise_robustness(model, x, y, sigmas=[s / 255 for s in SIGMAS], batch_size=batch_size, seed=noise_seed)
    out: dict[str, Any] = {"accuracy": clean, "nfe": nfe}
    out.update({f"noise{s}": noise[f"noise@{eps_key(s / 255)}"] for s in SIGMAS})
    for eps in FGSM_EPS:
        out[f"fgsm{eps:g}"] = attack_accuracy(model, x, y, attack="fgsm", eps=eps, ev=ev, batch_size=batch_size)
    return out


@register_study("ode-robustness", title="Robustness of ODE-Nets against a parameter-matched CNN (Yan et al.)",
                summary="the cpu tier's resnet and neural-ode (parameter-matched) under Gaussian noise sigma "
                "50/75/100 (of 255) and FGSM 0.15/0.3/0.5 on the whole test set", claims=("yan-robustness",),
                task="fashion-mnist", seeds=(0, 1, 2), options=("checkpoints",))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, checkpoints: Path | None = None,
        tier: Protocol = CPU) -> Path:
    """Both arms of every seed (kept weights or trained), measured on the grid; write
    `results/ode-robustness/<task>.json`."""
    clock = time.perf_counter()
    seeds = check_seeds(seeds)
    device = device or torch.device("cpu")
    started = provenance(device)
    task, data = load(task_name, tier.data_limit if limit is None else limit)  # the tier's data, as its runs
    ev = tier.evaluation
    x, y = data.test.inputs().to(device), data.test.y.to(device)
    per_seed: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []
    params = {}
    for seed in seeds:
        measured = {}
        for arm, name in ARMS.items():
            model, source = trained_model(name, tier, task, data, seed, device, checkpoints)
            params[arm] = zoo.count_params(model)
            tick = time.perf_counter()
            measured[arm] = robustness(model, x, y, noise_seed=seed, batch_size=ev.eval_batch, ev=ev)
            rows.append({"arm": arm, "model": name, "seed": seed, "params": params[arm], **measured[arm],
                         "measure_seconds": round(time.perf_counter() - tick, 1), "weights": source})
            for key in ("accuracy", *_KEYS):
                per_seed.setdefault(f"{arm}_{key}", []).append(measured[arm][key])
        for key in _KEYS:
            per_seed.setdefault(f"{key}_difference", []).append(measured["odenet"][key] - measured["cnn"][key])
    details = {"columns": ["arm", "model", "seed", "params", "accuracy", *_KEYS, "nfe", "measure_seconds", "weights"],
               "tier": tier.name, "tier_hash": tier.task_hash(task.name), "arms": ARMS, "params": params,
               "param_ratio": params["odenet"] / params["cnn"], "sigmas_255": list(SIGMAS),
               "fgsm_eps": list(FGSM_EPS), "test_images": len(y), "paper": PAPER,
               "seconds": round(time.perf_counter() - clock, 1),
               "note": f"{task.name}, not the seed's MNIST; whole test set ({len(y)} images); noise: sigma/255 on "
                       "[0, 1] pixels, clamped, one draw per seed (noise seed = the seed) shared by both arms; FGSM: "
                       "the suite's (torchattacks, on the exact inference model, the ODE-Net by direct "
                       "backpropagation through dopri5), clean errors count as failures; differences are ODE-Net - "
                       "CNN; nfe: the mean rate evaluations per clean forward"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows,
                provenance=started, details=details, figure=figure, tier=tier.name)

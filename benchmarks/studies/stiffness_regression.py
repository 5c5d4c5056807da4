"""Hudson et al.'s stiffness penalty on their own regression task, Alpine 02 (seed 003, the 2022 Sandia LDRD talk).

The seed's model (003:19-23): x_n = x_{n-1} + alpha_n F_n(x_{n-1}), F_n(x) = tanh(W_n x + b_n), alpha_n = T/N with
T = 1 (003:36); width 20, depth N = 10 (003:228-231), plus a linear input layer R^d -> R^20 and a linear read-out
(the seed shows neither; a residual layer needs equal widths). The task (003:214-219): f_A2(x) = prod_i sqrt(|x_i|)
sin(x_i) on [-5, 5]^d as a regression, d = `DIM` = 2 (the seed gives no d; its figure is a surface), 900 training
points in 20 mini-batches of 45, 100 test points (003:233-235), drawn per trial from the trial's seed; Adam, lr 1e-3,
reduce-on-plateau (003:237-239; stepped on the epoch's mean training loss; the seed names no setting). torch's
default patience of 10 epochs mistakes the mini-batch noise for a plateau and cut the learning rate to 1e-8 by epoch
~400, with the plain ResNet's training RMSE at 0.26 (the seed's: 0.00389); `PATIENCE` = 100 lets it fit (0.035 on
trial 0). An arm trains until that schedule has cut the rate to `MIN_LR` (three cuts by 10: the fit no longer moves;
on trial 0 the RMSE changed by 1e-4 after it) or for `EPOCHS` at most; the seed trains 10k epochs.

Arms (003:281-287), the same initialisation and data order per trial:
- `res`: no penalty; `l2`: lambda 1e-5 on the average of the Euclidean/Frobenius norms of all parameters;
- `stiff`: lambda 1e-3 on the stiffness proxy, the spectral radius |lambda_1| of every layer's Jacobian
  J_n = tanh'(W_n x_{n-1} + b_n) W_n (003:187) by Gelfand's formula |lambda_1| ~ ||J^k||^(1/k), k = 2^10 by 10
  squarings with normalisation (003:209-210), summed over layers per sample.
The loss is the seed's "quadratic mean of RMSE and penalty" (003:305-308): sqrt(mean_i(|F(x_i) - y_i|^2 + lambda
p_i^2)), p_i the sample's penalty (the seed's formula writes a sum over the batch; the mean differs by the constant
sqrt(45), which Adam's update does not see, and keeps "quadratic mean" as its text says).

Measured per trial (its "seed"): training and test RMSE (`*_er`, `*_ge`; the seed's 100 test points), the
generalisation error on `N_POPULATION` fresh points (`*_ge_population`, what the claim compares), the seed's
stiffness (003:189-200): the eigenvalue ratio |lambda_1| / |lambda_n| of every layer's Jacobian on every training
point, as the median over layers and points whose Jacobian is not singular (`*_stiffness`; the seed's text sums
them, 003:192, but its Alpine 02 table's "df" of 2.64 for RES (003:242) can only be a per-layer, per-sample scale;
the sum and the mean are kept in the rows, the fraction of singular Jacobians in `*_singular`), the
spectral radius |lambda_1| averaged the same way (`*_radius`: the penalised proxy; the climate table's "stiffness"
column, 0.05 for RES stiff, is below 1 and so cannot be a ratio: it reads as this proxy), wall times, and the ratios
`stiff_ge_ratio`, `l2_ge_ratio` (over `res_ge`) and the same of `*_ge_population`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from benchmarks.studies.common import check_seeds, in_processes, provenance, save, study_clock
from benchmarks.studies.registry import register_study
from benchmarks.training.train import seed_everything

STUDY = "stiffness-regression"
TASK = "alpine02"
DIM, WIDTH, DEPTH, HORIZON = 2, 20, 10, 1.0
N_TRAIN, N_TEST, BATCH = 900, 100, 45
# The generalisation error the seed estimates on 100 test points, estimated on this many fresh points, the same for
# every trial: a trained plain arm's RMSE on the 100 points was 0.048 where on these it is 0.058 (trial 2; by hand on
# 20,000 points, 0.069 against 0.096 for a trial-3 arm), a noise that went into every ratio of two arms.
N_POPULATION = 10_000
# drawn by numpy's PCG64, not torch's mt19937 that draws every trial's data: no trial seed reproduces these points
# (torch keeps 32 bits of a seed, so 2**32 would give trial 0's)
POPULATION_SEED = 2022
LR = 1e-3
PATIENCE = 100  # epochs without a better mean training loss before the rate is cut by 10
MIN_LR = 1e-6  # the plateau: the arm stops once the rate is this low
EPOCHS = 4000  # at most
ARMS = {"res": ("none", 0.0), "l2": ("l2", 1e-5), "stiff": ("stiff", 1e-3)}
SQUARINGS = 10  # k = 2**10 in Gelfand's formula
SATURATED = 1e-6  # a tanh unit whose slope tanh' is below this zeroes its row of J_n: J_n is nearly singular
PAPER = {
    "label": "Hudson et al. (seed 003; Alpine 02: 10k epochs; climate task: 25 trials, medians)",
    "res_er": "0.00389 (Alpine 02, 003:242); 5.4e-03 (climate, 003:313)",
    "res_ge": "0.00613 (Alpine 02, 003:242); 3.9e-02 (climate, 003:313)",
    "l2_er": "1.2e-02 (climate, 003:314)", "l2_ge": "3.7e-02 (climate, 003:314)",
    "stiff_er": "1.2e-02 (climate, 003:315)", "stiff_ge": "3.8e-02 (climate, 003:315)",
    "res_stiffness": "df 2.64 (Alpine 02, 003:242); 3.52 (climate, 003:313)", "l2_stiffness": "2.61 (climate)",
    "stiff_stiffness": "0.05 (climate, 003:315)", "stiff_ge_ratio": "0.97 (3.8e-02 / 3.9e-02, climate)",
    "l2_ge_ratio": "0.95 (3.7e-02 / 3.9e-02, climate)",
    "rows": {
        "003:241": "Model\tER\tGE\tdf\tfrob\tsingular",
        "003:242": "RES\t0.00389\t0.00613\t2.64\t37.5\t25.8",
        "003:312": "Model\tpenalty\tER\tGE\tstiffness\twall time (sec)",
        "003:313": "RES (med)\t0.00\t5.4e-03\t3.9e-02\t3.52\t17903",
        "003:314": "RES L2 (med)\t25.76\t1.2e-02\t3.7e-02\t2.61\t23547",
        "003:315": "RES stiff (med)\t0.05\t1.2e-02\t3.8e-02\t0.05\t1848662",
        "003:327": "Penalization Reduces Generalization Error in Climate Test Case II",
    },
}


def alpine02(x: torch.Tensor) -> torch.Tensor:
    """f_A2(x) = prod_i sqrt(|x_i|) sin(x_i) (003:217), one value per row of x, as a column."""
    return (x.abs().sqrt() * x.sin()).prod(dim=1, keepdim=True)


def population_data(dim: int = DIM, n: int = N_POPULATION) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): `n` fresh points uniform on [-5, 5]^dim, the same for every trial, to estimate the generalisation
    error (the expectation over the domain) that the seed's 100 test points estimate with much more noise."""
    x = torch.from_numpy(np.random.default_rng(POPULATION_SEED).uniform(-5.0, 5.0, (n, dim))).float()
    return x, alpine02(x)


def alpine_data(trial: int, dim: int = DIM, n_train: int = N_TRAIN, n_test: int = N_TEST
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): points uniform on [-5, 5]^dim from the trial's own generator."""
    generator = torch.Generator().manual_seed(trial)
    x = torch.rand(n_train + n_test, dim, generator=generator) * 10.0 - 5.0
    y = alpine02(x)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class AlpineResNet(nn.Module):
    """x_0 = input layer (x); x_n = x_{n-1} + (T/N) tanh(W_n x_{n-1} + b_n), n = 1..N; output layer (x_N)."""

    def __init__(self, dim: int = DIM, width: int = WIDTH, depth: int = DEPTH, horizon: float = HORIZON) -> None:
        super().__init__()
        self.lift = nn.Linear(dim, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.read = nn.Linear(width, 1)
        self.alpha = horizon / depth

    def forward(self, x: torch.Tensor, jacobians: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output, and with `jacobians` every layer's J_n = tanh'(W_n x_{n-1} + b_n) W_n: (batch, N, width, width)."""
        out, slopes = self.trace(x, slopes=jacobians)
        return out, self.jacobians(slopes) if jacobians else None

    def trace(self, x: torch.Tensor, slopes: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output, and with `slopes` tanh'(W_n x_{n-1} + b_n) of every unit of every layer: (batch, N, width)."""
        h, found = self.lift(x), []
        for layer in self.layers:
            a = layer(h).tanh()
            if slopes:
                found.append(1.0 - a**2)
            h = h + self.alpha * a
        return self.read(h), torch.stack(found, dim=1) if slopes else None

    def jacobians(self, slopes: torch.Tensor) -> torch.Tensor:
        """Every layer's J_n from `trace`'s slopes: row i of W_n scaled by unit i's slope, (batch, N, width, width)."""
        return slopes.unsqueeze(-1) * torch.stack([layer.weight for layer in self.layers])


class _GelfandRadius(torch.autograd.Function):
    """||J^k||^(1/k), k = 2**squarings, by squarings that each first divide by the Frobenius norm, with its own
    backward: the scales are constants of the graph (the result is ||J^k||^(1/k) whatever they are; they are added
    back in log space), so the gradient is that of the plain power. Autograd through the loop multiplied by
    transposed, non-contiguous matrices in its backward; here the backward runs on the transposed gradient H = G^T,
    which each squaring pulls back with no transpose (1.2-1.4x faster per penalised step, the same gradient)."""

    @staticmethod
    def forward(ctx: Any, matrices: torch.Tensor, squarings: int) -> torch.Tensor:
        tiny = torch.finfo(matrices.dtype).tiny
        a = matrices.reshape(-1, *matrices.shape[-2:]).contiguous()  # one batch dimension: bmm
        log_scale = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        scaled = []  # a_i / ||a_i||^2: each squaring's factor, and all its backward needs
        for _ in range(squarings):
            norm = torch.linalg.vector_norm(a, dim=(-2, -1)).clamp_min_(tiny)
            log_scale = 2.0 * (log_scale + norm.log())
            scaled.append(a * norm.pow_(-2)[:, None, None])
            a = torch.bmm(scaled[-1], a)  # (a / norm)^2
        final = torch.linalg.vector_norm(a, dim=(-2, -1)).clamp_min_(tiny)
        radius = torch.exp((final.log() + log_scale) / 2**squarings)
        ctx.save_for_backward(a, final, radius, *scaled)
        ctx.shape = matrices.shape
        return radius.reshape(matrices.shape[:-2])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        a, final, radius, *scaled = ctx.saved_tensors
        # d radius / d a_last = radius / (2^s ||a_last||^2) a_last, held transposed; then a_{i+1} = s_i a_i with
        # s_i = a_i / ||a_i||^2 (the norm a constant) pulls H back to s_i H + H s_i
        h = (a * (grad.reshape(-1) * radius / (2 ** len(scaled) * final**2))[:, None, None]).mT.contiguous()
        for factor in reversed(scaled):
            h = torch.bmm(factor, h).baddbmm_(h, factor)
        return h.mT.reshape(ctx.shape), None


def gelfand_radius(matrices: torch.Tensor, squarings: int = SQUARINGS) -> torch.Tensor:
    """Spectral radius of each (..., m, m) matrix by Gelfand's formula ||J^k||^(1/k), k = 2**squarings (003:209-210),
    differentiable: each squaring first divides by the Frobenius norm and keeps the log of the scale, so J^k never
    under- or overflows. Within a factor m^(1/(2k)) of |lambda_1| for normal matrices."""
    return _GelfandRadius.apply(matrices, squarings)


def penalty(model: AlpineResNet, kind: str, jacobians: torch.Tensor | None) -> torch.Tensor:
    """p (per sample for `stiff`): the average parameter norm (`l2`) or the layers' summed spectral radii (`stiff`)."""
    if kind == "l2":
        return torch.stack([p.norm() for p in model.parameters()]).mean()
    if kind == "stiff":
        return gelfand_radius(jacobians).sum(dim=1)
    raise ValueError(f"unknown penalty {kind!r}; known: l2, stiff")


def loss_of(model: AlpineResNet, x: torch.Tensor, y: torch.Tensor, kind: str, weight: float) -> torch.Tensor:
    """The seed's loss (003:305-308): sqrt(mean_i(|F(x_i) - y_i|^2 + lambda p_i^2)); plain RMSE without a penalty."""
    out, jacobians = model(x, jacobians=kind == "stiff")
    squared = (out - y).pow(2).sum(dim=1)
    if kind != "none":
        squared = squared + weight * penalty(model, kind, jacobians).pow(2)
    return squared.mean().sqrt()


@torch.no_grad()
def measure(model: AlpineResNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """RMSE on (x, y), and the eigenvalue stiffness ratio and spectral radius of every layer's Jacobian at every x.

    A Jacobian with a zero eigenvalue (tanh saturated, or a singular weight) has an infinite ratio: `singular` is the
    fraction of such (layer, point) pairs, and the ratio's median (`stiffness`, robust to the heavy tail that the
    seed's medians over trials also avoid), mean and sum (the seed's total stiffness, 003:192) are over the others."""
    # In float64: tanh' = 1 - tanh^2 is exactly 0 in float32 from |z| ~ 9 (a zero eigenvalue, an infinite ratio).
    model = copy.deepcopy(model).double()
    out, slopes = model.trace(x.double())
    jacobians, saturated = model.jacobians(slopes), (slopes < SATURATED).double().mean().item()
    moduli = torch.linalg.eigvals(jacobians).abs()
    largest, smallest = moduli.amax(dim=-1), moduli.amin(dim=-1)
    regular = smallest > 0
    ratio = largest[regular] / smallest[regular]
    ratio = ratio[torch.isfinite(ratio)]
    if ratio.numel() == 0:
        raise RuntimeError(f"{STUDY}: every layer Jacobian is singular at every point: no finite stiffness ratio")
    return {"rmse": (out - y.double()).pow(2).mean().sqrt().item(), "stiffness": ratio.median().item(),
            "stiffness_mean": ratio.mean().item(), "stiffness_sum": ratio.sum().item(),
            "singular": 1.0 - ratio.numel() / largest.numel(), "radius": largest.mean().item(),
            "saturated": saturated}


@torch.no_grad()
def rmse(model: AlpineResNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """RMSE of `model` on (x, y), evaluated in float64 as `measure` does."""
    out = copy.deepcopy(model).double().trace(x.double(), slopes=False)[0]
    return (out - y.double()).pow(2).mean().sqrt().item()


def train_arm(kind: str, weight: float, trial: int, data: tuple[torch.Tensor, ...], epochs: int
              ) -> tuple[AlpineResNet, dict[str, float]]:
    """One arm of one trial: the trial's initialisation and mini-batch order, Adam with reduce-on-plateau until the
    rate is `MIN_LR` or for `epochs`."""
    x_train, y_train = data[0], data[1]
    seed_everything(trial)
    model = AlpineResNet(dim=x_train.shape[1])
    # fused: Adam's update of the 24 small tensors in one kernel, not ~10 ops each: a plain arm's epoch ~1.3x faster
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=PATIENCE)
    order = torch.Generator().manual_seed(trial)
    clock = study_clock(torch.device("cpu"))  # process CPU time: the arm's cost whatever else shares the machine
    started, mean_loss, trained = clock(), math.nan, 0
    for epoch in range(epochs):
        total = torch.zeros(())
        permutation = torch.randperm(len(x_train), generator=order)
        for start in range(0, len(x_train), BATCH):
            index = permutation[start:start + BATCH]
            loss = loss_of(model, x_train[index], y_train[index], kind, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        mean_loss = total.item() / math.ceil(len(x_train) / BATCH)
        if not math.isfinite(mean_loss):
            raise RuntimeError(f"{STUDY}: arm {kind} of trial {trial} diverged at epoch {epoch + 1}")
        plateau.step(mean_loss)
        trained = epoch + 1
        if optimizer.param_groups[0]["lr"] <= MIN_LR * (1 + 1e-6):  # float rounding of 1e-3 * 0.1**3
            break
    return model, {"seconds": clock() - started, "final_loss": mean_loss,
                   "final_lr": optimizer.param_groups[0]["lr"], "epochs": trained}


# The seed's 25 trials are not affordable: a penalised arm takes 13-18 CPU-minutes (its Gelfand penalty makes an epoch
# ~8x a plain one and it trains for up to 4,000 epochs; two at once share the caches), a plain or L2 arm 1-2, so the
# three penalised arms of 3 trials already take two rounds of the two workers: 29.6 minutes on 2 cores (5 trials took
# 49 before the faster Gelfand backward); `--seeds` runs more.
TRIALS = (0, 1, 2)
ORDER = ("stiff", "l2", "res")  # the costliest arm first: `in_processes` starts calls in this order


def one_arm(trial: int, n_train: int, epochs: int, arm: str) -> dict[str, Any]:
    """One arm of one trial: its row and its per-trial values (module level: it runs in worker processes)."""
    kind, weight = ARMS[arm]
    data = alpine_data(trial, n_train=n_train)
    model, fit = train_arm(kind, weight, trial, data, epochs)
    train_m, test_m = measure(model, data[0], data[1]), measure(model, data[2], data[3])
    found = {"er": train_m["rmse"], "ge": test_m["rmse"],
             "ge_population": rmse(model, *population_data(dim=data[0].shape[1])), "stiffness": train_m["stiffness"],
             "singular": train_m["singular"], "saturated": train_m["saturated"], "radius": train_m["radius"],
             "seconds": fit["seconds"]}
    row = {"arm": arm, "trial": trial, "weight": weight, **found, "stiffness_sum": train_m["stiffness_sum"],
           "stiffness_mean": train_m["stiffness_mean"], "final_loss": fit["final_loss"],
           "final_lr": fit["final_lr"], "epochs": fit["epochs"]}
    return {"row": row, "found": found}


def one_trial(trial: int, n_train: int, arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rows and per-seed values of one trial from its three arms (`one_arm`'s results by arm), with the
    stiffness of the trial's untrained network (every arm's start) on its training points."""
    found = {arm: arms[arm]["found"] for arm in ARMS}
    values = {f"{arm}_{key}": value for arm, measured in found.items() for key, value in measured.items()}
    x_train, y_train = alpine_data(trial, n_train=n_train)[:2]
    seed_everything(trial)
    untrained = measure(AlpineResNet(dim=x_train.shape[1]), x_train, y_train)
    values["init_stiffness"], values["init_saturated"] = untrained["stiffness"], untrained["saturated"]
    for arm in ("stiff", "l2"):
        values[f"{arm}_ge_ratio"] = found[arm]["ge"] / found["res"]["ge"]
        values[f"{arm}_ge_population_ratio"] = found[arm]["ge_population"] / found["res"]["ge_population"]
    return {"rows": [arms[arm]["row"] for arm in ARMS], "values": values}


@register_study("stiffness-regression", title="Stiffness penalty on Hudson et al.'s Alpine 02 regression",
                summary="the seed's ResNet on Alpine 02 trained plain, with L2 and with the Gelfand stiffness "
                "penalty: training/test RMSE and the eigenvalue stiffness ratio, per trial",
                claims=("hudson-stiffness",), task=TASK, seeds=TRIALS, options=("workers",))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, epochs: int | None = None, workers: int = 1) -> Path:
    """Train the three arms for every trial; write `results/stiffness-regression/alpine02.json`. `limit` caps the
    training points (quick runs); the device is the CPU (a model this small gains nothing elsewhere); `workers`
    (arm, trial) pairs at once, the penalised arms first, in processes of one torch thread each."""
    if task_name != TASK:
        raise ValueError(f"{STUDY} runs on the seed's own task {TASK!r} (data generated here), not {task_name!r}")
    clock = time.perf_counter()
    epochs = EPOCHS if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{STUDY}: epochs must be a positive int, got {epochs!r}")
    trials = check_seeds(seeds)
    started = provenance(torch.device("cpu"))
    n_train = min(N_TRAIN, limit or N_TRAIN)
    # every (arm, trial) is its own call, so the workers share the costly penalised arms; a result does not depend on
    # the process it ran in (seeded; one thread)
    found = in_processes(one_arm, [(trial, n_train, epochs, arm) for arm in ORDER for trial in trials], workers)
    outcomes = [one_trial(trial, n_train, {arm: found[ORDER.index(arm) * len(trials) + k] for arm in ORDER})
                for k, trial in enumerate(trials)]
    per_seed: dict[str, list[float]] = {}
    rows = [row for outcome in outcomes for row in outcome["rows"]]
    for outcome in outcomes:
        for key, value in outcome["values"].items():
            per_seed.setdefault(key, []).append(value)
    details = {"columns": ["arm", "trial", "weight", "er", "ge", "ge_population", "stiffness", "singular", "saturated",
                           "stiffness_sum", "stiffness_mean", "radius", "seconds", "final_loss", "final_lr", "epochs"],
               "model": {"dim": DIM, "width": WIDTH, "depth": DEPTH, "horizon": HORIZON, "activation": "tanh"},
               "data": {"train": n_train, "test": N_TEST, "population": N_POPULATION, "batch": BATCH,
                        "domain": [-5.0, 5.0]},
               "training": {"optimizer": "Adam", "lr": LR, "schedule": f"ReduceLROnPlateau (patience {PATIENCE}, "
                            "otherwise torch's defaults) on the epoch's mean training loss, until the rate is "
                            f"{MIN_LR:g}", "epochs": epochs, "seed_epochs": 10_000},
               "arms": {arm: {"penalty": kind, "weight": weight} for arm, (kind, weight) in ARMS.items()},
               "gelfand_squarings": SQUARINGS, "workers": workers, "clock": "process CPU time (one torch thread)",
               "paper": PAPER, "seconds": round(time.perf_counter() - clock, 1),
               "note": f"each arm until its plateau (learning rate {MIN_LR:g}; epochs: where it stopped) or {epochs} "
                       "epochs (the seed: 10k); er/ge: training/test RMSE (the seed's 100 test points); ge_population: "
                       f"the RMSE on {N_POPULATION} fresh points, the same for every trial (the generalisation error "
                       "that the 100 points estimate); stiffness: the seed's "
                       "eigenvalue ratio |lambda_1|/|lambda_n| of each layer's Jacobian, median over layers and "
                       "training points whose Jacobian is not singular (singular: the fraction that is, an infinite "
                       f"ratio; saturated: the fraction of tanh units with tanh' < {SATURATED:g}, whose zero rows "
                       "make J_n nearly singular; init_stiffness: the same median for the trial's untrained network; "
                       "stiffness_sum: the seed's sum, 003:192, over the others); radius: |lambda_1|, mean "
                       "over every layer and point (the stiff arm penalises its per-sample sum over layers); seeds "
                       "are trials (data, initialisation and batch order from the trial); the climate task of the "
                       "seed's 25-trial table is not available"}
    return save(results, study=STUDY, task=TASK, seeds=trials, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure, tier="cpu-study")

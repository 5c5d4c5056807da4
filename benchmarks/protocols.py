"""Protocols: versioned recipes that say exactly how every number of a tier is produced.

A protocol's hash covers every field that can change a number of a record (recipes, evaluation settings, the
size overrides, the device class, each task's attack and noise grids), so records made under different recipes can
never be mixed in one leaderboard row. It leaves out what only says which runs a tier does or describes it (its
models, tasks and seeds lists, its description): adding a model or a seed to a tier never orphans the records already
made. Change a hashed field -> bump `version` (the hash changes anyway; the version tells people why).

Versions: v2 (every tier) — robust accuracy is the per-example worst case over the attack suite of
`benchmarks/evaluation/attacks.py` (PGD with restarts, APGD-DLR, AutoAttack, RK4-twin and ResNet transfer,
Square) instead of one PGD run. v3 (smoke) — half the evaluation subsets, so that the tier's fourteen models (four
of them adaptive-step) still run in minutes on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Which runs a tier does and how it is described, not how a number is made: outside the hash (see above).
UNHASHED = ("models", "tasks", "optional_tasks", "seeds", "description")
ALL_MODELS = ("resnet", "neural-ode", "anode", "continuousnet", "continuousnet-euler", "inresnet", "inresnet-lambda",
              # the other models the seed papers compare (issue #14)
              "anodev2", "pde-parabolic", "pde-hyperbolic", "tisode", "resnet-stiffness", "resnet-sde", "sonode")


@dataclass(frozen=True)
class Recipe:
    """One training recipe, shared by every model of a protocol on a task."""

    epochs: int
    batch_size: int
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "onecycle"  # "onecycle" | "multistep" | "constant"
    milestones: tuple[float, ...] = ()  # for multistep: fractions of training where lr is multiplied by 0.1
    augment: str = "none"  # "none" | "crop" | "crop-flip"
    amp_bf16: bool = False  # bf16 autocast for training (ODE states stay fp32); evaluation and attacks are fp32
    compile: bool = False  # torch.compile the training forward of fixed-step models (see train.training_forward)
    max_train: int | None = None  # cap on training examples (None: all)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "multistep", "constant"):
            raise ValueError(f"schedule must be onecycle, multistep or constant, got {self.schedule!r}")
        if self.augment not in ("none", "crop", "crop-flip"):
            raise ValueError(f"augment must be none, crop or crop-flip, got {self.augment!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")


@dataclass(frozen=True)
class Evaluation:
    """What is measured after training, and on how much of the test set."""

    # First N test examples (a fixed subset, the same for every model). 2,401 keeps the 95% Wilson interval of a
    # robust accuracy within +-2 points at worst (p = 0.5); see benchmarks/evaluation/attacks.py for the suite itself.
    attack_subset: int = 2500
    pgd_steps: int = 50
    pgd_alpha_factor: float = 2.5  # PGD step = factor * eps / steps
    pgd_restarts: int = 5  # random starts of cross-entropy PGD (later ones only on examples earlier ones missed)
    apgd_steps: int = 100  # APGD-DLR, and AutoAttack's APGD-CE / APGD-T / FAB-T (the original AutoAttack's 100)
    apgd_restarts: int = 5  # random starts of the APGD-DLR margin attack
    square_queries: int = 5000  # Square's query budget per example (AutoAttack's standard)
    autoattack_targets: int = 9  # target classes of APGD-T and FAB-T (AutoAttack's standard: all 9 other classes)
    transfer_subset: int = 1000  # test examples for the depth-transfer grid
    transfer_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    transfer_schemes: tuple[str, ...] = ("euler", "midpoint", "rk4", "rk4_38")
    transfer_tolerances: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    latency_repeats: int = 20
    throughput_batch: int = 256
    eval_batch: int = 500
    diagnostic_subset: int = 128  # test examples whose depth trajectories are diagnosed (line shape, stiffness)
    track_points: int = 8  # line shape: every model's track read at this many equal depth intervals per stage
    jacobian_iterations: int = 20  # power-iteration steps for the Jacobian's largest singular value


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    description: str
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    recipes: dict[str, Recipe]  # task -> recipe
    model_overrides: dict[str, Any] = field(default_factory=dict)  # the same size class for every model
    evaluation: Evaluation = Evaluation()
    device: str = "cpu"  # what the tier is meant for: "cpu" or "cuda"
    data_limit: int | None = None  # cap on examples per split when loading (None: whole task)
    optional_tasks: tuple[str, ...] = ()  # also run when their data is already on disk (never downloaded for this)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    def hashed_fields(self) -> dict[str, Any]:
        """What the hash covers: every field that can change a record's numbers, plus the grids of each task a
        recipe exists for (a task's eps / sigma grid lives in benchmarks/data/tasks.py, not here)."""
        from benchmarks.data.tasks import UnknownTaskError, get_task  # tasks imports torch: only when hashing

        fields = {k: v for k, v in self.to_json().items() if k not in UNHASHED}
        grids = {}
        for name in sorted(self.recipes):
            try:
                task = get_task(name)
            except UnknownTaskError:
                continue  # a recipe for a task this install does not know: nothing of it can be measured
            grids[name] = {"attack_eps": list(task.attack_eps), "noise_sigmas": list(task.noise_sigmas),
                           "headline_eps": task.headline_eps}
        return {**fields, "task_grids": grids}

    @property
    def hash(self) -> str:
        text = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def header(self) -> dict[str, Any]:
        """What a record keeps of its protocol (the full definition is reproducible from name + hash)."""
        return {"name": self.name, "version": self.version, "hash": self.hash}


SMOKE = Protocol(
    name="smoke",
    version=3,  # v3: half the attacked / transferred / diagnosed examples (14 models, 4 adaptive);
    # v2: the attack suite's worst case; adaptive NFE over all batches, batch coupling, exact transfer factors,
    # common line-shape depths
    description="CPU smoke tier: digits and pendulum, tiny widths, every model, one seed: the whole pipeline "
    "(train, every metric, records, leaderboards) in a few minutes on 2 cores. A check, not a result to cite.",
    tasks=("digits", "pendulum"),
    models=ALL_MODELS,
    seeds=(0,),
    recipes={
        # Adaptive-step models cost ~10x a ResNet here (26 rate evaluations per forward, where the ResNet makes 3).
        # Three digits epochs were tried to save time: the one-cycle schedule then left neural-ode at chance (10%,
        # 81% with four), so the subsets below are what keeps every run affordable, by one rule for all.
        "digits": Recipe(epochs=4, batch_size=32, lr=5e-3),
        "pendulum": Recipe(epochs=4, batch_size=32, lr=5e-3),
    },
    model_overrides={"width": 16, "depth": 3},
    # Smoke attacks are small (adaptive solvers on 2 CPU cores): 50 examples (95% interval +-14 points at worst),
    # one PGD start, 5-step APGD, one AutoAttack target class, 20 Square queries.
    evaluation=Evaluation(attack_subset=50, pgd_steps=10, pgd_restarts=1, apgd_steps=5, apgd_restarts=1,
                          square_queries=20, autoattack_targets=1, transfer_subset=50,
                          transfer_factors=(0.5, 1.0, 2.0), transfer_tolerances=(1e-2, 1e-3), latency_repeats=5,
                          throughput_batch=64, eval_batch=400,
                          diagnostic_subset=32),
    device="cpu",
)

STANDARD = Protocol(
    name="standard",
    version=2,  # v2: the attack suite's worst case; adaptive NFE over all batches, batch coupling, exact
    # transfer factors, common line-shape depths
    description="One GPU: fashion-mnist and cifar10-jpeg (and the original cifar10 where it is on disk), every "
    "model, 3 seeds, one recipe for all (Adam one-cycle, bf16 autocast training, fp32 evaluation and attacks).",
    tasks=("fashion-mnist", "cifar10-jpeg"),
    optional_tasks=("cifar10",),
    models=ALL_MODELS,
    seeds=(0, 1, 2),
    recipes={
        "fashion-mnist": Recipe(epochs=3, batch_size=256, lr=2e-3, amp_bf16=True),
        "cifar10-jpeg": Recipe(epochs=10, batch_size=256, lr=2e-3, augment="crop-flip", amp_bf16=True),
        "cifar10": Recipe(epochs=10, batch_size=256, lr=2e-3, augment="crop-flip", amp_bf16=True),
        "mnist": Recipe(epochs=3, batch_size=256, lr=2e-3, amp_bf16=True),
    },
    model_overrides={"width": 64, "depth": 6},
    evaluation=Evaluation(),
    device="cuda",
)

PAPER = Protocol(
    name="paper",
    version=2,  # v2: the attack suite's worst case; adaptive NFE over all batches, batch coupling, exact
    # transfer factors, common line-shape depths
    description="The papers' scale: CIFAR-10, ResNet-110-size stages (3 x 18 blocks, 16-32-64 channels), "
    "SGD 0.9, lr 0.1, wd 5e-4, x0.1 at 50% and 75% of 160 epochs, batch 128, crop + flip, 5 seeds.",
    tasks=("cifar10",),
    models=ALL_MODELS,
    seeds=(0, 1, 2, 3, 4),
    # 160 epochs amortise torch.compile's start-up (tens of seconds per model); the standard tier's few epochs
    # do not. benchmarks/suites/test_training_speed.py measures both sides of that trade.
    recipes={"cifar10": Recipe(epochs=160, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4,
                               schedule="multistep", milestones=(0.5, 0.75), augment="crop-flip", compile=True)},
    model_overrides={"width": 16, "depth": 18, "stages": 3},
    evaluation=Evaluation(attack_subset=5000),
    device="cuda",
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (SMOKE, STANDARD, PAPER)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown tier {name!r}; known tiers: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def recipe_for(protocol: Protocol, task: str) -> Recipe:
    if task not in protocol.recipes:
        raise ValueError(f"protocol {protocol.name!r} has no recipe for task {task!r}; "
                         f"it defines: {', '.join(protocol.recipes)}")
    return protocol.recipes[task]

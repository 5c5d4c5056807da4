"""Protocols: versioned recipes that say exactly how every number of a tier is produced.

A record carries the hash of its (tier, task): `Protocol.task_hash(task)` covers every field that can change a
number of that task's records (the tier's evaluation settings, size overrides, device class and data cap; that
task's recipe and attack / noise grids; the attack suite's declaration and version, `benchmarks/suite.py`), so
records made under different recipes can never be mixed in one leaderboard row. It leaves out what only says which
runs a tier does, how it is described or how its results are compared (`UNHASHED`: models, tasks, seeds, the
description, citability, rank and reproduction tolerance), and every other task's recipe: adding a model, a seed,
a task or a tier never orphans the records already made. Change a hashed field -> bump `version` (the hash changes
anyway; the version tells people why). The evaluation code's own changes bump `SUITE_VERSION` (tests/test_suite.py).

Versions: v2 (every tier) — robust accuracy is the per-example worst case over the attack suite of
`benchmarks/evaluation/attacks.py` (PGD with restarts, APGD-DLR, AutoAttack, RK4-twin and ResNet transfer,
Square) instead of one PGD run. v3 (smoke) — half the evaluation subsets, so that the tier's fourteen models (four
of them adaptive-step) still run in minutes on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.suite import suite_declaration

# Which runs a tier does, how it is described and how its results are compared, not how a number is made: outside
# the hash (see above). `recipes` is hashed per task, not as a whole.
UNHASHED = ("models", "tasks", "optional_tasks", "seeds", "description", "citable", "rank", "tolerance", "recipes",
            "training_version")
# What decides a run's trained weights (`Protocol.training_hash`): a tier version that changes only the evaluation
# keeps it, and its runs adopt the finished training checkpoints kept under the earlier hash instead of training again.
TRAINING_FIELDS = ("model_overrides", "data_limit", "device", "training_version")


class BuiltinModels(Sequence):
    """Every built-in model of the zoo (`zoo.models.builtin_models()`: family by family in `zoo.models.ORDER`), read
    from the registry on first use, so that importing this module loads no torch. Behaves as the tuple of names
    (equality, `+`, slicing, JSON via `Protocol.to_json`); a copy or a pickle is that tuple. Installed plugins are
    not in it (the runner adds them to a tier's default run, `benchmarks.execution.runner.tier_models`)."""

    _names: tuple[str, ...] | None = None

    def _resolve(self) -> tuple[str, ...]:
        if self._names is None:
            from zoo.models import builtin_models  # imports torch: only when a model list is needed

            self._names = builtin_models()
        return self._names

    def __getitem__(self, index: Any) -> Any:
        return self._resolve()[index]

    def __len__(self) -> int:
        return len(self._resolve())

    def __iter__(self) -> Any:
        return iter(self._resolve())

    def __contains__(self, name: object) -> bool:
        return name in self._resolve()

    def __eq__(self, other: object) -> bool:
        return self._resolve() == (tuple(other) if isinstance(other, BuiltinModels) else other)

    def __hash__(self) -> int:
        return hash(self._resolve())

    def __add__(self, other: tuple[str, ...]) -> tuple[str, ...]:
        return self._resolve() + tuple(other)

    def __radd__(self, other: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(other) + self._resolve()

    def __repr__(self) -> str:
        return repr(self._resolve())

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return self._resolve()  # dataclasses.asdict deep-copies fields: Protocol.to_json sees a plain tuple

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (self._resolve(),)


# Every tier's model list: each built-in model, declared once in its family's module (`zoo/models/`), in the order
# of `zoo.models.ORDER` (a family is added to every tier by one line there).
ALL_MODELS: Sequence[str] = BuiltinModels()


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
class Tolerance:
    """How far a reproduction's mean may fall from the published mean of the same hash (benchmarks/reporting/
    reproduce.py; the seed spread may widen it): a tier's property, outside the hash."""

    accuracy_points: float  # allowed |difference of mean test accuracy|, in percentage points
    mse_relative: float  # allowed relative difference of mean test MSE: ratio within [1/(1+r), 1+r]


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    description: str
    tasks: tuple[str, ...]
    models: Sequence[str]  # a tuple of names, or ALL_MODELS
    seeds: tuple[int, ...]
    recipes: dict[str, Recipe]  # task -> recipe
    model_overrides: dict[str, Any] = field(default_factory=dict)  # the same size class for every model
    evaluation: Evaluation = Evaluation()
    device: str = "cpu"  # what the tier is meant for: "cpu" or "cuda"
    data_limit: int | None = None  # cap on examples per split when loading (None: whole task)
    optional_tasks: tuple[str, ...] = ()  # also run when their data is already on disk (never downloaded for this)
    citable: bool = True  # False: a pipeline check (tables carry a "not for citing" banner, claims never use it)
    rank: int = 10  # which tier's evidence comes first where several have it (lower first; claims, depth transfer)
    tolerance: Tolerance = Tolerance(accuracy_points=2.0, mse_relative=0.5)  # reproduction (see Tolerance)
    # Bump together with `version` when a change alters training (not only what is measured after it): the
    # training hash then changes, and no run adopts weights trained under the earlier definition.
    training_version: int = 1

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    def hashed_fields(self, task: str) -> dict[str, Any]:
        """What the hash of `task`'s records covers: every field that can change one of their numbers, with the
        task's own recipe and grids (a task's eps / sigma grid lives in benchmarks/data/tasks.py, not here)."""
        from benchmarks.data.tasks import get_task  # tasks imports torch: only when hashing

        fields = {k: v for k, v in self.to_json().items() if k not in UNHASHED}
        known = get_task(task)  # UnknownTaskError names the known tasks
        grid = {"attack_eps": list(known.attack_eps), "noise_sigmas": list(known.noise_sigmas),
                "headline_eps": known.headline_eps}
        recipe = json.loads(json.dumps(asdict(recipe_for(self, task))))
        return {**fields, "task": task, "recipe": recipe, "task_grid": grid, "attack_suite": suite_declaration()}

    def task_hash(self, task: str) -> str:
        """The hash every record of `task` under this tier carries (its folder name in a results store)."""
        text = json.dumps(self.hashed_fields(task), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def training_hash(self, task: str) -> str:
        """What `task`'s trained weights depend on (its recipe, the size class, the data cap, the device class and
        `training_version`), hashed: equal for two tier versions that differ only in what they measure after
        training, so that the later one reuses the earlier one's kept weights (benchmarks/training/checkpoint.py)."""
        fields = {k: v for k, v in self.to_json().items() if k in TRAINING_FIELDS}
        recipe = json.loads(json.dumps(asdict(recipe_for(self, task))))
        text = json.dumps({**fields, "task": task, "recipe": recipe}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def header(self, task: str) -> dict[str, Any]:
        """What a record keeps of its protocol (the full definition is reproducible from name + task + hash)."""
        return {"name": self.name, "version": self.version, "hash": self.task_hash(task)}

    def hashes(self) -> dict[str, str]:
        """task -> hash, for every task this tier has a recipe for and this install knows."""
        from benchmarks.data.tasks import list_tasks

        return {task: self.task_hash(task) for task in sorted(self.recipes) if task in list_tasks()}


SMOKE = Protocol(
    name="smoke",
    version=5,  # v5: adaptive models solve each example with its own steps (zoo ADAPTIVE_BACKEND, issue #24);
    # v4: the attack suite v3 (declared as data, seeds from position) and a hash per task;
    # v3: half the attacked / transferred / diagnosed examples (14 models, 4 adaptive);
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
    citable=False,
    rank=100,
    # Tiny models, 4 epochs, one seed: across two CPUs the same seed has been seen to move by 7 points (anode on
    # digits, 42.50% -> 35.25%), so only gross breakage is caught.
    tolerance=Tolerance(accuracy_points=10.0, mse_relative=2.0),
)

CPU = Protocol(
    name="cpu",
    version=2,  # v2: APGD at AutoAttack's 100 steps x 5 starts (v1's 50 x 2 left fixed-step models' robust@0.05 up to
    # 2.5 points high against the full-strength suite); training unchanged, so v2 runs adopt v1's kept weights
    description="CPU tier, citable: Fashion-MNIST at full resolution (28x28; the first 30,000 of the 55,000 training "
    "images, the fixed 5,000 validation images, the whole 10,000-image test set), every model at the size class of "
    "width 16 / depth 3, 3 seeds, one recipe for all (Adam one-cycle 5e-3, 6 epochs); the whole attack suite at "
    "reduced budgets (PGD 20 steps x 2 starts, APGD 100 x 5, 3 target classes, Square 1,000 queries) on the first "
    "1,100 test images (every robust accuracy within +-3 points), checked against the full-strength suite by "
    "`depthbench study suite-strength` (leaderboards/suite-strength/: 200 images, seed 0, resnet, continuousnet and "
    "neural-ode at every radius): within 1 point everywhere (largest gap 0; v1's APGD 50 x 2 left up to 2.5 points). "
    "Cost on a 2-core machine (docs/running.md; `depthbench status --tier cpu --cost`): 8.0 run-hours measured over "
    "the 42 runs (Intel Xeon), ~4.0 h wall time with --workers 2, over the 3-hour target by ~34% (v1, APGD 50 x 2: "
    "6.25 run-hours on an AMD EPYC).",
    tasks=("fashion-mnist",),
    models=ALL_MODELS,
    seeds=(0, 1, 2),
    # Sized on a 2-core machine (docs/running.md, "The cpu tier"): the four adaptive-step models cost ~75% of the tier
    # (26+ rate evaluations per forward where the ResNet makes 3), so the training set is the first 30,000 images; 6
    # epochs at lr 5e-3 bring the ResNet to ~89% (4 epochs at 3e-3 on all 55,000 gave 88.9%, 6 at 3e-3 on 30,000
    # 88.6%). Attack budgets: PGD on every example at every radius dominates; the cascaded attacks run on the few
    # survivors, so APGD keeps more of its budget.
    recipes={"fashion-mnist": Recipe(epochs=6, batch_size=128, lr=5e-3, max_train=30_000)},
    model_overrides={"width": 16, "depth": 3},
    evaluation=Evaluation(attack_subset=1100, pgd_steps=20, pgd_restarts=2, apgd_steps=100, apgd_restarts=5,
                          square_queries=1000, autoattack_targets=3, transfer_subset=1000,
                          transfer_factors=(0.5, 1.0, 2.0, 4.0), transfer_tolerances=(1e-2, 1e-3, 1e-4),
                          latency_repeats=10, throughput_batch=256, eval_batch=500, diagnostic_subset=128),
    device="cpu",
    rank=2,
    tolerance=Tolerance(accuracy_points=1.5, mse_relative=0.25),
)

STANDARD = Protocol(
    name="standard",
    version=3,  # v3: sized for a GPU lent by the minute (issue #23, docs/gpu-cost-model.md): the recipes that take
    # the ResNet over 91% / 78%, and an attack suite whose sequential steps fit (one batch of 2,500 per step);
    # v2: the attack suite's worst case; adaptive NFE over all batches, batch coupling, exact transfer factors,
    # common line-shape depths
    description="One GPU: fashion-mnist and cifar10-jpeg (and the original cifar10 where it is on disk), every "
    "model, 3 seeds, one recipe for all (Adam one-cycle, bf16 autocast training, fp32 evaluation and attacks).",
    tasks=("fashion-mnist", "cifar10-jpeg"),
    optional_tasks=("cifar10",),
    models=ALL_MODELS,
    seeds=(0, 1, 2),
    # Launch-bound on a GPU (docs/gpu-cost-model.md): a step costs the same at batch 256 or 512, so epochs are
    # bought with larger batches. fashion-mnist: this recipe gave the ResNet 92.16% test (92.56% val; 6 epochs:
    # 90.7%) in bf16 autocast on CPU, seed 0. cifar10-jpeg: the reference recipe of ../shared/README.md, 78.8% for
    # this ResNet on an H100 (15 epochs of 256, one-cycle 2e-3, bf16, crop + flip).
    recipes={
        "fashion-mnist": Recipe(epochs=10, batch_size=512, lr=3e-3, amp_bf16=True),
        "cifar10-jpeg": Recipe(epochs=15, batch_size=256, lr=2e-3, augment="crop-flip", amp_bf16=True),
        "cifar10": Recipe(epochs=15, batch_size=256, lr=2e-3, augment="crop-flip", amp_bf16=True),
        "mnist": Recipe(epochs=10, batch_size=512, lr=3e-3, amp_bf16=True),
    },
    model_overrides={"width": 64, "depth": 6},
    # 2,500 attacked examples (95% interval +-2 points at worst) in ONE batch per attack step: the adaptive models'
    # steps are launch-bound (~1,300-2,500 kernels each), so five batches cost five times one. Budgets: PGD-20 with
    # one start (APGD-DLR, then AutoAttack's four components, start from elsewhere), APGD 25 steps (its step-size
    # schedule is relative to the budget), one APGD-DLR start, APGD-T / FAB-T on the 3 highest-scoring wrong
    # classes (AutoAttack takes them in that order), Square with 1,000 queries; transfer, twin, sanity checks and
    # every radius unchanged. Needs ~20 GB of GPU memory for an adaptive model's attack step.
    evaluation=Evaluation(attack_subset=2500, eval_batch=2500, pgd_steps=20, pgd_restarts=1, apgd_steps=25,
                          apgd_restarts=1, autoattack_targets=3, square_queries=1000),
    device="cuda",
    rank=1,
    tolerance=Tolerance(accuracy_points=1.5, mse_relative=0.25),  # trained to convergence, 3 seeds
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
    rank=0,
    tolerance=Tolerance(accuracy_points=1.0, mse_relative=0.15),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (SMOKE, CPU, STANDARD, PAPER)}


def tier_citable(name: str) -> bool:
    """Whether records of tier `name` may be cited (an unknown tier: yes, like a study's own)."""
    return PROTOCOLS[name].citable if name in PROTOCOLS else True


def current_hash(name: str, task: str) -> str | None:
    """The hash records of tier `name` on `task` carry under this code, or None for a tier or task it does not define
    (a plugin's, an unknown one). A record of another hash is of an earlier (or later) definition of the tier."""
    protocol = PROTOCOLS.get(name)
    if protocol is None or task not in protocol.recipes:
        return None
    return protocol.task_hash(task)


def tier_rank(name: str) -> int:
    """Evidence order of tier `name` (lower first); an unknown tier after every declared citable one, pipeline
    checks last."""
    if name in PROTOCOLS:
        return PROTOCOLS[name].rank
    return max(p.rank for p in PROTOCOLS.values() if p.citable) + 1


def tier_tolerance(name: str) -> Tolerance:
    return PROTOCOLS[name].tolerance if name in PROTOCOLS else Protocol.tolerance


def current_hashes(protocols: Sequence[Protocol] | None = None) -> set[str]:
    """Every (tier, task) hash of the given tiers (default: all): what a record must carry to be current."""
    return {h for p in (PROTOCOLS.values() if protocols is None else protocols) for h in p.hashes().values()}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown tier {name!r}; known tiers: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def recipe_for(protocol: Protocol, task: str) -> Recipe:
    if task not in protocol.recipes:
        raise ValueError(f"protocol {protocol.name!r} has no recipe for task {task!r}; "
                         f"it defines: {', '.join(protocol.recipes)}")
    return protocol.recipes[task]

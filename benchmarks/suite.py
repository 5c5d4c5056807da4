"""The attack suite, declared once as data: which attacks run, in what order, on which examples and at which radii.

Robust accuracy is the per-example worst case over this sequence; `benchmarks/evaluation/attacks.py` executes it
(one builder per `method`). Everything else is derived from the declaration: each attack's random seed (from its
position), its metric spec and documentation (`benchmarks/specs.py`), the tables' columns, and the protocols' hash,
which covers `SUITE_VERSION` and the declaration itself (`benchmarks/protocols.py`).

Changing how a number of the suite is made (an attack, its order, what it runs on, its seeds, the code that runs
it) changes records: bump `SUITE_VERSION` with it. `tests/test_suite.py` fails when the declaration or its executor
changes and the version does not (it pins a fingerprint of both per version).

Torch-free, like `specs.py`: the report layer reads it without loading the evaluation code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

# v3: the suite as declared data, every seed from its attack's position (v2: hand-numbered seed offsets).
SUITE_VERSION = 3
SEED_STRIDE = 100  # attack i runs its restart r under seed SEED_STRIDE * i + r (restarts never reach the next one)


class Access(Enum):
    """What an attack may use of the model (the RobustBench-style threat model of one attack)."""

    WHITE_BOX = "white-box"  # the model's own input gradients
    TRANSFER = "transfer"  # gradients of another model (a fixed-step twin, a surrogate ResNet)
    BLACK_BOX = "black-box"  # the model's outputs only


class Scope(Enum):
    """Which examples an attack runs on."""

    EVERYONE = "everyone"  # every attacked example: its metric is the attack's own accuracy
    SURVIVORS = "survivors"  # those no earlier attack broke (AutoAttack's cascade): its metric is the worst case so far


class Radii(Enum):
    EVERY = "every"  # every radius of the task's grid
    HEADLINE = "headline"  # the task's headline radius only (where the number is quoted)


class Source(Enum):
    """Whose gradients craft the perturbation (for TRANSFER attacks), else the attacked model itself."""

    MODEL = "model"
    TWIN = "twin"  # a fixed-step RK4 twin of an adaptive model at about its cost (adaptive models only)
    SURROGATE = "surrogate"  # the zoo's ResNet of the same task, size, recipe and seed (not run on the ResNet itself)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the suite. Budgets are not here but in the protocol's `Evaluation` (a tier sizes them)."""

    name: str  # the metric is `<name>@<eps>`
    label: str  # its column name in tables and plots
    method: str  # the executor's builder: fgsm | pgd | apgd | apgd_t | fab_t | square
    access: Access
    scope: Scope
    radii: Radii
    doc: str  # the metric's one-line definition
    loss: str = "ce"  # "ce" | "dlr" (APGD's loss)
    steps_divisor: int = 1  # PGD only: run pgd_steps // steps_divisor steps (the "more steps never help less" check)
    restarts: bool = False  # PGD / APGD: the protocol's restarts (pgd_restarts / apgd_restarts), else one start
    source: Source = Source.MODEL
    seed_of: str | None = None  # reuse an earlier attack's seed (the few-steps check starts where PGD's first did)
    shown: str = "csv"  # where its metric shows (specs.Shown)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"attack {self.name!r}: unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if (self.source is not Source.MODEL) != (self.access is Access.TRANSFER):
            raise ValueError(f"attack {self.name!r}: a transfer attack has a source other than the model, and only it")

    def to_json(self) -> dict[str, Any]:
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}


METHODS = ("fgsm", "pgd", "apgd", "apgd_t", "fab_t", "square")

_AA = "AutoAttack's standard component at the headline eps"
ATTACK_SUITE: tuple[AttackSpec, ...] = (
    AttackSpec("fgsm", "FGSM", "fgsm", Access.WHITE_BOX, Scope.EVERYONE, Radii.EVERY, shown="plot",
               doc="accuracy under FGSM alone (torchattacks, L-inf eps in [0, 1] pixel space); clean errors count "
                   "as failures"),
    AttackSpec("pgd", "PGD", "pgd", Access.WHITE_BOX, Scope.EVERYONE, Radii.EVERY, restarts=True,
               doc="accuracy under cross-entropy PGD alone (torchattacks; steps of 2.5 eps / steps, projected around "
                   "the clean image, clamped to [0, 1]); per-example worst case over the protocol's random starts"),
    AttackSpec("pgd_fewsteps", "PGD few steps", "pgd", Access.WHITE_BOX, Scope.EVERYONE, Radii.HEADLINE,
               steps_divisor=5, seed_of="pgd",
               doc="headline eps: accuracy under PGD's first random start with a fifth of the steps (sanity check: "
                   "more steps must not do worse)"),
    AttackSpec("apgd_dlr", "APGD-DLR", "apgd", Access.WHITE_BOX, Scope.SURVIVORS, Radii.EVERY, loss="dlr",
               restarts=True,
               doc="robust accuracy after APGD with the DLR margin loss, run on the examples that survived FGSM and "
                   "PGD (cumulative: the worst case over it and every earlier attack)"),
    AttackSpec("apgd_ce", "APGD-CE", "apgd", Access.WHITE_BOX, Scope.SURVIVORS, Radii.HEADLINE,
               doc=f"headline eps: robust accuracy after APGD-CE, {_AA} (cumulative, as apgd_dlr)"),
    AttackSpec("apgd_t", "APGD-T", "apgd_t", Access.WHITE_BOX, Scope.SURVIVORS, Radii.HEADLINE, loss="dlr",
               doc=f"headline eps: robust accuracy after targeted APGD-DLR, {_AA} (cumulative; the protocol's "
                   "autoattack_targets target classes)"),
    AttackSpec("fab_t", "FAB-T", "fab_t", Access.WHITE_BOX, Scope.SURVIVORS, Radii.HEADLINE,
               doc=f"headline eps: robust accuracy after targeted FAB, {_AA} (cumulative; the protocol's "
                   "autoattack_targets target classes)"),
    AttackSpec("transfer", "transfer", "pgd", Access.TRANSFER, Scope.SURVIVORS, Radii.EVERY, source=Source.TWIN,
               doc="adaptive models: robust accuracy after PGD crafted on a fixed-step RK4 twin of the same weights, "
                   "run on the survivors of every white-box attack (cumulative)"),
    AttackSpec("transfer_resnet", "transfer from ResNet", "pgd", Access.TRANSFER, Scope.SURVIVORS, Radii.EVERY,
               source=Source.SURROGATE,
               doc="robust accuracy after PGD crafted on the zoo's resnet of the same task, protocol size, recipe "
                   "and seed (the resnet row's model; not run on the resnet itself), run on the survivors of every "
                   "white-box attack (cumulative)"),
    AttackSpec("square", "Square", "square", Access.BLACK_BOX, Scope.SURVIVORS, Radii.HEADLINE,
               doc="headline eps: robust accuracy after the gradient-free Square attack (the protocol's "
                   "square_queries queries per example), run last on the survivors (cumulative; equals "
                   "robust@<eps>), " + _AA),
)
SURROGATE_MODEL = "resnet"  # the registered model whose attacks are transferred (Source.SURROGATE)
BY_NAME: dict[str, AttackSpec] = {a.name: a for a in ATTACK_SUITE}
UNBOUNDED_CHECK_SEED = SEED_STRIDE * len(ATTACK_SUITE)  # the sanity check's PGD at eps = 1, after every attack


def attack_seed(name: str, restart: int = 0) -> int:
    """The seed of attack `name`'s restart `restart`: from its position in the suite (or the attack it reuses)."""
    spec = BY_NAME[name]
    position = next(i for i, a in enumerate(ATTACK_SUITE) if a.name == (spec.seed_of or name))
    if not 0 <= restart < SEED_STRIDE:
        raise ValueError(f"restart {restart} outside 0..{SEED_STRIDE - 1}")
    return SEED_STRIDE * position + restart


DESCRIPTIVE = ("label", "doc", "shown")  # an attack's fields that change no number (outside the hash)


def suite_declaration() -> dict[str, Any]:
    """What the protocols' hash covers of the suite: its version and every attack as declared, less the fields that
    only describe it (a reworded doc orphans no record)."""
    attacks = [{k: v for k, v in a.to_json().items() if k not in DESCRIPTIVE} for a in ATTACK_SUITE]
    return {"version": SUITE_VERSION, "attacks": attacks, "seed_stride": SEED_STRIDE, "surrogate": SURROGATE_MODEL}

"""Metric specs: per metric name (pattern), its doc, table column (label, format, unit note), direction, where it
shows and its page group. Torch- and pandas-free, so the report layer reads them without loading the evaluation code.

Evaluation (`benchmarks.evaluation`) produces metric values under these names; the leaderboard tables, plots, page and
`depthbench list` read this module. A metric a record carries without a spec here fails `tests/test_runner.py`
(on the smoke tier's records), rather than silently staying out of the tables; a spec shown in the table but placed
in neither `TABLE_HEAD` nor `TABLE_TAIL` fails `tests/test_architecture.py`. Adding a metric: compute it in
`benchmarks/evaluation/`, add its `MetricSpec` below (and its place in `TABLE_HEAD`/`TABLE_TAIL` if it is a column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchmarks.suite import ATTACK_SUITE

Shown = Literal["table", "plot", "csv"]  # table: a leaderboard column; plot: in the figures; csv: the CSV only
Group = Literal["accuracy", "robustness", "cost", "transfer", "diagnostics"]  # the page's column groups
Kind = Literal["fixed", "signed", "sci", "si"]  # number format of a table cell

BATCH_COUPLING_TOLERANCE = 1e-6  # float64 kernels' batch-size noise is ~1e-15; adaptive coupling ~rtol
FRACTION, NON_NEGATIVE = (0.0, 1.0), (0.0, float("inf"))  # `bounds` of accuracies, and of counts, sizes and times


@dataclass(frozen=True)
class MetricSpec:
    pattern: str  # metric name as recorded; `<eps>` / `<sigma>` stand for a radius, e.g. `robust@<eps>`
    doc: str  # one line: what the number is
    label: str = ""  # table header with unit ("" = no table column of its own)
    kind: Kind = "fixed"
    digits: int = 3
    scale: float = 1.0  # 100: a fraction shown in %
    note: str = ""  # what the numbers mean, printed once per table in the "Units" header line
    regression: tuple[str, Kind, int, float, str] | None = None  # (label, kind, digits, scale, note) on regression
    attack: tuple[str, str] | None = None  # per-radius metrics: (column name, radius symbol)
    higher_is_better: bool | None = None  # None: neither (a size, a setting, a diagnostic)
    shown: Shown = "csv"
    group: Group = "diagnostics"
    bounds: tuple[float, float] | None = None  # [low, high] of every valid value (a record outside is damaged)

    def matches(self, name: str) -> bool:
        return MetricKey.parse(name).pattern() == self.pattern

    @property
    def base(self) -> str:
        """The metric's name without its radius (`robust@<eps>` -> `robust`): MetricKey.name of its records."""
        return self.pattern.partition("@")[0]


def radius_text(value: float) -> str:
    """Short, stable text of a radius or sigma: 3 significant digits, no trailing zeros (0.1 -> '0.1',
    8/255 -> '0.0314'). The one place a number becomes part of a metric's name."""
    return f"{float(value):.3g}"


@dataclass(frozen=True)
class MetricKey:
    """A recorded metric's name, structured: a base name and, for per-radius metrics, the radius (an attack's eps or
    a noise sigma). Records store `str(key)` (`robust@0.0314`); everything that reads one parses it here, once."""

    name: str
    at: float | None = None

    def __str__(self) -> str:
        return self.name if self.at is None else f"{self.name}@{radius_text(self.at)}"

    @classmethod
    def parse(cls, text: str) -> MetricKey:
        """`robust@0.1` -> MetricKey("robust", 0.1); a name without `@` (or with an unparsable radius) is plain."""
        name, sep, at = str(text).partition("@")
        if not sep:
            return cls(name)
        try:
            return cls(name, float(at))
        except ValueError:
            return cls(str(text))

    def pattern(self) -> str:
        """The spec pattern this name falls under (`robust@<eps>`, `noise@<sigma>`, or the name itself)."""
        if self.at is None:
            return self.name
        return f"{self.name}@<{'sigma' if self.name in SIGMA_METRICS else 'eps'}>"


SIGMA_METRICS = ("noise",)  # per-sigma metrics; every other per-radius metric is per attack radius eps


# Accuracies (and every per-radius attack/noise column) share one format and note; so do MSEs and sizes.
_ACC = dict(kind="fixed", digits=2, scale=100.0, bounds=FRACTION, note=(
    "accuracies in % (robust ε: per-example worst case over the attack suite at that L∞ radius, with its 95% Wilson "
    "interval (CI; several seeds: mean of the bounds) from the attacked examples; noise σ: Gaussian noise); "
    "unreliable = the suite's sanity checks failed (see flags)"))
_MSE = dict(kind="sci", digits=3, scale=1.0, note="MSE = mean squared error on the test / validation set",
            bounds=NON_NEGATIVE)
_SIZE = dict(kind="si", digits=3, scale=1.0, bounds=NON_NEGATIVE,
             note="params and FLOPs (per sample, forward) with k = 1e3, M = 1e6, G = 1e9")
_BATCH_COUPLING_DOC = (
    "max |output of an example evaluated alone - inside the evaluation batch| / (1 + max |output|) over the first 4 "
    f"test examples, in float64; above {BATCH_COUPLING_TOLERANCE:g} the run is flagged batch-coupled (adaptive "
    "solvers: step sizes are chosen for the whole batch)")

SPECS: tuple[MetricSpec, ...] = (
    MetricSpec('accuracy',
        'test accuracy (fraction correct, 0..1) of the trained model',
        label='test acc. (%)',
        **_ACC,
        higher_is_better=True,
        shown='table',
        group='accuracy'),
    MetricSpec('val_accuracy',
        'validation accuracy (fraction correct) used for model selection',
        label='val. acc. (%)',
        **_ACC,
        higher_is_better=True,
        shown='table',
        group='accuracy'),
    MetricSpec('test_mse',
        'test mean squared error (regression tasks), averaged over examples and output components',
        label='test MSE',
        **_MSE,
        higher_is_better=False,
        shown='table',
        group='accuracy'),
    MetricSpec('val_mse',
        'validation mean squared error (regression tasks)',
        label='val. MSE',
        **_MSE,
        higher_is_better=False,
        shown='table',
        group='accuracy'),
    MetricSpec('params',
        'number of trainable parameters (shared parameters counted once)',
        label='params',
        **_SIZE,
        higher_is_better=False,
        shown='table',
        group='cost'),
    MetricSpec('flops',
        'floating-point operations of one forward pass of one sample (torch FlopCounterMode; adaptive: as'
        ' run)',
        label='FLOPs',
        **_SIZE,
        higher_is_better=False,
        shown='table',
        group='cost'),
    MetricSpec('nfe',
        'rate-function evaluations of one forward pass, summed over stages (adaptive: mean over every '
        'evaluation batch of the test set, weighted by batch size; it depends on eval_batch)',
        label='NFE', kind='fixed', digits=1,
        note='NFE = function evaluations per forward pass at the trained solver',
        higher_is_better=False,
        shown='table',
        bounds=NON_NEGATIVE,
        group='cost'),
    MetricSpec('eval_batch',
        'evaluation batch size: examples per forward pass for every clean, noise, attack and '
        "depth-transfer number (adaptive solvers' outputs and NFE depend on it, see batch_coupling)",
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('batch_coupling',
        _BATCH_COUPLING_DOC,
        higher_is_better=False,
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('nfe_backward',
        'rate-function evaluations of the adjoint backward pass per training step (0 without adjoint)',
        higher_is_better=False,
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('nfe_adversarial',
        'adaptive models: mean forward NFE on PGD examples at the largest eps (attacks can slow adaptive '
        'solvers down)',
        higher_is_better=False,
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('train_seconds',
        'wall-clock training time in seconds, including the per-epoch validation pass',
        label='train time (s)', kind='fixed', digits=1,
        note='train time in s',
        higher_is_better=False,
        shown='table',
        bounds=NON_NEGATIVE,
        group='cost'),
    MetricSpec('epoch_seconds',
        'median wall-clock seconds per training epoch, training steps only',
        higher_is_better=False,
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('peak_train_memory_mb',
        'peak GPU memory allocated during training, MiB (CUDA runs only)',
        label='peak train mem. (MiB)', kind='fixed', digits=1,
        note='peak training memory in MiB',
        higher_is_better=False,
        shown='table',
        bounds=NON_NEGATIVE,
        group='cost'),
    MetricSpec('epochs',
        'number of training epochs run',
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('latency_ms',
        'median batch-1 inference latency in milliseconds (synchronised, after warmup)',
        label='latency (ms)', kind='fixed', digits=3,
        note='latency in ms (median at batch 1)',
        higher_is_better=False,
        shown='table',
        bounds=NON_NEGATIVE,
        group='cost'),
    MetricSpec('latency_iqr_ms',
        'interquartile range of the batch-1 latency in milliseconds',
        higher_is_better=False,
        shown='csv',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('throughput',
        'inference samples per second at the benchmark batch size',
        label='throughput (samples/s)', kind='fixed', digits=0,
        note='throughput in samples/s (large batch)',
        higher_is_better=True,
        shown='table',
        bounds=NON_NEGATIVE,
        group='cost'),
    MetricSpec('robust@<eps>',
        "HEADLINE robust accuracy: fraction of the attacked examples (the protocol's attack_subset first "
        'test examples) classified correctly clean AND under every attack of the suite (per-example worst'
        f" case, benchmarks/suite.py): {', '.join(a.label for a in ATTACK_SUITE)} (each at the radii and on "
        "the examples it declares, with the protocol's budgets); L-inf radius eps in [0, 1] pixel space; "
        'attacks through the exact inference solver, backpropagating directly (never the adjoint). Rows '
        'flagged `unreliable` failed a sanity check (see the flags)',
        attack=('robust', 'ε'),
        **_ACC,
        higher_is_better=True,
        shown='table',
        group='robustness'),
    MetricSpec('robust_ci_low@<eps>',
        'lower end of the 95% Wilson interval of robust@<eps> from attack_n examples',
        attack=('robust CI low', 'ε'),
        **_ACC,
        higher_is_better=True,
        shown='csv',
        group='robustness'),
    MetricSpec('robust_ci_high@<eps>',
        'upper end of the 95% Wilson interval of robust@<eps> from attack_n examples',
        attack=('robust CI high', 'ε'),
        **_ACC,
        higher_is_better=True,
        shown='csv',
        group='robustness'),
    MetricSpec('attack_n',
        'number of test examples attacked',
        shown='csv',
        bounds=NON_NEGATIVE,
        group='robustness'),
    MetricSpec('eot_draws',
        'stochastic models only (flagged stochastic): every attack of the suite differentiates the mean logits of '
        'this many draws of the random forward (expectation over transformation) and each adversarial input is '
        'judged on one seeded draw',
        shown='csv',
        bounds=NON_NEGATIVE,
        group='robustness'),
    *(MetricSpec(f'{a.name}@<eps>', a.doc, attack=(a.label, 'ε'), **_ACC, higher_is_better=True, shown=a.shown,
                 group='robustness') for a in ATTACK_SUITE),  # one per attack, from its declaration
    MetricSpec('unbounded_pgd',
        'accuracy under PGD at eps = 1 (every image reachable); above 10% marks the row unreliable',
        higher_is_better=False,
        shown='csv',
        bounds=FRACTION,
        group='diagnostics'),
    MetricSpec('vanishing_grad_fraction',
        'fraction of examples with a zero or non-finite margin-loss input gradient; above 10% marks the '
        'row unreliable',
        higher_is_better=False,
        shown='csv',
        bounds=FRACTION,
        group='diagnostics'),
    MetricSpec('adjoint_grad_cosine',
        'models trained with the adjoint: mean cosine similarity of adjoint and direct (backpropagated '
        'through the solver) input gradients',
        higher_is_better=True,
        shown='csv',
        group='diagnostics'),
    MetricSpec('noise@<sigma>',
        'accuracy on clamp(x + sigma * N(0, 1), 0, 1) with a fixed noise seed',
        attack=('noise', 'σ'),
        **_ACC,
        higher_is_better=True,
        shown='table',
        group='robustness'),
    MetricSpec('dt_delta_2x',
        'depth transfer, trained scheme with 2x the steps: accuracy change in percentage points '
        '(regression: mse(2x) / mse(trained) - 1); absent for adaptive models',
        label='Δ 2× steps (pt)', kind='signed', digits=2,
        note='Δ = change of test accuracy in points when evaluated with 2× / ½× the trained steps (same '
        'scheme; — where ½× is no whole number of steps)',
        regression=('ΔMSE 2× steps (%)', 'signed', 1, 100.0,
                    'ΔMSE = relative change of test MSE in % (mse(k×) / mse(trained) − 1) when evaluated with 2× / ½×'
                    ' the trained steps (same scheme; — where ½× is no whole number of steps)'),
        shown='table',
        group='transfer'),
    MetricSpec('dt_delta_half',
        "as dt_delta_2x with exactly half the steps in every stage (absent when some stage's trained step"
        ' count is odd: factors giving no whole number of steps are skipped, never rounded)',
        shown='table',
        group='transfer'),
    MetricSpec('dt_fewest_nfe',
        'smallest NFE of any manifestation within 0.5 accuracy points of the trained one (regression: mse'
        ' <= 1.1 x trained)',
        label='fewest NFE (−0.5 pt)', kind='fixed', digits=1,
        note='fewest NFE = cheapest evaluated solver setting within 0.5 pt of the trained accuracy',
        regression=('fewest NFE (MSE ≤ 1.1×)', 'fixed', 1, 1.0,
                    'fewest NFE = cheapest evaluated solver setting with MSE ≤ 1.1 × the trained one'),
        higher_is_better=False,
        shown='table',
        bounds=NON_NEGATIVE,
        group='transfer'),
    MetricSpec('dt_speedup',
        'batch-1 latency of the trained model / latency of the dt_fewest_nfe manifestation',
        label='speedup (×)', kind='fixed', digits=2,
        note='speedup = batch-1 latency at the trained setting / at that cheapest setting',
        higher_is_better=True,
        shown='table',
        bounds=NON_NEGATIVE,
        group='transfer'),
    MetricSpec('dt_order',
        'least-squares slope of log(error) vs log(dt) for the trained scheme at dt <= trained dt, error '
        "measured against a fine reference solve (about the scheme's order when the model is a smooth "
        'ODE)',
        shown='plot',
        group='transfer'),
    MetricSpec('line_shape',
        'line-shape score of the depth trajectories (after Gai & Zhang 2021): track length / distance '
        'between its ends, mean over samples and stages; 1 = straight line; every model sampled at the '
        'same track_points + 1 equally spaced depths per stage (fixed steps: step-boundary states joined '
        'by straight lines)',
        label='line shape', kind='fixed', digits=3,
        note='line shape = length / end-to-end distance of the depth trajectories, every model read at the '
        'same equally spaced depths (1 = straight)',
        shown='table',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('jacobian_sigma_max',
        "stiffness proxy: largest singular value of the rate function's Jacobian df/dx (an upper bound on"
        " its spectral radius) with each stage's depth rescaled to [0, 1] (T * sigma), max over the track"
        ' points of each sample, mean over samples',
        label='max T·σ(∂f/∂x)', kind='fixed', digits=2,
        note="T·σ(∂f/∂x) = largest singular value of the rate function's Jacobian, depth rescaled to [0, 1] "
        'per stage, max along depth (stiffness proxy)',
        shown='table',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
    MetricSpec('jacobian_h_sigma_max',
        'fixed-step models: trained step size h times the (unscaled) largest singular value of df/dx at '
        'each track point, max per sample, mean over samples; >> 1 means the trained steps are not in an '
        "ODE solver's accurate regime",
        label='max h·σ', kind='fixed', digits=2,
        note='h·σ = trained step size × σ(∂f/∂x), the dimensionless stiffness of the trained discretisation',
        shown='table',
        bounds=NON_NEGATIVE,
        group='diagnostics'),
)
# Column order of the tables: these, then the per-radius columns (after the validation metric), then the tail.
# Every spec shown in the table (other than per-radius ones) is in one of them (tests/test_architecture.py).
TABLE_HEAD = ("accuracy", "test_mse", "val_accuracy", "val_mse")
TABLE_TAIL = ("latency_ms", "throughput", "nfe", "params", "flops", "train_seconds", "peak_train_memory_mb",
              "dt_delta_2x", "dt_delta_half", "dt_fewest_nfe", "dt_speedup", "line_shape", "jacobian_sigma_max",
              "jacobian_h_sigma_max")
BY_PATTERN: dict[str, MetricSpec] = {s.pattern: s for s in SPECS}
DOCS: dict[str, str] = {s.pattern: s.doc for s in SPECS}  # `depthbench list` and the tables' definitions


def spec_for(name: str) -> MetricSpec | None:
    """The spec a recorded metric name falls under (`robust@0.1` -> `robust@<eps>`), None for an unknown name."""
    return BY_PATTERN.get(name) or BY_PATTERN.get(MetricKey.parse(name).pattern())

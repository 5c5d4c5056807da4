"""The papers' claims, declared once as data: each quoted verbatim from a seed talk (file and line), the seed's own
numbers beside it, what we measure, where the evidence lives and the rule that turns its 95% interval into a verdict.

A part that holds by construction (equal parameters, a penalty that lowers what it penalises) is a `design` fact:
stated, never counted as evidence. Where our test differs from the seed's (task, scale, arms), `differences` says so.
Claim keys are what the studies declare they serve (`@register_study(..., claims=(...))`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.reporting.paper_claims.evidence import Effect
from benchmarks.reporting.paper_claims.rules import Rule, greater, less, within
from benchmarks.reporting.paper_claims.sources import (
    CHEN,
    HUDSON,
    QUEIRUGA,
    YAN,
    YANG,
    ZHANG,
    ZHANG_CHEN,
    Quote,
    Source,
)


@dataclass(frozen=True)
class Part:
    """One measured part of a claim; `given` (if set) must hold for the part to be decidable at all (e.g. the
    truncation error above the fitting floor), else the part is inconclusive whatever its effect."""

    effect: Effect
    rule: Rule
    given: tuple[Effect, Rule] | None = None
    digits: int = 2


@dataclass(frozen=True)
class Claim:
    key: str
    source: Source
    claim: tuple[Quote, ...]  # the claim, verbatim
    numbers: tuple[Quote, ...]  # the seed's own numbers, verbatim (empty: the seed shows only figures)
    reading: str  # what we measure, in our words
    parts: tuple[Part, ...]
    design: tuple[str, ...] = ()
    differences: str = ""
    context: tuple[Effect, ...] = field(default=())  # shown beside the parts, never judged


def _q(source: Source, line: int, text: str) -> Quote:
    return Quote(source, line, text)


CPU_RUN = "depthbench run --tier cpu, then depthbench publish"
PT = dict(scale=100.0, unit=" pt")
DIP = 1.03  # a dip: the error at Δt/4 at least 3% above the error at the training Δt
DECIDABLE = 3.0  # a dip can only show where the truncation error is at least 3x the model's fitting error


def _dip_part(scheme: str, dt: str, dips: bool) -> Part:
    command = "depthbench study convergence"
    effect = Effect(f"{scheme}-trained, training Δt {dt}: RMSE(Δt/4) / RMSE(Δt)", "ratio", "pendulum", command,
                    study="convergence", quantity=f"{scheme}/dt{dt}/dip_ratio")
    given = Effect(f"{scheme}, Δt {dt}: truncation error / fitting error", "ratio", "pendulum", command,
                   study="convergence", quantity=f"{scheme}/dt{dt}/trunc_over_fit")
    rule = greater(DIP, f"dip ratio > {DIP}") if dips else less(DIP, f"dip ratio < {DIP} (no dip)")
    return Part(effect, rule, given=(given, greater(DECIDABLE, f"truncation / fit > {DECIDABLE:g}")))


# The seed's grid (002:145): Gaussian noise σ on 0-255 pixels, FGSM ε on [0, 1] pixels.
YAN_GRID = (("noise σ = 50", "noise50_difference"), ("noise σ = 75", "noise75_difference"),
            ("noise σ = 100", "noise100_difference"), ("FGSM ε = 0.15", "fgsm0.15_difference"),
            ("FGSM ε = 0.3", "fgsm0.3_difference"), ("FGSM ε = 0.5", "fgsm0.5_difference"))

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "queiruga-dip", QUEIRUGA,
        claim=(_q(QUEIRUGA, 246, "There's a noticeable dip in error for ODE-Net(Euler)."),
               _q(QUEIRUGA, 253, "The models embedded in Midpoint and RK4 have no dip.")),
        numbers=(),
        reading="pendulum convergence test: a tanh rate trained inside Euler, midpoint and RK4 steps at training "
        "Δt 1, 0.5 and 0.25 (horizon 1), then run at Δt/4; the dip ratio RMSE(Δt/4) / RMSE(Δt), decided only where "
        "the scheme's truncation error at the training Δt is at least 3x the model's fitting error (below that no "
        "dip can show, whatever the model learned)",
        parts=tuple(_dip_part(s, dt, s == "euler") for s in ("euler", "midpoint", "rk4")
                    for dt in ("1", "0.5", "0.25")),
    ),
    Claim(
        "queiruga-image-transfer", QUEIRUGA,
        claim=(_q(QUEIRUGA, 396, "Expect forward Euler (ResNet) to overfit"),
               _q(QUEIRUGA, 405, "ContinuousNet(Euler): same dip as pendulum"),
               _q(QUEIRUGA, 406, "ContinuousNet(RK4): re-manifests with many  $N_t$  and integrators")),
        numbers=(),
        reading="the cpu tier's models re-run with twice their trained steps (same scheme): the test accuracy "
        "change (dt_delta_2x, points); a dip is a loss when refined, re-manifesting a change within ±1 point",
        parts=(Part(Effect("ResNet: accuracy change at 2× steps", "value", "fashion-mnist", CPU_RUN, tier="cpu",
                           metric="dt_delta_2x", model="resnet", unit=" pt"), less(0.0, "change < 0 (a dip)")),
               Part(Effect("ContinuousNet(Euler): accuracy change at 2× steps", "value", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="dt_delta_2x", model="continuousnet-euler", unit=" pt"),
                    less(0.0, "change < 0 (a dip)")),
               Part(Effect("ContinuousNet(RK4): accuracy change at 2× steps", "value", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="dt_delta_2x", model="continuousnet", unit=" pt"),
                    within(-1.0, 1.0, "|change| < 1 pt"))),
        differences="Fashion-MNIST at the cpu tier's size (3 steps per stage), not CIFAR-10 at 32-32-32",
    ),
    Claim(
        "queiruga-parity", QUEIRUGA,
        claim=(_q(QUEIRUGA, 467, "ContinuousNet has equivalent accuracy to the corresponding ResNet"),),
        numbers=(_q(QUEIRUGA, 470, "ResNet-200 (v2) (baseline)\t3.19 M\t33-33-33\t93.84%"),
                 _q(QUEIRUGA, 475, "ContinuousNet(RK4-classic)\t3.19 M\t32-32-32\t<u>93.57%</u>")),
        reading="the cpu tier's continuousnet (RK4) and resnet, paired by seed: test accuracy difference",
        parts=(Part(Effect("ContinuousNet(RK4) − ResNet test accuracy", "difference", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="accuracy", model="continuousnet", versus="resnet", **PT),
                    within(-0.01, 0.01, "|difference| < 1 pt")),),
        design=("equal parameters by construction (the zoo builds both at one size class: 22,762 each)",),
        differences="Fashion-MNIST, width 16, 3 blocks per stage; the seed: CIFAR-10, 3.19 M parameters",
    ),
    Claim(
        "queiruga-compression", QUEIRUGA,
        claim=(_q(QUEIRUGA, 486, "It can even be made *shorter*, without sacrificing much accuracy."),
               _q(QUEIRUGA, 487, "We can reduce the inference time.")),
        numbers=(_q(QUEIRUGA, 490, "ContinuousNet(RK4-classic)\t3.19 M\t<u>32-32-32</u>\t<u>93.57%</u>\t32.55"),
                 _q(QUEIRUGA, 492, "↳ Manifest as (RK4-3/8)\tSame weights\t<u>11-11-11</u>\t<u>93.44%</u>\t11.06"),
                 _q(QUEIRUGA, 493, "↳ Manifest as (RK4-3/8)\tSame weights\t<u>6-6-6</u>\t<u>92.28%</u>\t6.25")),
        reading="a ContinuousNet (RK4, 8 steps per stage) re-run with the fewest RK4 steps whose VALIDATION accuracy "
        "stays within 0.5 pt of the trained setting's; its test accuracy drop, NFE ratio and whole-test-set "
        "throughput speed-up (a cheaper scheme at the same steps is kept apart, as context)",
        parts=(Part(Effect("test accuracy drop with fewer steps", "value", "fashion-mnist",
                           "depthbench study compression", study="compression", quantity="fewer_steps_drop", **PT),
                    less(0.01, "drop < 1 pt")),
               Part(Effect("NFE ratio, trained / fewer steps", "ratio", "fashion-mnist", "depthbench study compression",
                           study="compression", quantity="fewer_steps_nfe_ratio"), greater(1.0, "ratio > 1")),
               Part(Effect("throughput speed-up with fewer steps", "ratio", "fashion-mnist",
                           "depthbench study compression", study="compression", quantity="fewer_steps_speedup"),
                    greater(1.0, "speed-up > 1"))),
        context=(Effect("cheaper scheme: test accuracy drop", "value", "fashion-mnist", "depthbench study compression",
                        study="compression", quantity="cheaper_scheme_drop", **PT),
                 Effect("cheaper scheme: NFE ratio", "ratio", "fashion-mnist", "depthbench study compression",
                        study="compression", quantity="cheaper_scheme_nfe_ratio")),
        differences="Fashion-MNIST, 8 steps per stage; the seed: CIFAR-10, 32 steps per stage",
    ),
    Claim(
        "queiruga-refinement", QUEIRUGA,
        claim=(_q(QUEIRUGA, 571, "Save time by training on shorter graphs initially"),
               _q(QUEIRUGA, 640, "incremental-in-depth training scheme that improves model quality, while "
                  "significantly decreasing training time")),
        numbers=(),
        reading="ContinuousNet refined 1 → 2 → 4 → 8 steps during training (optimiser state carried through each "
        "refinement) against 8 steps from the start: wall time to reach the full arm's final validation accuracy "
        "minus 1 pt, and test accuracy at equal wall time",
        parts=(Part(Effect("time to target, refined / full", "ratio", "fashion-mnist", "depthbench study refinement",
                           study="refinement", quantity="time_to_target_ratio"), less(1.0, "ratio < 1")),
               Part(Effect("refined − full test accuracy at equal wall time", "difference", "fashion-mnist",
                           "depthbench study refinement", study="refinement", quantity="accuracy_difference", **PT),
                    greater(0.0, "difference > 0"))),
        differences="Fashion-MNIST, 8 steps per stage; the seed: CIFAR-10",
    ),
    Claim(
        "chen-parameters", ZHANG_CHEN,
        claim=(_q(ZHANG_CHEN, 131, "Same performance with fewer parameters"),),
        numbers=(_q(ZHANG_CHEN, 128, "ResNet\t0.41%\t0.60 M"), _q(ZHANG_CHEN, 129, "ODE-Net\t0.42%\t0.22 M")),
        reading="an ODE-Net at 0.37× the ResNet's parameters (the seed's 0.22 M / 0.60 M), both trained 12 epochs "
        "with the same recipe (their validation gain over the last 2 epochs beside): test accuracy difference",
        parts=(Part(Effect("ODE-Net − ResNet test accuracy", "difference", "fashion-mnist",
                           "depthbench study odenet-params", study="odenet-params", quantity="accuracy_difference",
                           **PT), within(-0.01, 0.01, "|difference| < 1 pt")),),
        # Whether the arms reached the plateau the reading asks for: shown beside the verdict, so a gap left by
        # an ODE-Net still climbing is read as such (odenet_params.PLATEAU_GAIN: a plateau gains < 0.2 pt).
        context=(Effect("ODE-Net's validation gain over its last 2 epochs", "value", "fashion-mnist",
                        "depthbench study odenet-params", study="odenet-params", quantity="odenet_plateau_gain", **PT),
                 Effect("ResNet's validation gain over its last 2 epochs", "value", "fashion-mnist",
                        "depthbench study odenet-params", study="odenet-params", quantity="resnet_plateau_gain",
                        **PT)),
        design=("fewer parameters by construction (0.37× the ResNet's)",),
        differences="Fashion-MNIST; the seed: MNIST",
    ),
    Claim(
        "chen-memory", CHEN,
        claim=(_q(CHEN, 342, "ODE-Net\t0.42%\t0.22 M\t$O(1)$"),),
        numbers=(_q(CHEN, 341, "ResNet\t0.41%\t0.60 M\t$O(L)$"),),
        reading="peak training memory per extra RK4 step (the depth L), with backpropagation through the solver and "
        "with the adjoint, each point the peak of a fresh process",
        parts=(Part(Effect("direct backprop: peak memory per extra step", "value", "ode-state",
                           "depthbench study memory", study="memory", quantity="direct_peak_bytes_slope", scale=1e-6,
                           unit=" MB"), greater(0.0, "grows with L")),
               Part(Effect("adjoint's peak memory per extra step / direct backprop's", "value", "ode-state",
                           "depthbench study memory", study="memory", quantity="adjoint_peak_bytes_slope",
                           over="direct_peak_bytes_slope", scale=100.0, unit=" %"),
                    within(-0.05, 0.05, "|ratio| < 5% (constant in L, where direct grows)"))),
    ),
    Claim(
        "chen-test-time-cost", CHEN,
        claim=(_q(CHEN, 373, "we can control the time-cost at **test** time!!!!"),),
        numbers=(),
        reading="the cpu tier's neural-ode re-run at rtol = atol from 1e-1 to 1e-5: mean NFE at the tightest over the "
        "loosest tolerance (accuracy at each tolerance as context)",
        parts=(Part(Effect("NFE at tolerance 1e-5 / at 1e-1", "ratio", "fashion-mnist", "depthbench study adjoint-cost",
                           study="adjoint-cost", quantity="test_time_nfe_range"), greater(1.0, "ratio > 1")),),
        context=(Effect("test accuracy at tolerance 1e-1", "value", "fashion-mnist", "depthbench study adjoint-cost",
                        study="adjoint-cost", quantity="accuracy_tol0.1", **PT),
                 Effect("test accuracy at tolerance 1e-5", "value", "fashion-mnist", "depthbench study adjoint-cost",
                        study="adjoint-cost", quantity="accuracy_tol1e-05", **PT)),
    ),
    Claim(
        "chen-backward-cost", CHEN,
        claim=(_q(CHEN, 413, "Number of evaluations in the backward pass is roughly half of the forward (credit to "
                  "adjoint sensitivity)"),),
        numbers=(),
        reading="the cpu tier's neural-ode with the adjoint at its trained tolerance: mean NFE of the backward "
        "(adjoint) solve over the forward's, on test batches",
        parts=(Part(Effect("backward / forward NFE", "ratio", "fashion-mnist", "depthbench study adjoint-cost",
                           study="adjoint-cost", quantity="backward_forward_ratio"),
                    within(0.35, 0.65, "ratio in [0.35, 0.65] (roughly half)")),),
    ),
    Claim(
        "yan-robustness", YAN,
        claim=(_q(YAN, 155, "ODE-Nets outperform CNN trained on non-perturbed images!"),),
        numbers=(_q(YAN, 145, "MNIST\t$\\sigma = 50$\t$\\sigma = 75$\t$\\sigma = 100$\tFGSM-0.15\tFGSM-0.3\tFGSM-0.5"),
                 _q(YAN, 146, "CNN\t98.1 \\pm 0.7\t85.8 \\pm 4.3\t56.4 \\pm 5.6\t63.4 \\pm 2.3\t24.0 \\pm 8.9\t8.3 "
                    "\\pm 3.2"),
                 _q(YAN, 147, "ODENet\t98.7\\pm0.6\t90.6\\pm5.4\t73.2\\pm8.6\t83.5\\pm0.9\t42.1\\pm2.4\t14.3\\pm2.1")),
        reading="the cpu tier's parameter-matched resnet (the CNN) and neural-ode, on the whole test set under the "
        "seed's Gaussian noise (σ = 50, 75, 100 of 255) and FGSM (ε = 0.15, 0.3, 0.5): ODE-Net − CNN accuracy",
        parts=tuple(Part(Effect(f"ODE-Net − CNN accuracy, {label}", "difference", "fashion-mnist",
                                "depthbench study ode-robustness", study="ode-robustness", quantity=quantity, **PT),
                         greater(0.0, "difference > 0"))
                    for label, quantity in YAN_GRID),
        design=("parameters matched by the zoo's construction (ResNet 22,762, ODE-Net 21,090)",),
        differences="Fashion-MNIST, not MNIST; the zoo's ResNet stands for the seed's CNN",
    ),
    Claim(
        "yang-robustness", YANG,
        claim=(_q(YANG, 140, "Accuracy slightly drops but robustness is largely improved!"),),
        numbers=(_q(YANG, 125, "\tResNet-110\t93.58\t53.70\t41.98\t5.93\t5.60"),
                 _q(YANG, 126, "\tIn-ResNet-110\t92.28\t72.67\t55.24\t32.05\t31.74")),
        reading="the cpu tier's inresnet and resnet, paired by seed: clean accuracy drop, and the gain in PGD accuracy "
        "(ε = 0.05, the tier's smallest radius) and in accuracy under Gaussian noise (σ = 0.2)",
        parts=(Part(Effect("ResNet − In-ResNet clean accuracy (the drop)", "difference", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="accuracy", model="resnet", versus="inresnet", **PT),
                    less(0.02, "drop < 2 pt (slight)")),
               Part(Effect("In-ResNet − ResNet PGD accuracy, ε = 0.05", "difference", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="pgd@0.05", model="inresnet", versus="resnet", **PT),
                    greater(0.0, "gain > 0")),
               Part(Effect("In-ResNet − ResNet accuracy under noise σ = 0.2", "difference", "fashion-mnist", CPU_RUN,
                           tier="cpu", metric="noise@0.2", model="inresnet", versus="resnet", **PT),
                    greater(0.0, "gain > 0"))),
        differences="Fashion-MNIST at the cpu tier's size; the seed: CIFAR-10, ResNet-110",
    ),
    Claim(
        "yang-init", YANG,
        claim=(_q(YANG, 232, "Becoming non-residual: accuracy drops and robustness rises"),),
        numbers=(_q(YANG, 220, "$\\mathcal{U}[0.00, 0.10]$\t93.51\t55.15\t46.74\t8.39\t7.96"),
                 _q(YANG, 224, "$\\mathcal{U}[0.30, 0.40]$\t90.62\t79.35\t55.95\t41.07\t40.84")),
        reading="inresnet trained with λ initialised from U[0, 0.1] and from U[0.3, 0.4] (and the ranges between): "
        "clean accuracy drop and PGD (ε = 0.05) gain from the first to the last",
        parts=(Part(Effect("accuracy, λ ~ U[0, 0.1] − λ ~ U[0.3, 0.4]", "value", "fashion-mnist",
                           "depthbench study inresnet-init", study="inresnet-init", quantity="accuracy_drop", **PT),
                    greater(0.0, "drop > 0")),
               Part(Effect("PGD accuracy, λ ~ U[0.3, 0.4] − λ ~ U[0, 0.1]", "value", "fashion-mnist",
                           "depthbench study inresnet-init", study="inresnet-init", quantity="pgd_gain", **PT),
                    greater(0.0, "gain > 0"))),
        differences="Fashion-MNIST; the seed: CIFAR-10, In-ResNet-110",
    ),
    Claim(
        "hudson-stiffness", HUDSON,
        claim=(_q(HUDSON, 327, "Penalization Reduces Generalization Error in Climate Test Case II"),),
        numbers=(_q(HUDSON, 310, "Summary of results for 25 trials (initializations)"),
                 _q(HUDSON, 313, "RES (med)\t0.00\t5.4e-03\t3.9e-02\t3.52\t17903"),
                 _q(HUDSON, 314, "RES L2 (med)\t25.76\t1.2e-02\t3.7e-02\t2.61\t23547"),
                 _q(HUDSON, 315, "RES stiff (med)\t0.05\t1.2e-02\t3.8e-02\t0.05\t1848662")),
        reading="the seed's arms (ResNet; with an L2 penalty; with the Gelfand spectral-radius penalty) on the "
        "seed's Alpine 02 regression: generalisation error (RMSE on 10,000 fresh points) of the stiffness-penalised "
        "ResNet over the plain one, paired by trial",
        parts=(Part(Effect("generalisation error, stiffness-penalised / plain", "ratio", "alpine02",
                           "depthbench study stiffness-regression", study="stiffness-regression",
                           quantity="stiff_ge_population_ratio"), less(1.0, "ratio < 1")),),
        context=(Effect("generalisation error, L2-penalised / plain", "ratio", "alpine02",
                        "depthbench study stiffness-regression", study="stiffness-regression",
                        quantity="l2_ge_population_ratio"),
                 # the seed's own estimate: its 100 test points, noisier than the 10,000
                 Effect("test RMSE on the seed's 100 test points, stiffness-penalised / plain", "ratio", "alpine02",
                        "depthbench study stiffness-regression", study="stiffness-regression",
                        quantity="stiff_ge_ratio"),
                 # how far the arms are from the seed's fit: a ratio of under-fitted models says little
                 Effect("training RMSE of the plain ResNet (the seed's: 0.00389, 003:242)", "value", "alpine02",
                        "depthbench study stiffness-regression", study="stiffness-regression",
                        quantity="res_er"),
                 # why the seed's stiffness column (3.52 / 2.61 / 0.05; Alpine 02's df 2.64) is not comparable
                 Effect("eigenvalue stiffness ratio of the untrained network (median over layers and training "
                        "points)", "value", "alpine02", "depthbench study stiffness-regression",
                        study="stiffness-regression", quantity="init_stiffness"),
                 Effect("fraction of the trained plain ResNet's tanh units saturated (tanh' < 1e-6)", "value",
                        "alpine02", "depthbench study stiffness-regression", study="stiffness-regression",
                        quantity="res_saturated")),
        design=("the penalised arm's stiffness is lower because that is what it penalises: measured and shown, "
                "not evidence",),
        differences="the seed's Alpine 02 test case (its climate model's data is not available); 3 trials where "
        "the seed has 25 (a penalised arm takes 13-18 CPU-minutes; 3 trials take 29.6 minutes on 2 cores); the "
        "generalisation error on 10,000 fresh points where the seed uses 100 test points (on the 100 a plain arm's "
        "RMSE was 0.048 against 0.058: noise in every ratio; the 100-point ratio is shown as context); torch's "
        "reduce-on-plateau (003:238) with a patience of 100 epochs (the seed names no patience; torch's default of 10 "
        "cut the rate to 1e-8 by epoch ~400 and left the plain ResNet at a training RMSE of 0.26), each arm trained "
        "to its plateau (rate 1e-6; `epochs` in the study's rows) or 4,000 epochs, where the seed trains 10k: the "
        "plain arm's training RMSE (context) is still above the seed's, so the ratio compares less-fitted models; the "
        "seed's stiffness column is not reproduced and not compared: a width-20 layer's Jacobian has an eigenvalue "
        "ratio above 3.52 before any training (context), training saturates tanh units, whose near-zero rows make "
        "the Jacobians nearly singular and the ratio orders of magnitude larger (the study's `*_stiffness`), and the "
        "talk does not say how its ratio was computed",
    ),
    Claim(
        "zhang-line-shape", ZHANG,
        claim=(_q(ZHANG, 436, "Training accuracy increases with LSS decreasing!"),
               _q(ZHANG, 442, "Both OTS and LSS of ResNets are closer to 1.")),
        numbers=(),
        reading="the seed's line-shape score of a ResNet's representation tracks after every epoch against its "
        "training accuracy (Spearman correlation), and the final LSS of a plain (non-residual) network minus the "
        "ResNet's",
        parts=(Part(Effect("Spearman correlation of LSS and training accuracy over epochs", "correlation",
                           "fashion-mnist", "depthbench study line-shape", study="line-shape",
                           quantity="lss_accuracy_spearman"),
                    less(0.0, "correlation < 0")),
               Part(Effect("LSS, plain − ResNet", "value", "fashion-mnist", "depthbench study line-shape",
                           study="line-shape", quantity="lss_plain_minus_resnet"),
                    greater(0.0, "difference > 0 (ResNet closer to 1)"))),
        differences="Fashion-MNIST; OTS is not measured",
    ),
)

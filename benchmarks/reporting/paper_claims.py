"""The papers' claims that `depthbench claims` checks: what each paper says, where our evidence comes from, and which
rule (benchmarks/reporting/claims_board.py) turns that evidence into a verdict. Declarative: no logic here.

`paper_number` is what the paper states, copied from it; where the claim is qualitative (no single number to
copy) it says so rather than paraphrasing a figure. `evidence` names the study files (results/<study>/<task>.json)
or record metrics a rule reads; `command` produces them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperClaim:
    key: str  # (a) .. (g): the rule of the same key decides it
    claim: str
    paper: str
    arxiv: str  # as in the zoo cards ("" where the paper has none)
    url: str
    paper_number: str
    evidence: str
    command: str


QUEIRUGA = ("Queiruga et al. 2020, Continuous-in-Depth Neural Networks", "2008.02389")
CHEN = ("Chen et al. 2018, Neural Ordinary Differential Equations", "1806.07366")
YAN = ("Yan et al. 2020, On Robustness of Neural Ordinary Differential Equations", "1910.05513")
YANG = ("Yang et al. 2020, Interpolation between Residual and Non-Residual Networks", "1909.06545")


def _arxiv(paper: tuple[str, str]) -> dict[str, str]:
    return {"paper": paper[0], "arxiv": paper[1], "url": f"https://arxiv.org/abs/{paper[1]}"}


CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim(
        key="a", claim="An RK4-trained ContinuousNet transfers across step counts and schemes; Euler-trained "
        "models and ResNets dip (error lowest at the training Δt, rising when refined)", **_arxiv(QUEIRUGA),
        paper_number="qualitative (convergence-test figures: error vs Δt)",
        evidence="convergence study (pendulum, CPU) and depth-transfer study (image tasks, from tier records)",
        command="depthbench convergence; depthbench run --tier standard, then depthbench claims"),
    PaperClaim(
        key="b", claim="Fewer steps after training (compression) gives faster inference with a small accuracy drop",
        **_arxiv(QUEIRUGA), paper_number="CIFAR-10 (the authors' talk table): CN RK4 32-32-32 93.57 % -> manifested "
        "RK4-3/8 6-6-6 92.28 %, inference 32.55 s -> 6.25 s (×5.2)",
        evidence="compression study: trained_accuracy, compressed_accuracy, latency_speedup, nfe_ratio",
        command="depthbench study compression"),
    PaperClaim(
        key="c", claim="Refinement (training shallow, then deepening) saves training time at about the same accuracy",
        **_arxiv(QUEIRUGA), paper_number="CIFAR-10 (the authors' README): CN RK4 2-2-2 91.01 % vs refined RK4 "
        "91.09 % (no training time stated with it)",
        evidence="refinement study: refined/full accuracy and train seconds",
        command="depthbench study refinement"),
    PaperClaim(
        key="d", claim="An ODE-Net matches a ResNet's accuracy with fewer parameters, and with the adjoint its memory "
        "is O(1) in the number of steps", **_arxiv(CHEN),
        paper_number="MNIST test error: ResNet 0.41 % (0.60 M params, O(L) memory) vs ODE-Net 0.42 % (0.22 M, O(1))",
        evidence="memory study: peak-memory slope per step (direct, adjoint), params and accuracy of each model",
        command="depthbench study memory"),
    PaperClaim(
        key="e", claim="ODE-Nets are more robust than CNNs to Gaussian noise and FGSM", **_arxiv(YAN),
        paper_number="qualitative here (the paper's tables on MNIST/SVHN/ImageNet10; no number copied)",
        evidence="records of a citable tier (standard/paper) on MNIST-scale tasks: noise@σ and fgsm@ε, neural-ode "
        "vs resnet",
        command="depthbench run --tier standard (GPU)"),
    PaperClaim(
        key="f", claim="In-ResNet trades about 1 point of clean accuracy for large PGD gains", **_arxiv(YANG),
        paper_number="CIFAR-10: ResNet-110 93.58 % clean / 5.60 % PGD vs In-ResNet-110 92.28 % / 31.74 %",
        evidence="records of a citable tier (standard/paper) on CIFAR-10: accuracy and pgd@8/255, inresnet vs resnet",
        command="depthbench run --tier standard (GPU)"),
    PaperClaim(
        key="g", claim="A stiffness penalty lowers the network's stiffness without costing accuracy, and helps "
        "robustness or depth transfer", paper="Hudson et al. 2023, Measuring Stiffness in Residual Neural Networks",
        arxiv="", url="https://www.ksargsyan.net/publication/hudson-2023-a/",
        paper_number="qualitative (the paper measures stiffness; the penalty is its suggestion)",
        evidence="stiffness study: plain vs penalised accuracy, robust accuracy, stiffness, transfer error",
        command="depthbench study stiffness"),
)

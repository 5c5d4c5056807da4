"""`depthbench check MODEL`: the model contract (zoo/contract.py) tested on CPU in seconds, before any GPU time.

For every distinct input shape of the tasks asked for, on random inputs: the model builds; its output is one
floating tensor of the task's shape, finite in train and eval mode; eval forwards are deterministic; input
gradients are non-zero; a sample's output does not depend on the rest of its batch (unless the model declares
`batch_coupled = True`); a model declaring `stochastic = True` must instead give the same eval forward under the
same seed of torch's global RNG (and its comparisons below run under one), its batch invariance is not judged;
`manifest()` reproduces the model and shares its parameters when depth transfer is offered, and `tracks()` gives
one track per stage when trajectories are; adaptive models report NFE; parameters and FLOPs can be counted;
`state_dict` round-trips into a fresh build; once: the model card is valid and claims only capabilities the model
has. `depthbench run` runs this first and refuses a model that fails.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import zoo
from benchmarks.data.tasks import Task, get_task, list_tasks
from zoo import contract
from zoo.cards import validate_card
from zoo.registry import has_card

BATCH = 4
# Seconds one step (a build, a forward, a round trip) may take: every in-tree model needs well under a second per step
# at the smoke size and a few seconds at the paper size on a CPU; a step past this is taken for a hang.
CHECK_TIME_LIMIT = 120.0


@dataclass(frozen=True)
class Check:
    name: str
    scope: str  # the input shape it ran on, or "card"
    ok: bool
    detail: str = ""


@dataclass
class CheckReport:
    model: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def text(self) -> str:
        lines = [f"depthbench check {self.model}: {'PASS' if self.ok else 'FAIL'} "
                 f"({len(self.checks) - len(self.failures)} of {len(self.checks)} checks passed)"]
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} [{c.scope}] {c.name}" + (f": {c.detail}" if c.detail else ""))
        return "\n".join(lines)


class ModelCheckFailed(ValueError):
    """A model failed `depthbench check`; the message is the report."""


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}".strip()


def _inputs(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if len(shape) == 3:
        return torch.rand((BATCH, *shape), generator=generator)  # images in [0, 1]
    return torch.randn((BATCH, *shape), generator=generator)


def _forward(model: nn.Module, x: torch.Tensor, stochastic: bool) -> torch.Tensor:
    """`model(x)` without gradients; for a declared stochastic model under a fixed seed (comparisons then compare
    the same draw). Deterministic models run unseeded, so randomness left on in eval mode is caught."""
    with torch.no_grad():
        if not stochastic:
            return model(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return model(x)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5)


class StepTimedOut(BaseException):
    """A step of the check ran past its time limit. A BaseException, like KeyboardInterrupt, so that a model's own
    `except Exception` cannot swallow it and hang on."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise StepTimedOut in the block once `seconds` have passed.

    A SIGALRM timer on the main thread: it stops what a hanging model does in Python (loops, sleeps, waits on a
    socket or a lock, and torch calls, between two of which the handler runs), in this process, so the check keeps
    the model in memory for its next steps and costs no process start per model (`depthbench run` checks fourteen).
    A single native call that never returns is beyond it (a child process could be killed, but would reload torch
    and the model for every check). Off the main thread, or where SIGALRM does not exist, there is no limit. A
    timer already running (an outer limit) is re-armed with what is left of it."""
    usable = seconds is not None and hasattr(signal, "setitimer") and \
        threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise StepTimedOut(f"did not finish within {seconds:g} s (a hang in the model's constructor or forward?); "
                           "`depthbench check --time-limit S` allows longer")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


class _Runner:
    """Runs the checks of one input shape, turning every exception (and a step past its time limit) into a failed
    check with its message."""

    def __init__(self, report: CheckReport, scope: str, seconds: float | None = None) -> None:
        self.report, self.scope, self.seconds = report, scope, seconds

    def __call__(self, name: str, fn: Callable[[], str | None]) -> bool:
        try:
            with time_limit(self.seconds):
                detail = fn() or ""
        except StepTimedOut as error:
            self.report.checks.append(Check(name, self.scope, False, str(error)))
            return False
        except Exception as error:  # noqa: BLE001 - every way a model can break is a failed check, not a crash
            self.report.checks.append(Check(name, self.scope, False, _one_line(error)))
            return False
        self.report.checks.append(Check(name, self.scope, True, detail))
        return True


def _check_shape(report: CheckReport, name: str, task: Task, overrides: Mapping[str, Any],
                 scope: str, seconds: float | None = CHECK_TIME_LIMIT) -> frozenset[str] | None:
    """The checks of one input shape; returns the capabilities the model offers there (None: it did not build)."""
    run = _Runner(report, scope, seconds)
    out_shape = (task.num_classes,)
    x = _inputs(task.input_shape)
    built: dict[str, nn.Module] = {}

    def build() -> str:
        torch.manual_seed(0)
        built["model"] = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes,
                                          **overrides)
        return ""

    if not run("builds", build):
        return None
    model = built["model"]
    have = contract.capabilities(model)

    def output(mode: str) -> Callable[[], str]:
        def go() -> str:
            model.train(mode == "train")
            with torch.no_grad():
                out = contract.validate_output(model(x), BATCH, out_shape, where=f"{mode} mode", dtype=torch.float32)
            return f"{tuple(out.shape)} {str(out.dtype).removeprefix('torch.')}"
        return go

    if not (run("output shape, dtype, finite (train mode)", output("train"))
            and run("output shape, dtype, finite (eval mode)", output("eval"))):
        return have
    model.eval()
    stochastic = "stochastic" in have

    def deterministic() -> str:
        a, b = _forward(model, x, stochastic), _forward(model, x, stochastic)
        if not torch.equal(a, b):
            if stochastic:
                raise AssertionError(f"two eval forwards under the same seed differ by {(a - b).abs().max().item():.3g}"
                                     ": a stochastic model must draw from torch's global RNG (zoo/contract.py)")
            raise AssertionError(f"two eval forwards of the same input differ by {(a - b).abs().max().item():.3g} "
                                 "(dropout or other randomness left on in eval mode? a model random by design "
                                 "declares `stochastic = True`)")
        return "reproducible under a fixed seed (declared stochastic)" if stochastic else ""

    def gradients() -> str:
        inputs = x.clone().requires_grad_(True)
        out = model(inputs)
        loss = F.cross_entropy(out, torch.arange(BATCH) % task.num_classes) if task.kind == "classification" \
            else out.square().mean()
        (grad,) = torch.autograd.grad(loss, inputs, allow_unused=True)
        if grad is None or not torch.isfinite(grad).all() or grad.abs().sum() == 0:
            raise AssertionError("d loss / d input is zero, missing or non-finite: gradient attacks would be "
                                 "blind (is the input detached, or quantised?)")
        return ""

    def batch_invariance() -> str:
        if stochastic:  # a batch's noise depends on its shape: differences would be fresh draws, not coupling
            return "not judged: the model is stochastic (declared); records leave batch coupling unmeasured"
        other = _inputs(task.input_shape, seed=1)
        with torch.no_grad():
            alone = model(x[:1])
            in_batch = model(x)[:1]
            in_other = model(torch.cat([x[:1], other[1:]]))[:1]
        if _close(alone, in_batch) and _close(alone, in_other):
            return ""
        if "batch_coupling" in have:
            return "outputs depend on the batch, as the model declares (batch_coupled = True)"
        raise AssertionError("a sample's eval output changes with the rest of its batch (batch statistics in eval "
                             "mode?); fix it, or declare it with `batch_coupled = True` on the model")

    run("deterministic eval forward", deterministic)
    run("non-zero input gradients", gradients)
    run("batch invariance (or declared coupling)", batch_invariance)

    if "depth_transfer" in have:
        def manifest() -> str:
            solvers = list(model.solvers)
            if len(solvers) != len(model.blocks):
                raise AssertionError(f"{len(solvers)} solvers for {len(model.blocks)} blocks")
            first = solvers[0]
            same = model.manifest(first.scheme, rtol=first.rtol, atol=first.atol) if first.adaptive else \
                model.manifest(first.scheme, [s.n_steps for s in solvers])
            other = model.manifest("rk4", 2)
            if not _close(_forward(same, x, stochastic), _forward(model, x, stochastic)):
                raise AssertionError("manifest() with the trained solver settings changes the output")
            contract.validate_output(_forward(other, x, stochastic), BATCH, out_shape, where="manifest('rk4', 2)",
                                     dtype=torch.float32)
            ids = {id(p) for p in model.parameters()}
            if {id(p) for p in other.parameters()} != ids:
                raise AssertionError("manifest() must share the model's parameter objects, not copy them")
            return ""

        run("manifest() consistency (depth transfer)", manifest)

    if "trajectories" in have:
        def tracks() -> str:
            with torch.no_grad():
                found = model.tracks(x, 4)
            if not found or len(found) != len(model.blocks):
                raise AssertionError(f"tracks() gave {len(found or [])} tracks for {len(model.blocks)} blocks "
                                     "(one per stage expected; a model without stages should not define tracks)")
            for track in found:
                if len(track.states) < 2 or any(s.shape[0] != BATCH for s in track.states):
                    raise AssertionError("each track needs >= 2 states of the batch's size")
            return ""

        run("tracks() for the trajectory diagnostics", tracks)

    def nfe() -> str:
        adaptive = contract.is_adaptive(model)
        if "nfe" not in have:
            if adaptive:
                raise AssertionError("an adaptive model must report `nfe` (function evaluations of the last forward)")
            return "not reported (fixed cost): NFE columns will read n/a"
        with torch.no_grad():
            model(x)
        count = model.nfe
        if isinstance(count, bool) or not isinstance(count, int | float) or count < 0 or (adaptive and count == 0):
            raise AssertionError(f"nfe after a forward is {count!r}; expected a positive count")
        return f"nfe = {count}"

    def cost() -> str:
        from benchmarks.evaluation.metrics import count_flops

        params = zoo.count_params(model)
        if params == 0:
            raise AssertionError("no trainable parameters")
        return f"{params:,} parameters, {count_flops(model, x[:1]):,} FLOPs per sample"

    def round_trip() -> str:
        before = set(built_fresh().state_dict())
        expected = _forward(model, x, stochastic)
        state = copy.deepcopy(model.state_dict())
        extra = sorted(set(state) - before)
        if extra:
            raise AssertionError(f"state_dict gains {len(extra)} key(s) after a forward (e.g. {extra[0]}): "
                                 "checkpoints would not load into a fresh model")
        fresh = built_fresh()
        fresh.load_state_dict(state)  # strict: missing or unexpected keys fail
        fresh.eval()
        if not _close(_forward(fresh, x, stochastic), expected):
            raise AssertionError("a fresh build loaded with the state_dict gives other outputs")
        return f"{len(state)} keys"

    def built_fresh() -> nn.Module:
        torch.manual_seed(1)
        return zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes, **overrides)

    run("NFE reported when adaptive", nfe)
    run("parameter count and FLOPs", cost)
    run("state_dict round trip", round_trip)
    return have


def check_model(name: str, tasks: Sequence[str | Task] | None = None,
                overrides: Mapping[str, Any] | None = None, *,
                time_limit: float | None = CHECK_TIME_LIMIT) -> CheckReport:
    """Run the contract on `name` for every distinct (input shape, classes, kind) of `tasks` (default: all); a step
    that takes longer than `time_limit` seconds fails (None: no limit)."""
    report = CheckReport(name)
    card = zoo.model_card(name)  # unknown names and name clashes raise here, with their own message
    task_objects = [t if isinstance(t, Task) else get_task(t) for t in (tasks or list_tasks())]
    groups: dict[tuple, list[Task]] = {}
    for task in task_objects:
        groups.setdefault((tuple(task.input_shape), task.num_classes, task.kind), []).append(task)
    capabilities: set[str] | None = None  # None until one shape builds: claims cannot be judged without a model
    for (shape, _, _), same in groups.items():
        scope = f"{', '.join(t.name for t in same)} {shape}"
        with torch.random.fork_rng(devices=[]):  # builds seed the global RNG: leave the caller's stream as it was
            found = _check_shape(report, name, same[0], dict(overrides or {}), scope, time_limit)
        if found is not None:
            capabilities = (capabilities or set()) | found
    problems = validate_card(card)
    if not has_card(name):
        problems = ["no model card: give the constructor a `card` attribute (a zoo.ModelCard or a dict of its "
                    "fields; see zoo/cards.py)"]
    unclaimed = sorted(set(card.capabilities) - capabilities) if capabilities is not None else []
    if unclaimed:
        problems.append(f"capabilities: the card claims {', '.join(unclaimed)}, which the model does not offer "
                        "(zoo/contract.py says what each needs)")
    report.checks.append(Check("model card valid", "card", not problems, "; ".join(problems)))
    return report


def require_passing(names: Sequence[str], tasks: Sequence[str | Task], overrides: Mapping[str, Any]) -> None:
    """Raise ModelCheckFailed with the reports of every model in `names` that fails the contract."""
    failed = [report for report in (check_model(n, tasks, overrides) for n in dict.fromkeys(names)) if not report.ok]
    if failed:
        raise ModelCheckFailed("\n".join(r.text() for r in failed) + "\nfix what FAILs above (zoo/contract.py "
                               "describes the contract); `depthbench check MODEL` reruns these checks")

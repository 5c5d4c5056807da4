"""Epoch time of the torchdiffeq example's ResNet (6 blocks, 64 channels, GroupNorm) on fashion-mnist:
depthbench's training loop (data on the device, bf16 autocast, channels_last, batch 256) against
a plain fp32 loop (DataLoader, batch 128, per-batch host-to-device copies) of the same model, and the
same loop under torch.compile (steady-state epochs; the first epoch, compilation included, is in
extra_info as `first_epoch_s`: whether compiling pays depends on how many epochs amortise it).

The reference figure for the plain loop on one H100 is 4.7 s / epoch (shared/README.md).
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import zoo
from benchmarks.evaluation.timing import sync
from benchmarks.protocols import Recipe
from benchmarks.training.train import train


def _resnet(task, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model("resnet", input_shape=task.input_shape, num_classes=task.num_classes,
                            width=64, depth=6).to(device)


def test_epoch_plain_fp32_bs128(benchmark, bench_data, device: torch.device) -> None:
    task, data = bench_data
    model = _resnet(task, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data.train.inputs(), data.train.y), batch_size=128, shuffle=True)

    def epoch() -> None:
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sync(device)

    benchmark.extra_info.update({"loop": "plain fp32, DataLoader, batch 128", "examples": len(data.train)})
    benchmark.pedantic(epoch, warmup_rounds=1, rounds=3, iterations=1)


def test_epoch_depthbench_loop(benchmark, bench_data, device: torch.device) -> None:
    task, data = bench_data
    model = _resnet(task, device)
    # One epoch per round; validation is part of the harness's epoch, so it is timed too.
    recipe = Recipe(epochs=1, batch_size=256, lr=2e-3, amp_bf16=device.type == "cuda")

    def epoch() -> None:
        train(model, data, task, recipe, device=device, seed=0)
        sync(device)

    benchmark.extra_info.update({"loop": "depthbench: device-resident data, bf16 autocast, channels_last, batch 256",
                                 "examples": len(data.train)})
    benchmark.pedantic(epoch, warmup_rounds=1, rounds=3, iterations=1)


@pytest.mark.skipif(not torch.cuda.is_available() and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler (g++)")
def test_epoch_depthbench_loop_compiled(benchmark, bench_data, device: torch.device) -> None:
    task, data = bench_data
    model = _resnet(task, device)
    recipe = Recipe(epochs=1, batch_size=256, lr=2e-3, amp_bf16=device.type == "cuda", compile=True)

    def epoch() -> None:
        train(model, data, task, recipe, device=device, seed=0)
        sync(device)

    torch._dynamo.reset()
    started = time.perf_counter()
    epoch()  # compiles; later epochs reuse the graph (train() re-wraps the same module: dynamo's cache hits)
    benchmark.extra_info.update({"loop": "depthbench loop under torch.compile (inductor)", "examples": len(data.train),
                                 "first_epoch_s": time.perf_counter() - started})
    benchmark.pedantic(epoch, warmup_rounds=1, rounds=3, iterations=1)

"""Throughput and memory figures for ``bench profile``: measured, never asserted in tests."""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from benchmark.data import DecodeSpec, ImageCache, TrainCrops, collate
from benchmark.engine import _amp_dtype, _to_input, build_optimizer, resolve_device
from benchmark.models import TrainContext
from benchmark.runner import resolve_config

__all__ = ["profile_model", "PEAK_BF16_TFLOPS"]

#: dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s, no sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0}


class _SyntheticCache(ImageCache):
    """Random uint8 images standing in for decoded files, so only compute is measured."""

    def __init__(self, count: int, side: int):
        rng = np.random.default_rng(0)
        self._arrays = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _train_flops(model, batch, ctx) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(batch, ctx)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_model(name: str, overrides: dict, device_name: str = "auto", amp: str = "auto",
                  steps: int = 5, workers: int = 0, use_compile: bool = False) -> dict:
    device = resolve_device(device_name)
    cls, config = resolve_config(name, "profile", overrides)
    model = cls(config).to(device)
    if use_compile:
        model = torch.compile(model)
    amp_dtype = _amp_dtype(amp, device)
    batch_size, side = config.batch_size, config.img_size
    cache = _SyntheticCache(batch_size * 2, side + 32)
    dataset = TrainCrops(cache, np.linspace(0, 1, len(cache)), np.linspace(0, 1, len(cache)),
                         side, 1, 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, shuffle=True)
    tic, loaded = time.perf_counter(), 0
    for _ in range(max(1, steps // 2)):
        for cpu_batch in loader:
            loaded += len(cpu_batch["index"])
    loader_rate = loaded / (time.perf_counter() - tic)
    cpu_batch = next(iter(loader))
    batch = {k: v.to(device) for k, v in cpu_batch.items()}
    batch["image"] = _to_input(cpu_batch["image"], device, True)
    ctx = TrainContext(0, 0, steps, 1.0, device)
    optimizer = build_optimizer(model.param_groups(), config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model.loss(batch, ctx)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    train_step()  # warm-up: allocator, cuDNN autotuning, compile
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    train_s = (time.perf_counter() - tic) / steps
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        model(batch["image"])
        _sync(device)
        tic = time.perf_counter()
        for _ in range(steps):
            model(batch["image"])
        _sync(device)
    infer_s = (time.perf_counter() - tic) / steps
    report = {
        "model": name, "device": str(device), "amp": str(amp_dtype), "batch_size": batch_size,
        "img_size": side, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "train_images_per_s": round(batch_size / train_s, 1),
        "infer_images_per_s": round(batch_size / infer_s, 1),
        "loader_images_per_s": round(loader_rate, 1),
    }
    if device.type == "cuda":
        report["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        model.train()
        flops = _train_flops(model, batch, ctx)
        peak = _peak_tflops(device)
        report["train_TFLOP_per_step"] = round(flops / 1e12, 3)
        report["mfu_bf16"] = round(flops / train_s / (peak * 1e12), 4) if peak else "unknown GPU peak"
    else:
        # ru_maxrss is KiB on Linux: the whole process, loader and framework included
        report["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return report

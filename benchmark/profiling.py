"""Throughput and memory figures for ``bench profile``: measured, never asserted in tests.

Two training figures, both through the engine's own code: the isolated step
(:meth:`benchmark.train_step.Trainer.step` on one batch already on the device) and the loop
(:func:`benchmark.engine.train_epoch` over a synthetic set of realistic image sizes, through
the same loader, crops and copies a run uses). Their ratio, the engine efficiency, is the
share of the model's speed a run keeps.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.batches import eval_batches, training_batches
from benchmark.checkpoints import save_checkpoint
from benchmark.engine import RunConfig, predict, resolve_device, train_epoch
from benchmark.loader import TrainCrops
from benchmark.models import TrainContext, config_to_dict, eval_crop
from benchmark.protocol import resolve_amp
from benchmark.runner import resolve_config
from benchmark.train_step import DTYPE_NAMES, Trainer

__all__ = ["profile_model", "PEAK_BF16_TFLOPS"]

#: dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s, no sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0}
#: distinct synthetic pictures; larger sets repeat them, so memory stays bounded at batch 128
_POOL = 64


class _SyntheticImages:
    """``count`` random uint8 images of one size standing in for a decoded cache."""

    def __init__(self, count: int, height: int, width: int):
        rng = np.random.default_rng(0)
        self._pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                      for _ in range(min(count, _POOL))]
        self._count = count
        self.keys = list(range(count))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        return self._pool[index % len(self._pool)]


def _stand_in_prerequisites(cls, config, model, dataset: str, folder: Path) -> None:
    """Random-weight runs of what the model needs (QFM-IQM's DEIQT teacher), in the recipe
    it asks of them: the same work per step as trained ones."""
    paths = {}
    for needed in cls.prerequisites(config):
        needed_cls, needed_config = resolve_config(needed, dataset,
                                                   cls.prerequisite_config(config, needed))
        paths[needed] = folder / f"{needed}.pt"
        weights = needed_cls(needed_config).state_dict()
        save_checkpoint(paths[needed], {"model": needed, "config": config_to_dict(needed_config),
                                        "epoch": 1, "state_dict": weights})
    model.attach_prerequisites(paths)


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _train_flops(trainer: Trainer, batch: dict, ctx: TrainContext) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(trainer.device.type, dtype=trainer.amp_dtype,
                                 enabled=trainer.amp_dtype is not None):
        trainer.model.loss(batch, ctx)["loss"].backward()
    trainer.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_model(name: str, overrides: dict, device_name: str = "auto", amp: str = "auto",
                  steps: int = 20, workers: int = 0, use_compile: bool = False,
                  dataset: str = "profile", image_hw: tuple[int, int] = (384, 512),
                  sync_every: int = 50, data_on_device: str = "auto") -> dict:
    """Images/s of the isolated step, of the loop, of evaluation and of the loader alone;
    peak memory; on a known GPU the step's model FLOPs utilisation. ``dataset`` picks that
    dataset's recipe for the model (``demo``: the CPU-sized one); ``image_hw`` is the size
    of the synthetic decoded images the crops are cut from."""
    device = resolve_device(device_name)
    cls, config = resolve_config(name, dataset, overrides)
    run = RunConfig(device=str(device), amp=resolve_amp(amp, cls.original_precision),
                    compile=use_compile, workers=workers, progress=False,
                    max_steps_per_epoch=steps, sync_every=sync_every,
                    data_on_device=data_on_device)
    torch.manual_seed(0)
    model = cls(config)
    with tempfile.TemporaryDirectory() as folder:
        _stand_in_prerequisites(cls, config, model, dataset, Path(folder))
    model.to(device)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    batch_size = config.batch_size
    side = max(config.img_size, eval_crop(config))
    height, width = max(image_hw[0], side), max(image_hw[1], side)
    images = _SyntheticImages(-(-batch_size * steps // config.train_crops), height, width)
    labels = np.linspace(0.0, 1.0, len(images))
    train_set = TrainCrops(images, labels, labels, config.img_size, config.train_crops, 0,
                           config.hflip, extra_crops=model.extra_crops())
    trainer = Trainer.build(model, config, run, device, steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    batches = training_batches(train_set, batch_size, run, device, log=lambda _: None)
    tic = time.perf_counter()
    for count, first_batch in enumerate(batches.epoch(0), 1):
        if count >= steps:
            break
    _sync(device)
    loader_rate = count * batch_size / (time.perf_counter() - tic)

    batch = trainer.to_device(first_batch)
    ctx = TrainContext(0, 0, steps, 1.0, device)
    model.train()
    for _ in range(2):  # warm-up: allocator, cuDNN autotuning, compilation
        trainer.step(batch, ctx)
    _sync(device)

    def time_steps() -> float:
        tic = time.perf_counter()
        for _ in range(steps):
            terms = trainer.step(batch, ctx)
        terms["loss"].item()  # waits for the queued steps
        return (time.perf_counter() - tic) / steps

    first = time_steps()
    tic = time.perf_counter()
    train_epoch(trainer, batches, 1, steps, config, run, 1.0)
    loop_s = (time.perf_counter() - tic) / steps
    # the step is timed before and after the loop and the faster kept: a machine still warming
    # up (allocator, clocks) would otherwise make the loop look faster than its own step
    step_s = min(first, time_steps())

    eval_images = _SyntheticImages(max(1, batch_size * min(steps, 10) // config.test_crops),
                                   height, width)
    # packed before the clock starts, as a run packs its evaluation images once
    packed = eval_batches(eval_images, eval_crop(config), config.test_crops, 0, device,
                          batch_size, workers)
    tic = time.perf_counter()
    predict(model, eval_images, eval_crop(config), config.test_crops, 0, device, batch_size,
            workers, trainer.amp_dtype, run.channels_last, batches=packed)
    eval_rate = len(eval_images) / (time.perf_counter() - tic)

    report = {
        "model": name, "recipe": dataset, "device": str(device),
        "precision": DTYPE_NAMES[trainer.amp_dtype], "compile": use_compile,
        "data_path": batches.path, "workers": workers,
        "batch_size": batch_size, "img_size": config.img_size, "image_hw": [height, width],
        "train_crops": config.train_crops, "test_crops": config.test_crops, "steps": steps,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "step_images_per_s": round(batch_size / step_s, 1),
        "loop_images_per_s": round(batch_size / loop_s, 1),
        "engine_efficiency": round(step_s / loop_s, 3),
        "eval_images_per_s": round(eval_rate, 1),
        "loader_images_per_s": round(loader_rate, 1),
    }
    if device.type == "cuda":
        report["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        flops = _train_flops(trainer, batch, ctx)
        peak = _peak_tflops(device)
        report["train_TFLOP_per_step"] = round(flops / 1e12, 3)
        report["mfu_bf16"] = round(flops / step_s / (peak * 1e12), 4) if peak else None
    else:
        # ru_maxrss is KiB on Linux: the whole process, loader and framework included
        report["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return report

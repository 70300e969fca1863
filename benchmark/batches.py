"""Where training batches come from: the loader, or the decoded images kept on the device.

Both paths cut the same crops: the offsets and flips of every sample come from
:meth:`benchmark.loader.TrainCrops.draws`, the samples of every epoch from
:func:`benchmark.loader.epoch_order`. The loader path crops one sample at a time in worker
processes and copies each batch to the device; the device path copies the uint8 images
there once and cuts a whole batch with one gather, so a GPU never waits on host crops.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Iterator

import numpy as np
import torch

from benchmark.loader import (EpochSampler, EvalCrops, TrainCrops, epoch_order, make_loader,
                              shuffle_seed)

__all__ = ["PackedImages", "LoaderBatches", "DeviceBatches", "training_batches", "EvalBatches",
           "eval_batches",
           "default_workers", "DEVICE_SHARE"]

#: share of the device's free memory the images may take; the rest is the model's
DEVICE_SHARE = 0.4


def default_workers() -> int:
    """Loader workers for the cores there are: half of them (the model's threads use the
    rest), at most 8; none up to 4 cores, where a worker takes a core from the model's
    threads (on a loaded 2-core machine one worker cut the probe's loop to a quarter of its
    step's speed; on a quiet one it cost nothing, so none is the safe choice)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) <= 4 else min(8, cores // 2)


class PackedImages:
    """uint8 HxWx3 images of any sizes in one flat buffer on ``device``; :meth:`crops`
    cuts a batch of square crops (flipped where asked) in one gather."""

    def __init__(self, arrays, device: torch.device):
        sizes = np.array([array.size for array in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
        self.flat = torch.empty(int(sizes.sum()), dtype=torch.uint8, device=device)
        with warnings.catch_warnings():  # a memory-mapped cache is read-only; it is only read
            warnings.simplefilter("ignore", UserWarning)
            for array, start, size in zip(arrays, starts, sizes):
                self.flat[start : start + size].copy_(
                    torch.from_numpy(np.ascontiguousarray(array)).reshape(-1))
        self.start = torch.as_tensor(starts, device=device)
        self.width = torch.as_tensor([array.shape[1] for array in arrays], dtype=torch.int64,
                                     device=device)

    @staticmethod
    def nbytes(arrays) -> int:
        return sum(int(array.size) for array in arrays)

    def crops(self, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
              flip: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 3, size, size) uint8: image ``index[b]`` from (``top[b]``, ``left[b]``)."""
        steps = torch.arange(size, device=self.flat.device)
        rows = top[:, None] + steps
        cols = left[:, None] + torch.where(flip[:, None], size - 1 - steps, steps)
        channel = torch.arange(3, device=self.flat.device)[None, :, None, None]
        width = self.width[index][:, None, None, None]
        pixel = rows[:, None, :, None] * width + cols[:, None, None, :]
        return self.flat.take(self.start[index][:, None, None, None] + pixel * 3 + channel)


class LoaderBatches:
    """Batches collated by a loader whose workers persist across epochs."""

    path = "loader"

    def __init__(self, train_set: TrainCrops, batch_size: int, workers: int, seed: int,
                 pin_memory: bool):
        self.sampler = EpochSampler(len(train_set), seed)
        self.loader = make_loader(train_set, batch_size, workers, self.sampler, True, pin_memory)

    def epoch(self, epoch: int) -> Iterator[dict]:
        self.sampler.set_epoch(epoch)
        return iter(self.loader)


class DeviceBatches:
    """Batches cut on the device from its copy of the images; the host only draws the
    offsets (one small copy per batch, pinned on CUDA so it does not wait for the GPU)."""

    path = "device"

    def __init__(self, train_set: TrainCrops, batch_size: int, seed: int, device: torch.device):
        self.train_set, self.batch_size, self.seed, self.device = train_set, batch_size, seed, device
        cache = train_set.cache
        self.images = PackedImages([cache[i] for i in range(len(cache))], device)
        self.labels = torch.as_tensor(train_set.labels, device=device)
        self.units = torch.as_tensor(train_set.units, device=device)

    def epoch(self, epoch: int) -> Iterator[dict]:
        order = epoch_order(len(self.train_set), shuffle_seed(self.seed, epoch))
        for first in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield self._batch(epoch, order[first : first + self.batch_size])

    def _batch(self, epoch: int, samples: list[int]) -> dict:
        draws = [self.train_set.draws(epoch, sample) for sample in samples]
        # per sample: image index, then (top, left, flip) of each view
        host = torch.tensor([[index, *(v for view in views for v in view)]
                             for index, views in draws], dtype=torch.int64)
        if self.device.type == "cuda":
            host = host.pin_memory()
        table = host.to(self.device, non_blocking=True)
        index = table[:, 0]
        batch = {"index": index, "label": self.labels[index], "unit": self.units[index]}
        for k, view in enumerate(self.train_set.views):
            top, left, flip = table[:, 1 + 3 * k], table[:, 2 + 3 * k], table[:, 3 + 3 * k]
            batch[view] = self.images.crops(index, top, left, flip.bool(), self.train_set.crop)
        return batch


def training_batches(train_set: TrainCrops, batch_size: int, run, device: torch.device,
                     log: Callable[[str], None] = print):
    """The device path where ``run.data_on_device`` asks for it and the images fit in
    :data:`DEVICE_SHARE` of the device's free memory (auto: on CUDA only), else the loader."""
    mode = run.data_on_device
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        cache = train_set.cache
        need = PackedImages.nbytes(cache[i] for i in range(len(cache)))
        budget = int(_free_bytes(device) * DEVICE_SHARE)
        why = (f"training crops of side {train_set.crop} are needed (whole images differ in "
               f"size)" if train_set.crop <= 0 else
               f"the decoded training images take {need / 2**30:.2f} GiB, over the budget of "
               f"{budget / 2**30:.2f} GiB ({DEVICE_SHARE:.0%} of free {device.type} memory)"
               if need > budget else "")
        if not why:
            log(f"data on {device}: {need / 2**30:.2f} GiB of decoded training images, cropped "
                f"there")
            return DeviceBatches(train_set, batch_size, run.seed, device)
        if mode == "on":
            from benchmark.models import ConfigError

            raise ConfigError(f"data_on_device on: {why}; use auto or off")
        log(f"data on the CPU loader: {why}")
    return LoaderBatches(train_set, batch_size, run.workers, run.seed, device.type == "cuda")


class EvalBatches:
    """The uint8 image batches of ``crops`` in order, cut a batch at a time from one packed
    copy of the images (on the device where they fit), packed once: iterating again, as the
    engine does at every epoch's evaluation, reuses the copy and the crop table. Whole images
    (side 0), whose sizes may differ, go through the loader every time."""

    def __init__(self, crops: EvalCrops, batch_size: int, device: torch.device,
                 workers: int = 0):
        self.crops, self.batch_size, self.device, self.workers = crops, batch_size, device, workers
        self._packed = None
        if crops.crop > 0:
            arrays = [crops.cache[i] for i in range(len(crops.cache))]
            fits = PackedImages.nbytes(arrays) <= _free_bytes(device) * DEVICE_SHARE
            where = device if fits else torch.device("cpu")
            table = torch.tensor([crops.draw(sample) for sample in range(len(crops))],
                                 dtype=torch.int64).reshape(-1, 3).to(where)
            self._packed = (PackedImages(arrays, where), table,
                            torch.zeros(len(table), dtype=torch.bool, device=where))

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._packed is None:
            for batch in make_loader(self.crops, self.batch_size, self.workers,
                                     pin_memory=self.device.type == "cuda"):
                yield batch["image"]
            return
        images, table, no_flip = self._packed
        for first in range(0, len(table), self.batch_size):
            rows = slice(first, first + self.batch_size)
            yield images.crops(table[rows, 0], table[rows, 1], table[rows, 2], no_flip[rows],
                               self.crops.crop)


def eval_batches(cache, crop: int, n_crops: int, seed: int, device: torch.device,
                 batch_size: int, workers: int = 0) -> EvalBatches:
    """:class:`EvalBatches` of ``n_crops`` seeded ``crop`` crops of every image of
    ``cache``; whole images (``crop`` 0) of several sizes go one image's crops per batch."""
    if crop <= 0 and len({cache[i].shape for i in range(len(cache))}) > 1:
        batch_size = n_crops
    return EvalBatches(EvalCrops(cache, crop, n_crops, seed), batch_size, device, workers)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

"""Decoded-image cache and crop datasets.

Each image is decoded once (uint8, in memory or memory-mapped on disk); later epochs only
crop. Every random choice derives from (seed, epoch, sample index) through its own
``numpy.random.Generator``, so a run is reproducible whatever the number of loader
workers, and a resumed run sees exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.images import read_image
from benchmark.files import atomic_dir, canonical_json, sha256_bytes

__all__ = ["DecodeSpec", "ImageCache", "ImageArrays", "decode_image", "fit_to_spec", "image_key",
           "TrainCrops", "EvalCrops", "EpochSampler", "collate", "make_loader", "epoch_order",
           "shuffle_seed"]

#: salt separating test-crop randomness from training randomness
_TEST_STREAM = 7919


@dataclass(frozen=True)
class DecodeSpec:
    """How a file becomes the cached array: optional resize, then padding up to the crop."""

    resize_hw: tuple[int, int] | None = None  # (height, width), the torchvision convention
    min_side: int = 0  # pad (reflect) smaller images so a crop of this side fits


def decode_image(path: Path, spec: DecodeSpec) -> np.ndarray:
    """The cached array of one file; a broken or oversized file is an ImageError naming it
    (``prepare --no-decode`` leaves such files for the first run to find)."""
    return fit_to_spec(read_image(path), spec)


def fit_to_spec(image: Image.Image, spec: DecodeSpec) -> np.ndarray:
    """An opened image as the cached uint8 array: RGB, resized, padded up to the crop."""
    image = image.convert("RGB")
    if spec.resize_hw is not None:
        height, width = spec.resize_hw
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    pad_h, pad_w = max(0, spec.min_side - array.shape[0]), max(0, spec.min_side - array.shape[1])
    if pad_h or pad_w:
        mode = "reflect" if pad_h < array.shape[0] and pad_w < array.shape[1] else "edge"
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return np.ascontiguousarray(array)


class ImageCache:
    """Decoded images by position. ``mode="disk"`` stores one memory-mapped file per image set,
    keyed by the files' names, sizes and mtimes and the decode spec, so a second run (or
    another loader worker) maps it instead of decoding."""

    def __init__(self, paths: list[Path], spec: DecodeSpec, mode: str = "memory",
                 cache_dir: Path | None = None, threads: int = 2):
        self.paths = [Path(p) for p in paths]
        self.spec = spec
        if mode == "memory":
            with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decodes without the GIL
                self._arrays = list(pool.map(lambda p: decode_image(p, spec), self.paths))
        elif mode == "disk":
            if cache_dir is None:
                raise ValueError("cache mode 'disk' needs a cache_dir")
            self._arrays = self._mapped(Path(cache_dir), threads)
        else:
            raise ValueError(f"unknown cache mode {mode!r} (memory, disk)")

    def _key(self) -> str:
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.paths]
        return sha256_bytes(canonical_json({"files": stats, "spec": repr(self.spec)}).encode())

    def _mapped(self, cache_dir: Path, threads: int) -> list[np.ndarray]:
        folder = cache_dir / self._key()[:20]
        if not (folder / "index.json").is_file():
            with atomic_dir(folder) as tmp:
                shapes, offset = [], 0
                with open(tmp / "pixels.u8", "wb") as out, ThreadPoolExecutor(threads) as pool:
                    for array in pool.map(lambda p: decode_image(p, self.spec), self.paths):
                        out.write(array.tobytes())
                        shapes.append([offset, *array.shape])
                        offset += array.size
                (tmp / "index.json").write_text(json.dumps(shapes))
        shapes = json.loads((folder / "index.json").read_text())
        if not shapes:
            return []
        pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r")
        return [pixels[o : o + h * w * c].reshape(h, w, c) for o, h, w, c in shapes]

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._arrays[index]

    @property
    def keys(self) -> list[int]:
        """The per-image seeds of the evaluation crops (:func:`image_key`)."""
        return [image_key(p) for p in self.paths]


class ImageArrays:
    """Decoded images (uint8 HxWx3, as :func:`fit_to_spec` makes them) with the keys of their
    evaluation crops: given (files: :func:`image_key`), or by default their pixels', so the
    same picture gets the same crops wherever it sits in a batch."""

    def __init__(self, arrays: list[np.ndarray], keys: list[int] | None = None):
        self._arrays = [np.ascontiguousarray(a) for a in arrays]
        self.keys = keys if keys is not None else [zlib.crc32(a.tobytes()) for a in self._arrays]

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._arrays[index]


def _offsets(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random crop's top-left corner; side 0 (the whole image) draws nothing."""
    if size <= 0:
        return 0, 0
    return int(rng.integers(0, shape[0] - size + 1)), int(rng.integers(0, shape[1] - size + 1))


def shuffle_seed(seed: int, epoch: int) -> int:
    return seed * 100003 + epoch


def epoch_order(count: int, seed: int) -> list[int]:
    """The training samples of an epoch in the order ``shuffle_seed`` gives them."""
    generator = torch.Generator().manual_seed(seed)
    # the draw torch's DataLoader took from its generator before shuffling: earlier runs
    # shuffled through it, and keeping its order keeps their numbers
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(count, generator=generator).numpy().tolist()


class TrainCrops(torch.utils.data.Dataset):
    """DEIQT's repetition protocol: every image appears ``n_crops`` times per epoch, each
    with its own random crop (and flip). Items are keyed by (epoch, sample), so a loader
    worker that outlives an epoch still crops for the epoch it is asked for.

    Each key in ``extra_crops`` holds a further independent crop (and flip) of the same image,
    drawn after the main one, so asking for it leaves the main crop unchanged."""

    def __init__(self, cache: ImageCache, labels: np.ndarray, units: np.ndarray, crop: int,
                 n_crops: int, seed: int, hflip: bool = True, extra_crops: tuple[str, ...] = ()):
        self.cache, self.crop, self.n_crops, self.seed, self.hflip = cache, crop, n_crops, seed, hflip
        self.extra_crops = tuple(extra_crops)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.units = np.asarray(units, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.cache) * self.n_crops

    def draws(self, epoch: int, sample: int) -> tuple[int, list[tuple[int, int, bool]]]:
        """The image of ``sample`` and (top, left, flip) of each of its views, in
        ``views`` order: the one generator both the loader and the device path crop by."""
        index = sample % len(self.cache)
        rng = np.random.default_rng([self.seed, epoch, sample])
        shape, views = self.cache[index].shape, []
        for _ in self.views:
            top, left = _offsets(shape, self.crop, rng)
            views.append((top, left, bool(self.hflip and rng.random() < 0.5)))
        return index, views

    @property
    def views(self) -> tuple[str, ...]:
        return ("image", *self.extra_crops)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, views = self.draws(*key)
        array = self.cache[index]
        item = {"label": self.labels[index], "unit": self.units[index], "index": index}
        for name, (top, left, flip) in zip(self.views, views):
            patch = array[top : top + self.crop, left : left + self.crop] if self.crop > 0 else array
            if flip:
                patch = patch[:, ::-1]
            item[name] = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))
        return item


class EpochSampler(torch.utils.data.Sampler):
    """(epoch, sample) keys of :class:`TrainCrops` in the epoch's shuffled order; the epoch
    travels in the key because persistent workers never see the main process's state."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed, self.epoch = count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        order = epoch_order(self.count, shuffle_seed(self.seed, self.epoch))
        return iter([(self.epoch, sample) for sample in order])


def image_key(path: Path) -> int:
    """A stable per-image seed from the file name, so an image gets the same evaluation crops
    whichever set it is scored in (a run's test part, a cross-dataset set, ``bench score``)."""
    return zlib.crc32(Path(path).name.encode())


class EvalCrops(torch.utils.data.Dataset):
    """``n_crops`` seeded random crops per image, contiguous, identical at every evaluation."""

    def __init__(self, cache: ImageCache, crop: int, n_crops: int, seed: int):
        self.cache, self.crop, self.n_crops, self.seed = cache, crop, n_crops, seed
        self.keys = list(getattr(cache, "keys", range(len(cache))))

    def __len__(self) -> int:
        return len(self.cache) * self.n_crops

    def draw(self, sample: int) -> tuple[int, int, int]:
        """(image, top, left) of crop ``sample``."""
        index, k = divmod(sample, self.n_crops)
        rng = np.random.default_rng([self.seed, _TEST_STREAM, self.keys[index], k])
        return (index, *_offsets(self.cache[index].shape, self.crop, rng))

    def __getitem__(self, sample: int) -> dict:
        index, top, left = self.draw(sample)
        patch = self.cache[index]
        if self.crop > 0:
            patch = patch[top : top + self.crop, left : left + self.crop]
        return {"image": torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))),
                "index": index}


def collate(samples: list[dict]) -> dict:
    batch = {key: torch.stack([s[key] for s in samples])
             for key, value in samples[0].items() if torch.is_tensor(value)}
    batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
    for key in ("label", "unit"):
        if key in samples[0]:
            batch[key] = torch.tensor(np.array([s[key] for s in samples]), dtype=torch.float32)
    return batch


def make_loader(dataset, batch_size: int, workers: int, sampler=None, drop_last: bool = False,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` in ``sampler``'s order (None: in order). Workers persist
    across epochs, so an epoch starts without forking them again. ``pin_memory`` (for a
    CUDA device) lets the engine's copies to the device run without blocking the host, so
    the next batch is collated while the GPU computes."""
    # a generator of its own for the workers' seeds: drawing them from torch's global one
    # would move the model's dropout whenever the loader changes
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate, drop_last=drop_last, pin_memory=pin_memory,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))

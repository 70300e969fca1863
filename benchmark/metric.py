"""A trained run as an image-quality metric: ``load_metric(run_dir)(images)``.

The metric applies the run's own evaluation protocol, the one behind its record's test
numbers: decode with the run's resize and padding, ``test_crops`` seeded crops of side
``test_img_size`` (or whole images), their outputs averaged, batches of the run's
``batch_size``, in float32. Outputs are mapped back to the training dataset's label scale
(``metric.score_range``, ``metric.higher_is_better``), so a model trained on unit labels
still scores in MOS. ``bench score`` is this object, so both give the same digits.

Evaluation crops are seeded per image: files by their names (as in runs, so a file gets the
crops its run gave it), in-memory images by their pixels. With random crops (``test_crops``
crops smaller than the image) a file and the same picture passed as a PIL image or tensor
therefore see different crops; with whole images, or a tensor made by ``ToTensor`` from the
file and no resize, they score alike (tensors are quantised to 8 bits, as decoded files are).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmark.loader import DecodeSpec, ImageArrays, decode_image, fit_to_spec, image_key
from benchmark.engine import CheckpointError, predict, resolve_device
from benchmark.images import ImageError
from benchmark.models import eval_crop
from benchmark.pyiqa_weights import load_pyiqa_model, parse_source
from benchmark.runner import label_facts
from benchmark.trained import Trained, load_trained

__all__ = ["IMAGE_SUFFIXES", "LabelScale", "Scored", "Metric", "load_metric", "list_images",
           "collect_images"]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                  ".webp")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class LabelScale:
    """The scale a metric's scores are on: its training dataset's labels, when known."""

    score_type: str  # MOS / DMOS (the dataset's), "unit", or "model output" when unknown
    higher_is_better: bool | None
    score_range: tuple[float, float] | None
    unit_map: tuple[float, float] | None  # score_unit = a * score + b

    def describe(self) -> str:
        if self.score_range is None:
            return (f"{self.score_type}: the training dataset's scale and direction are unknown "
                    "(no run record)")
        low, high = self.score_range
        direction = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.score_type} {low:g}\u2013{high:g}, {direction}"


@dataclass(frozen=True)
class Scored:
    """Scores of the files that decoded, and a one-line reason for each that did not."""

    paths: list[Path]
    scores: np.ndarray
    failed: list[tuple[Path, str]]


def _label_scale(trained: Trained) -> LabelScale:
    if trained.source == "pyiqa":  # a released file says nothing of its labels
        return LabelScale("pyiqa output", None, None, None)
    labels = trained.record.get("labels")
    predictions = trained.path.parent / "predictions.csv"
    if labels is None and trained.record and predictions.is_file():
        # records written before runs kept their labels' scale: the per-image rows hold both
        from benchmark.registry import dataset_registry

        declared = dataset_registry().get(trained.record["dataset"]).score_type
        labels = label_facts(pd.read_csv(predictions), declared)
    if labels is not None:
        return LabelScale(labels["score_type"] or "score", labels["higher_is_better"],
                          tuple(labels["score_range"]), tuple(labels["unit_map"]))
    if trained.model.config.label_scale == "unit":
        return LabelScale("unit", True, (0.0, 1.0), None)
    return LabelScale("model output", None, None, None)


def _decode(path: Path, spec: DecodeSpec) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, f"{path}: no such image"
    try:
        return decode_image(path, spec), None
    except ImageError as error:  # names the file: undecodable, or over the pixel limit
        return None, str(error)
    except _DECODE_ERRORS as error:
        return None, f"{path}: cannot decode image ({error})"


class Metric:
    """A trained model that scores images on its training labels' scale (module docstring).

    ``metric(x)`` takes a path (a float back), a folder (every image under it, in
    :func:`list_images` order), a list of paths, a PIL image (a float), or a float tensor
    Bx3xHxW (or 3xHxW) in [0, 1]; several images give a numpy array. A file that does not
    decode raises; :meth:`score_files` scores the rest and lists the failures."""

    def __init__(self, trained: Trained, device: str = "cpu"):
        config = trained.model.config
        self.trained = trained
        self.device = resolve_device(device)
        self.model = trained.model.to(self.device).eval()
        self.scale = _label_scale(trained)
        self.crop, self.n_crops = eval_crop(config), config.test_crops
        # the runner's decode (padding up to the training crop); the larger evaluation crop
        # pads only images a run could not have cropped
        self.spec = DecodeSpec(config.resize_hw, max(config.img_size, self.crop))
        self.batch_size = config.batch_size
        self.seed = int(trained.record.get("seed", 0))
        self.channels_last = bool(trained.record.get("run_config", {}).get("channels_last", True))
        record = trained.record
        self.name = (f"{record['model']}/{record['dataset']}/split{record['split']}-"
                     f"{record['config_hash'][:10]}" if record else
                     f"{trained.source}:{self.model.name}:{trained.path.name}")

    @property
    def higher_is_better(self) -> bool | None:
        return self.scale.higher_is_better

    @property
    def score_range(self) -> tuple[float, float] | None:
        return self.scale.score_range

    def origin(self) -> str:
        """Which weights these are, in one line."""
        trained = self.trained
        if trained.source == "pyiqa":
            return f"{self.model.name}: pyiqa checkpoint {trained.path} through its key map"
        return (f"{self.model.name}: epoch {trained.epoch}, rule "
                f"{trained.rule or 'unknown (a renamed checkpoint file)'} ({trained.path})")

    def __repr__(self) -> str:
        return (f"Metric({self.name}, rule {self.trained.rule}, epoch {self.trained.epoch}, "
                f"{self.scale.describe()})")

    def __call__(self, images: Any) -> float | np.ndarray:
        if isinstance(images, (str, os.PathLike)):
            path = Path(images)
            if path.is_dir():
                return self._files(list_images(path))
            return float(self._files([path])[0])
        if isinstance(images, Image.Image):
            return float(self._score(ImageArrays([fit_to_spec(images, self.spec)])).item())
        if torch.is_tensor(images):
            return self._score(ImageArrays(self._tensor_arrays(images)))
        if isinstance(images, (list, tuple)):
            return self._files([Path(p) for p in images])
        raise TypeError(f"a metric scores a path, a folder, a list of paths, a PIL image or a "
                        f"float tensor Bx3xHxW, not {type(images).__name__}")

    def _files(self, paths: list[Path]) -> np.ndarray:
        scored = self.score_files(paths)
        if scored.failed:
            raise ValueError(scored.failed[0][1])
        return scored.scores

    def score_files(self, paths: list[Path], progress: bool = False) -> Scored:
        """Score image files in chunks of ``batch_size`` decoded images: a chunk holds whole
        batches of crops, as the run's own evaluation batched them, and memory stays bounded
        on large folders (a progress bar on stderr with ``progress``, on a terminal only)."""
        from tqdm import tqdm

        kept, failed, scores = [], [], []
        pending: list[tuple[Path, np.ndarray]] = []

        def flush() -> None:
            cache = ImageArrays([a for _, a in pending], [image_key(p) for p, _ in pending])
            scores.append(self._score(cache))
            kept.extend(p for p, _ in pending)
            pending.clear()

        paths = [Path(p) for p in paths]
        with ThreadPoolExecutor(2) as pool, tqdm(total=len(paths), unit="img", desc="scoring",
                                                 disable=None if progress else True,
                                                 file=sys.stderr, leave=False) as bar:
            for path, (array, reason) in zip(paths, pool.map(
                    lambda p: _decode(p, self.spec), paths)):
                if reason:
                    failed.append((path, reason))
                else:
                    pending.append((path, array))
                if len(pending) == self.batch_size:
                    flush()
                bar.update()
            if pending:
                flush()
        return Scored(kept, np.concatenate(scores) if scores else np.zeros(0), failed)

    def _tensor_arrays(self, images: torch.Tensor) -> list[np.ndarray]:
        batch = images.unsqueeze(0) if images.ndim == 3 else images
        if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
            raise ValueError(f"a metric takes a float tensor Bx3xHxW (or 3xHxW) in [0, 1], not "
                             f"{images.dtype} of shape {tuple(images.shape)}")
        if batch.numel() and not (bool(torch.isfinite(batch).all()) and batch.min() >= 0
                                  and batch.max() <= 1):
            raise ValueError(f"tensor values must lie in [0, 1], not "
                             f"[{batch.min().item():.4g}, {batch.max().item():.4g}]")
        pixels = (batch.detach().cpu().double() * 255).round().to(torch.uint8)
        return [fit_to_spec(Image.fromarray(p.permute(1, 2, 0).numpy()), self.spec)
                for p in pixels]

    def _score(self, cache: ImageArrays) -> np.ndarray:
        outputs = predict(self.model, cache, self.crop, self.n_crops, self.seed, self.device,
                          self.batch_size, channels_last=self.channels_last)
        if self.model.config.label_scale == "unit" and self.scale.unit_map is not None:
            a, b = self.scale.unit_map
            return (outputs - b) / a
        return outputs


def load_metric(path: str | Path, device: str = "cpu", rule: str | None = None,
                overrides: dict[str, Any] | None = None) -> Metric:
    """A run directory, one of its checkpoint files, or a pyiqa checkpoint
    (``pyiqa:MODEL:FILE``, :mod:`benchmark.pyiqa_weights`) as a :class:`Metric`.

    ``rule`` picks a run directory's weights: ``val`` (default: the validation-selected epoch
    the record reports) or ``last``; ``device``: cpu, cuda, cuda:N or auto; ``overrides``:
    config values of a pyiqa checkpoint's model (its architecture options, its test crops)."""
    pyiqa = parse_source(path)
    if pyiqa is not None:
        if rule:
            raise CheckpointError(f"{path} is one set of weights: a rule applies to run folders")
        return Metric(Trained(load_pyiqa_model(*pyiqa, overrides), {}, None, None, pyiqa[1],
                              "pyiqa"), device)
    if overrides:
        raise CheckpointError(f"config overrides apply to pyiqa checkpoints only; {path} "
                              "carries its run's config")
    return Metric(load_trained(Path(path), rule), device)


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, by suffix, hidden names skipped), sorted
    by path; linked folders are followed once."""
    found, seen = [], set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def collect_images(sources: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given and the images of folders, each once; a source that does not exist, or
    a folder without images, is a failure with its reason."""
    paths, failed, seen = [], [], set()
    for source in map(Path, sources):
        if source.is_dir():
            found = list_images(source)
            if not found:
                failed.append((source, f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})"))
        elif source.exists():
            found = [source]
        else:
            failed.append((source, f"{source}: no such file or folder"))
            found = []
        for path in found:
            if path not in seen:
                seen.add(path)
                paths.append(path)
    return paths, failed

"""S-CNN: DBCNN's synthetic-distortion stream, and its distortion-classification pre-training.

Paper: Zhang, Ma, Yan, Deng, Wang, "Blind Image Quality Assessment Using a Deep Bilinear
Convolutional Neural Network", IEEE TCSVT 30(1), 2020. Original code:
https://github.com/zwx8981/DBCNN-PyTorch (``SCNN.py``; read for the architecture, not copied).

The network: nine 3x3 conv + BatchNorm + ReLU layers (48, 48, 64, 64, 64, 64, 128, 128, 128
channels; stride 2 at layers 2, 4, 6 and 9, so the map is 1/16 of the input), global average
pooling, two 1x1 conv + BN + ReLU projections to 256 and a linear classifier. Conv, linear and
BN are initialised as the original does (Kaiming normal for ReLU, zero bias, BN 1/0). The module
layout matches the original's, so its released ``pretrained_scnn/scnn.pkl`` (39 classes, stored
under a ``module.`` prefix; :data:`ORIGINAL_SCNN`, DBCNN's default) loads too: 640,983
parameters, 531,120 of them in ``features``.

How the pre-training differs from the original (state it when reporting a DBCNN run):

- Original: 39 classes (distortion type x level, plus pristine) synthesised in MATLAB on the
  Waterloo Exploration database and PASCAL VOC 2012, 30 epochs of SGD (momentum 0.9, weight decay
  5e-4, batch 128), learning rate log-spaced from 1e-1 to 1e-4, 224 crops of images resized to a
  256 shorter side.
- Here (:func:`pretrain_scnn`): 21 classes (pristine + blur, noise, JPEG, contrast at five
  levels each), applied on the fly to random crops of scikit-image's bundled photographs (or
  images you pass), with the same optimiser and log-spaced rate over *steps* instead of epochs.
  The distortion functions and levels are the demo dataset's (``benchmark.datasets.demo``),
  reused, not duplicated. Far less and less varied content: a stand-in that makes the stream
  distortion-aware, not a reproduction of the released weights.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from benchmark.datasets.demo import DISTORTIONS, REFERENCES
from benchmark.files import atomic_write_bytes
from benchmark.models import ConfigError
from benchmark.weights import WeightFile

__all__ = ["SCNN", "CLASSES", "ORIGINAL_SCNN", "make_example", "pretrain_scnn",
           "load_scnn_features"]

#: (channels out, stride) of the nine conv layers of ``features``
_LAYERS = ((48, 1), (48, 2), (64, 1), (64, 2), (64, 1), (64, 2), (128, 1), (128, 1), (128, 2))
_KINDS = ("blur", "noise", "jpeg", "contrast")
#: class 0 is the pristine crop; then each kind at its five levels, mildest first
CLASSES: tuple[tuple[str, int], ...] = (("pristine", 0),) + tuple(
    (kind, level) for kind in _KINDS for level in range(1, 6))
#: the original's released S-CNN (39 classes, 68 tensors under ``module.``, 54 of them in
#: ``features``), at the commit that added it; a legacy torch file that loads with
#: ``weights_only=True``. pyiqa republishes the same bytes as ``DBCNN_scnn-7ea73d75.pth``.
ORIGINAL_SCNN = WeightFile(
    name="scnn.pkl",
    url="https://raw.githubusercontent.com/zwx8981/DBCNN-PyTorch/"
        "1035ecbb1a8e5bd3da37613dfbc0e3ac8d1bea1d/pretrained_scnn/scnn.pkl",
    sha256="7ea73d75539cefcf4953800a896e024ea1a3216de2392f242810b113fd940a42",
    what="DBCNN's released S-CNN (zwx8981/DBCNN-PyTorch pretrained_scnn/scnn.pkl)")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SCNN(nn.Module):
    """Distortion classifier; DBCNN keeps ``features`` (128 channels at stride 16)."""

    out_channels = 128

    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for channels, stride in _LAYERS:
            layers += [nn.Conv2d(width, channels, 3, stride, 1), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True)]
            width = channels
        self.features = nn.Sequential(*layers)
        # the original pools with a fixed 14x14 window (224 inputs); adaptive pooling is the same
        # there and lets pre-training use smaller crops
        self.pooling = nn.AdaptiveAvgPool2d(1)
        self.projection = nn.Sequential(
            nn.Conv2d(128, 256, 1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 1), nn.BatchNorm2d(256), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(256, num_classes)
        _init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.projection(self.pooling(self.features(images)))
        return self.classifier(pooled.flatten(1))


def make_example(image: np.ndarray, label: int, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``image`` (uint8 HxWx3), flipped at random, distorted as class ``label``."""
    height, width = image.shape[:2]
    if height < crop or width < crop:
        raise ValueError(f"SCNN pre-training image of {height}x{width} is smaller than the "
                         f"{crop} crop")
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    patch = image[top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    kind, level = CLASSES[label]
    if kind == "pristine":
        return np.ascontiguousarray(patch)
    distortion = next(d for d in DISTORTIONS if d.name == kind)
    noise = rng.standard_normal(patch.shape)
    distorted = distortion.apply(Image.fromarray(np.ascontiguousarray(patch)),
                                 distortion.levels[level - 1], noise)
    return np.asarray(distorted.convert("RGB"), dtype=np.uint8)


def _sample_images() -> list[np.ndarray]:
    import skimage.data

    images = []
    for name in REFERENCES:
        array = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(array).convert("RGB")))
    return images


def _batch(images: Sequence[np.ndarray], size: int, crop: int,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, len(CLASSES), size)
    picks = rng.integers(0, len(images), size)
    arrays = [make_example(images[i], int(y), crop, rng) for i, y in zip(picks, labels)]
    stacked = (np.stack(arrays).astype(np.float32) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def pretrain_scnn(out_path: Path | str, images: Sequence[np.ndarray] | None = None, *,
                  steps: int = 3000, batch_size: int = 64, crop: int = 224, seed: int = 0,
                  lr_range: tuple[float, float] = (1e-1, 1e-4), weight_decay: float = 5e-4,
                  device: str = "cpu") -> dict:
    """Train S-CNN to classify :data:`CLASSES` and save its state dict to ``out_path``.

    ``images``: uint8 HxWx3 arrays to crop from (default: the demo set's scikit-image photos at
    full size). The file holds tensors only (``torch.load(..., weights_only=True)``) and is
    written atomically. Returns facts for a record: steps, classes, the mean loss and accuracy
    over the last tenth of the steps.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be positive")
    pool = list(images) if images is not None else _sample_images()
    if not pool:
        raise ValueError("SCNN pre-training needs at least one image")
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SCNN().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_range[0], momentum=0.9,
                                weight_decay=weight_decay)
    # the original's per-epoch log-spaced rates, spread over steps
    rates = np.logspace(math.log10(lr_range[0]), math.log10(lr_range[1]), steps)
    tail = max(1, steps // 10)
    losses, hits, seen = [], 0, 0
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = float(rates[step])
        inputs, targets = _batch(pool, batch_size, crop, rng)
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= steps - tail:
            losses.append(float(loss.detach()))
            hits += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(Path(out_path), buffer.getvalue())
    return {"steps": steps, "classes": len(CLASSES), "crop": crop, "images": len(pool),
            "final_loss": float(np.mean(losses)), "final_accuracy": hits / max(seen, 1)}


def load_scnn_features(path: Path | str) -> dict[str, torch.Tensor]:
    """The ``features`` tensors of an S-CNN checkpoint (ours or the original ``scnn.pkl``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scnn_weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types; all mean "not weights"
        raise ConfigError(f"scnn_weights file {path} is not a tensor state dict "
                          f"({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"scnn_weights file {path} holds no state dict")
    features = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith("features."):
            features[name[len("features."):]] = value
    if not features:
        raise ConfigError(f"scnn_weights file {path} has no S-CNN 'features.*' tensors")
    return features

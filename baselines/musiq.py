"""MUSIQ: Multi-scale Image Quality Transformer (Ke, Wang, Wang, Milanfar, Yang; ICCV 2021).

Paper: https://arxiv.org/abs/2108.05997. Official code and checkpoints (Flax, Apache-2.0):
google-research/google-research, ``musiq/`` (``model/multiscale_transformer.py``,
``model/multiscale_transformer_utils.py``, ``model/resnet.py``, ``model/preprocessing.py``,
``run_predict_image.py``). Re-implemented here from those files; no code is copied.

Input. Each image becomes one token sequence: its aspect-ratio-preserving resizes to longer
sides 224 and 384 (TF's Gaussian resize without antialiasing, :func:`gaussian_resize`; scale
ids 0, 1, in ascending order) followed by the image at its own
resolution (scale id 2). Every one is cut into 32×32 patches with TF "SAME" zero padding in
the [-1, 1] input range. A patch at (row, col) of an r×c grid gets the hashed spatial position
``(row·G // r)·G + col·G // c`` on a G×G = 10×10 grid of learned embeddings (the nearest-
neighbour resize of ``preprocessing.py``), plus a learned embedding of its scale id. In
training at most 512 native patches are kept, in raster order, as the paper states; at test
time all of them. Images of different sizes in one batch are padded to the longest sequence
and the padding is masked out of attention, so a score never depends on its batch-mates.

Model (``run_predict_image.py``'s ``_MODEL_CONFIG``): each patch goes through the ResNet root
of ``resnet.py`` with ``num_layers=5`` — a weight-standardised 7×7/2 convolution to 64
channels, GroupNorm, ReLU, 3×3/2 max pool (TF "SAME"), one bottleneck unit to 256 channels —
and its 8×8×256 map, flattened in (h, w, c) order, is projected to 384. A learned [CLS] token
leads 14 pre-norm transformer layers (384 wide, 6 heads, MLP 1152, tanh-GELU as Flax's
default), a final LayerNorm, and a linear head on [CLS]. Parameters: 27,125,825, summed from
the official shapes (stem 84,544; patch projection 6,291,840; embeddings and [CLS] 39,936;
14 layers × 1,479,168; final norm 768; head 385), the paper's "around 27 million".

Recipe (paper, Sec. 4.1): SGD with momentum 0.9, cosine decay from lr 2e-4 (KonIQ-10k),
2e-3 (SPAQ), 1e-4 (LIVE Challenge); batch 96 on KonIQ-10k, 128 elsewhere; L1 loss on the
raw MOS; inputs scaled to [-1, 1]; the model is first pretrained on ImageNet. The paper gives
no epoch count; 30 is this benchmark's choice.

Harness note. The engine trains on fixed-size crops, so ``img_size`` is 384: a crop is then
a "native" image of 12×12 patches, and its 384-scale copy is the crop passed through the
official resize (which blurs even at scale 1, see :func:`gaussian_resize`). Training on full
native images (the paper's setting) needs a loader that passes a list of (3, H_i, W_i)
tensors, which :meth:`MUSIQ.forward` accepts. Testing scores each full-size image, as the
paper does (``test_img_size=0``: whole images, one per batch when their sizes differ).

Weights. No timm weights exist for MUSIQ: ``backbone`` must be ``"musiq"``. ``pretrained``
is ``"imagenet"`` (the default, as the paper fine-tunes from ImageNet): the official
``imagenet_pretrain.npz`` from the weights cache, mapped key by key
(:mod:`baselines.musiq_weights`; the 1000-class head is not taken); ``"false"``: random init
as the official initialisers; or a path: an official ``.npz`` or a state dict of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import pad_same
from timm.models.vision_transformer import Block
from torch import nn

from baselines import pyiqa_keymaps
from baselines.musiq_weights import IMAGENET, load_official_npz
from benchmark.models import (ConfigError, IQAModel, LabelScale, Loss, ModelConfig, Optimizer,
                              Schedule, decay_groups, load_local_weights)
from benchmark.weights import fetch_weights

__all__ = ["MUSIQ", "MUSIQConfig", "gaussian_resize", "hashed_positions", "patchify",
           "resize_longer"]


def patchify(images: torch.Tensor, patch: int) -> tuple[torch.Tensor, int, int]:
    """(n, C, H, W) → (n, rows·cols, C, patch, patch) in raster order, zero-padded as TF
    "SAME" pads (the odd pixel goes to the bottom/right)."""
    n, channels, height, width = images.shape
    rows, cols = -(-height // patch), -(-width // patch)
    pad_h, pad_w = rows * patch - height, cols * patch - width
    images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    grid = images.reshape(n, channels, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(n, rows * cols, channels, patch, patch), rows, cols


def hashed_positions(rows: int, cols: int, grid: int, device=None) -> torch.Tensor:
    """Index into the grid×grid spatial table for each patch of a rows×cols grid, raster order."""
    row_hash = torch.arange(rows, device=device) * grid // rows
    col_hash = torch.arange(cols, device=device) * grid // cols
    return (row_hash[:, None] * grid + col_hash[None, :]).reshape(-1)


def _gaussian_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) weights of TF's ``ScaleAndTranslate`` Gaussian kernel without
    antialiasing (radius 1.5, sigma 0.5, each output row normalised). The sample positions and
    the radius test are computed in float32, as TF's kernel does: sources can fall exactly on
    the radius, and one just inside it carries a weight of e^-4.5 that float64 could drop."""
    scale = torch.tensor(size_out, dtype=torch.float32) / size_in
    inverse = torch.tensor(1.0 / float(scale), dtype=torch.float32)
    sample = (torch.arange(size_out, dtype=torch.float32) + 0.5) * inverse
    distance = ((torch.arange(size_in, dtype=torch.float32) + 0.5)[None] - sample[:, None]).abs()
    distance = distance.double()
    weight = torch.where(distance < 1.5, torch.exp(-2.0 * distance ** 2), 0.0)
    return weight / weight.sum(1, keepdim=True)


def gaussian_resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(n, C, H, W) → (n, C, *size) as ``tf.image.resize(..., GAUSSIAN)`` with TF's default
    ``antialias=False``: a fixed 3-pixel-wide Gaussian sampled at any scale, so it blurs an
    image even at scale 1, and downscaling aliases; both are kept, as the released models saw
    them."""
    rows, cols = (_gaussian_matrix(n_in, n_out).to(images.device, images.dtype)
                  for n_in, n_out in zip(images.shape[-2:], size))
    return torch.einsum("oh,nchw,pw->ncop", rows, images, cols)


def resize_longer(images: torch.Tensor, longer: int) -> torch.Tensor:
    """Aspect-preserving resize to a longer side of ``longer``, as the official
    ``resize_preserve_aspect_ratio``: sides rounded half-to-even from a float32 ratio, then
    :func:`gaussian_resize`."""
    height, width = images.shape[-2:]
    ratio = np.float32(longer) / np.float32(max(height, width))
    return gaussian_resize(images, [max(1, int(np.round(np.float32(side) * ratio)))
                                    for side in (height, width)])


class _StdConv(nn.Conv2d):
    """Bias-free convolution with weight standardisation and TF "SAME" padding (``StdConv``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(cin, cout, kernel, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        std = w.std((1, 2, 3), keepdim=True, unbiased=False)
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (std + 1e-5)
        return F.conv2d(pad_same(x, self.kernel_size, self.stride), w, None, self.stride)


class _Bottleneck(nn.Module):
    """The root's single ResNet-v1 bottleneck unit (``ResidualUnit``, stride 1, GN eps 1e-4)."""

    def __init__(self, width: int):
        super().__init__()
        out = 4 * width
        self.conv_proj, self.gn_proj = _StdConv(width, out, 1), nn.GroupNorm(32, out, eps=1e-4)
        self.conv1, self.gn1 = _StdConv(width, width, 1), nn.GroupNorm(32, width, eps=1e-4)
        self.conv2, self.gn2 = _StdConv(width, width, 3), nn.GroupNorm(32, width, eps=1e-4)
        self.conv3, self.gn3 = _StdConv(width, out, 1), nn.GroupNorm(32, out, eps=1e-4)
        nn.init.zeros_(self.gn3.weight)  # the residual branch starts switched off, as in resnet.py

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.gn_proj(self.conv_proj(x))
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        return F.relu(residual + self.gn3(self.conv3(x)))


class _PatchStem(nn.Module):
    """32×32 patch → embedding: ResNet root (``num_layers=5``) then a linear projection."""

    def __init__(self, patch: int, width: int, dim: int):
        super().__init__()
        if patch % 4:
            raise ConfigError(f"MUSIQ patch_size must be a multiple of 4, got {patch}")
        self.conv_root = _StdConv(3, width, 7, 2)
        self.gn_root = nn.GroupNorm(32, width, eps=1e-6)
        self.unit = _Bottleneck(width)
        self.embedding = nn.Linear(4 * width * (patch // 4) ** 2, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn_root(self.conv_root(patches)))
        x = self.unit(F.max_pool2d(pad_same(x, (3, 3), (2, 2), value=float("-inf")), 3, 2))
        # (h, w, c) order, as the Flax model flattens NHWC maps: keeps official weights loadable
        return self.embedding(x.permute(0, 2, 3, 1).flatten(1))


@dataclass(frozen=True)
class MUSIQConfig(ModelConfig):
    backbone: str = "musiq"  # no timm backbone: the stem and encoder are MUSIQ's own
    pretrained: str = "imagenet"  # the official ImageNet checkpoint | false | a path
    img_size: int = 384
    epochs: int = 30
    batch_size: int = 96
    lr: float = 2e-4
    weight_decay: float = 0.0
    optimizer: Optimizer = "sgd"  # momentum 0.9 (ModelConfig's default)
    warmup_epochs: float = 0.0
    schedule: Schedule = "cosine"
    clip_grad: float = 0.0
    train_crops: int = 1
    test_img_size: int | None = 0  # the paper scores each full-size image
    test_crops: int = 1
    label_scale: LabelScale = "raw"
    loss: Loss = "l1"
    mean: tuple[float, float, float] | None = (0.5, 0.5, 0.5)  # [0, 1] → [-1, 1]
    std: tuple[float, float, float] | None = (0.5, 0.5, 0.5)
    patch_size: int = 32
    longer_sides: tuple[int, ...] = (224, 384)
    train_max_native_patches: int = 512  # ℓ in the paper; 0 keeps them all
    grid_size: int = 10
    stem_width: int = 64
    hidden_size: int = 384
    depth: int = 14
    num_heads: int = 6
    mlp_dim: int = 1152
    dropout: float = 0.0  # run_predict_image.py's dropout_rate and attention_dropout_rate

    dataset_overrides = {
        "koniq": {"lr": 2e-4, "batch_size": 96},
        "spaq": {"lr": 2e-3, "batch_size": 128},
        "livec": {"lr": 1e-4, "batch_size": 128},
    }


class MUSIQ(IQAModel):
    name = "musiq"
    label = "MUSIQ"
    Config = MUSIQConfig
    tiny_config = {"pretrained": "false", "hidden_size": 64, "depth": 2, "num_heads": 2,
                   "mlp_dim": 128, "stem_width": 32, "longer_sides": (32, 64), "img_size": 64}
    paper = "MUSIQ: Multi-scale Image Quality Transformer (Ke et al., ICCV 2021)"
    #: pyiqa 0.1.16's state dict of this model → ours (loads pyiqa's released checkpoints)
    pyiqa_key_map = staticmethod(pyiqa_keymaps.musiq)

    def __init__(self, config: MUSIQConfig):
        super().__init__(config)
        if config.backbone != "musiq":
            raise ConfigError(f"MUSIQ builds its own patch stem and encoder; backbone must be "
                              f"'musiq', got {config.backbone!r}")
        self.set_input_norm(config.mean, config.std)
        dim = config.hidden_size
        self.stem = _PatchStem(config.patch_size, config.stem_width, dim)
        self.pos_embed = nn.Parameter(torch.randn(config.grid_size ** 2, dim) * 0.02)
        self.scale_embed = nn.Parameter(torch.randn(len(config.longer_sides) + 1, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, mlp_ratio=config.mlp_dim / dim, qkv_bias=True,
                  proj_drop=config.dropout, attn_drop=config.dropout,
                  act_layer=partial(nn.GELU, approximate="tanh"),
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 1)
        self._init_official()
        self._load_weights(str(config.pretrained))

    def _load_weights(self, pretrained: str) -> None:
        if pretrained.lower() == "false":
            return
        if pretrained.lower() in ("true", "offline-lite0"):
            raise ConfigError(f"MUSIQ has no {pretrained!r} weights; use pretrained=imagenet, "
                              f"false, or the path of an official .npz or a state dict")
        path = fetch_weights(IMAGENET) if pretrained == "imagenet" else Path(pretrained)
        if path.suffix != ".npz":
            load_local_weights(self, path)
            return
        try:
            missing, unexpected = self.load_state_dict(
                load_official_npz(path, self.config.depth), strict=False)
        except RuntimeError as error:
            raise ConfigError(f"MUSIQ weights {path} do not fit this config: "
                              f"{str(error).splitlines()[-1].strip()}") from None
        if unexpected or set(missing) != {"head.weight", "head.bias"}:
            raise ConfigError(f"MUSIQ weights {path} do not cover the model: missing "
                              f"{sorted(set(missing) - {'head.weight', 'head.bias'})[:3]}")

    def _init_official(self) -> None:
        """Flax's initialisers in the official model: Xavier-uniform q/k/v/out and MLP kernels,
        N(0, 1e-6) MLP biases, LeCun-normal stem projection, zero head."""
        for block in self.blocks:
            for chunk in block.attn.qkv.weight.data.chunk(3):  # q, k, v are separate in Flax
                nn.init.xavier_uniform_(chunk)
            nn.init.xavier_uniform_(block.attn.proj.weight)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.proj.bias)
            for layer in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.normal_(layer.bias, std=1e-6)
        fan_in = self.stem.embedding.in_features
        nn.init.trunc_normal_(self.stem.embedding.weight, std=(1.0 / fan_in) ** 0.5 / 0.8796)
        nn.init.zeros_(self.stem.embedding.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def num_features(self) -> int:
        return self.config.hidden_size

    def _sequence(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches, spatial and scale indices of same-sized normalised images (n, 3, H, W)."""
        config = self.config
        patches, spatial, scale = [], [], []
        native_id = len(config.longer_sides)
        for scale_id, longer in enumerate([*sorted(config.longer_sides), None]):
            view = images if longer is None else resize_longer(images, longer)
            cut, rows, cols = patchify(view, config.patch_size)
            index = hashed_positions(rows, cols, config.grid_size, images.device)
            limit = config.train_max_native_patches
            if scale_id == native_id and self.training and 0 < limit < cut.shape[1]:
                cut, index = cut[:, :limit], index[:limit]
            patches.append(cut)
            spatial.append(index)
            scale.append(torch.full_like(index, scale_id))
        return torch.cat(patches, 1), torch.cat(spatial), torch.cat(scale)

    def forward_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Encoded token sequence (B, 1 + L, D); row 0 is [CLS]. Accepts a (B, 3, H, W) tensor or
        a list of (3, H_i, W_i) tensors, all in [0, 1]."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"MUSIQ expects (B, 3, H, W) images, got {tuple(images.shape)}")
            groups = [self.normalize(images)]
        else:
            if not images or any(image.ndim != 3 or image.shape[0] != 3 for image in images):
                raise ValueError("MUSIQ expects a non-empty list of (3, H, W) images")
            groups = [self.normalize(image[None]) for image in images]
        sequences = [self._sequence(group) for group in groups]
        # one stem pass over every real patch of the batch; padding never enters the stem
        flat = torch.cat([patches.flatten(0, 1) for patches, _, _ in sequences])
        embedded = self.stem(flat)
        counts = [patches.shape[0] * patches.shape[1] for patches, _, _ in sequences]
        tokens, spatial, scale = [], [], []
        for chunk, (patches, where, scale_ids) in zip(embedded.split(counts), sequences):
            tokens.extend(chunk.view(patches.shape[0], patches.shape[1], -1).unbind(0))
            spatial.extend([where] * patches.shape[0])
            scale.extend([scale_ids] * patches.shape[0])
        lengths = torch.tensor([len(t) for t in tokens], device=embedded.device)
        x = nn.utils.rnn.pad_sequence(tokens, batch_first=True)
        spatial = nn.utils.rnn.pad_sequence(spatial, batch_first=True)
        scale = nn.utils.rnn.pad_sequence(scale, batch_first=True)
        x = x + self.pos_embed[spatial] + self.scale_embed[scale]
        x = torch.cat([self.cls_token.expand(len(x), -1, -1).to(x.dtype), x], 1)
        mask = None
        if bool((lengths < x.shape[1] - 1).any()):
            valid = torch.arange(x.shape[1] - 1, device=x.device)[None] < lengths[:, None]
            mask = F.pad(valid, (1, 0), value=True)[:, None, None, :]  # keys only; [CLS] is real
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.norm(x)

    def features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_features(images)[:, 0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(1)

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.features(images))

    def param_groups(self) -> list[dict]:
        return decay_groups(self, self.config.lr, self.config.weight_decay,
                            decay_all=self.config.decay_all,
                            no_decay_names=("pos_embed", "scale_embed", "cls_token"))

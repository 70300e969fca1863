"""TReS: transformers, relative ranking and self-consistency for NR-IQA (Golestaneh et al.).

Paper: Golestaneh, Dadsetan, Kitani, "No-Reference Image Quality Assessment via Transformers,
Relative Ranking, and Self-Consistency", WACV 2022. Original code:
https://github.com/isalirezag/TReS (``models.py``, ``transformers.py``, ``posencode.py``,
``args.py``, ``run.sh``, ``data_loader.py``; read for the architecture and recipe, not copied).
Weights: ResNet-50 with torchvision's V1 ImageNet weights (``models.resnet50(pretrained=True)``;
timm ``resnet50.tv_in1k``, not the untagged ``resnet50``, which is RSB A1); the rest is trained
from scratch.

The model: each ResNet stage's map is L2-normalised over channels, L2-pooled (3x3 Hann window
[0.5, 1, 0.5]², stride 1), dropped out (p 0.1) and average-pooled to stage 4's grid (8x8, 4x4,
2x2 windows); the four are stacked into a 3840-channel 7x7 map (for 224 crops). A pre-norm
transformer encoder (2 layers, 16 heads, feed-forward 64, dropout 0.5, DETR's sine positions
added to queries and keys, a final LayerNorm, Xavier-uniform init) attends over its 49 cells.
The head: the encoder output's mean through a linear 3840 → 2048, concatenated with stage 4's
mean (2048), then a linear 4096 → 1. That 4096-d vector is :meth:`TReS.features`. Other inputs
whose side is a multiple of 32 work the same way (the pooling windows follow the strides).

Parameters: 152,452,265 in the original ``Net`` for ResNet-50 (counted layer by layer):
ResNet-50 25,557,032, *including* its ImageNet classifier (2,049,000), which ``Net`` builds but
never uses; encoder 119,024,768 (per layer: attention 44,248,320 + 14,749,440, feed-forward
245,824 + 249,600, two norms 15,360; final norm 7,680); linears 7,866,368 + 4,097. This module
drops the unused classifier: 150,403,265 (1.3 % fewer).

Training objective (:meth:`TReS.loss`), per batch of images and their horizontal flips: L1 on
both predictions; self-consistency, the L1 between the two passes' encoder maps and stage-4
maps, each side against the other's detached copy (compared cell by cell, not flipped back,
as the code does); the relative ranking loss, two triplets on the predictions: the
lowest-labelled image as anchor, the second-lowest as positive, the highest as negative (margin:
label gap between the highest and the second-lowest), and the mirror triplet at the top end,
for each pass; the two passes' ranking losses are pulled together (weight 0.5 each way) and
added with weight 0.05.

Recipe (``run.sh`` for ResNet-50; ``args.py``): Adam at 2e-5 with weight decay 5e-4, batch 53,
3 epochs (5 on FLIVE), lr ÷10 after every epoch, 50 random 224 crops per image in training and
test, random horizontal and vertical flips, L1 on raw labels; KonIQ resized to 512x384
(height x width), FLIVE to 512x512 before cropping.

:meth:`TReS.recipe` states the drops as stages, each a fresh Adam (with L2 decay on every
parameter) as the code builds at each drop, and stops after three drops as the code does (so
FLIVE's epochs 4 and 5 share one rate).

Differences from the original, so results are labelled honestly: the code's forward passes
every image and its flip through the backbone twice each (four passes per step, the inner
flipped pass without the 0.1 dropout), here once each, the detached targets carrying dropout;
vertical flips are drawn in :meth:`TReS.loss` because the harness's loader only flips
horizontally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from baselines import pyiqa_keymaps
from benchmark.models import (ConfigError, IQAModel, Loss, ModelConfig, Optimizer, Recipe,
                              Schedule, Stage, TrainContext, backbone_norm, create_backbone,
                              regression_loss)

__all__ = ["TReS", "TReSConfig", "relative_ranking_loss", "sine_positions"]

_MAX_DROPS = 3  # the code drops the lr after epochs droplr, 2 x droplr and 3 x droplr only


@dataclass(frozen=True)
class TReSConfig(ModelConfig):
    """TReS's recipe from ``run.sh`` (ResNet-50 lines) and ``args.py``."""

    backbone: str = "resnet50.tv_in1k"  # torchvision's V1 ImageNet weights, as the original
    pretrained: str = "true"  # offline: a local weights file
    img_size: int = 224
    epochs: int = 3
    batch_size: int = 53
    lr: float = 2e-5
    weight_decay: float = 5e-4
    optimizer: Optimizer = "adam"
    decay_all: bool = True
    warmup_epochs: float = 0.0
    schedule: Schedule = "constant"  # the drops are the recipe's stages
    droplr: int = 1  # --droplr: epochs between the code's lr drops (x gamma; three at most)
    gamma: float = 0.1  # 1 / the code's lrratio 10
    clip_grad: float = 0.0
    train_crops: int = 50
    test_crops: int = 50
    loss: Loss = "l1"
    vflip: bool = True  # random vertical flips of training images, drawn in loss()
    heads: int = 16
    layers: int = 2
    ffn_dim: int = 64
    dropout: float = 0.5  # inside the encoder
    feature_dropout: float = 0.1  # on the pooled stage maps
    consistency_weight: float = 1.0
    rank_weight: float = 0.05
    rank_consistency_weight: float = 0.5

    dataset_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "koniq": {"resize_hw": (512, 384)},
        "flive": {"resize_hw": (512, 512), "epochs": 5},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.droplr < 1:
            raise ConfigError(f"config key 'droplr' must be at least 1, got {self.droplr!r}")


class L2Pool(nn.Module):
    """Stride-1 L2 pooling with a 3x3 Hann window (the inner taps of ``np.hanning(5)``)."""

    def __init__(self):
        super().__init__()
        window = torch.tensor([0.5, 1.0, 0.5])
        kernel = torch.outer(window, window)
        self.register_buffer("kernel", (kernel / kernel.sum()).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return (F.conv2d(x * x, weight, padding=1, groups=channels) + 1e-12).sqrt()


def sine_positions(dim: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """DETR's normalised sine positions (height x width, dim): row half, then column half."""
    half = dim // 2
    steps = torch.arange(half, device=device, dtype=torch.float32)
    frequencies = 10000.0 ** (2 * torch.div(steps, 2, rounding_mode="floor") / half)

    def encode(length: int) -> torch.Tensor:
        position = torch.arange(1, length + 1, device=device, dtype=torch.float32)
        angles = (position / (length + 1e-6) * 2 * math.pi)[:, None] / frequencies
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    rows = encode(height)[:, None, :].expand(height, width, half)
    cols = encode(width)[None, :, :].expand(height, width, half)
    return torch.cat((rows, cols), dim=2).reshape(height * width, dim)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + ReLU feed-forward; positions join queries and keys only."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        query = h + positions
        x = x + self.dropout(self.attn(query, query, h, need_weights=False)[0])
        h = self.norm2(x)
        return x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(h)))))


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer(tokens, positions)
        return self.norm(tokens)


def relative_ranking_loss(prediction: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The two extreme-end triplets of a batch (L1 distances on scalar predictions)."""
    if len(labels) < 2:
        return prediction.sum() * 0.0
    order = torch.argsort(labels)
    low, low2, high2, high = order[0], order[1], order[-2], order[-1]

    def triplet(anchor, positive, negative, margin):
        closer = (prediction[anchor] - prediction[positive]).abs()
        farther = (prediction[anchor] - prediction[negative]).abs()
        return F.relu(closer - farther + margin)

    return (triplet(low, low2, high, labels[high] - labels[low2])
            + triplet(high, high2, low, labels[high2] - labels[low]))


class TReS(IQAModel):
    """ResNet stages → L2-pooled stack → transformer encoder; + stage 4 → score (B,)."""

    name = "tres"
    label = "TReS"
    Config = TReSConfig
    tiny_config = {"backbone": "test_resnet", "pretrained": "false", "img_size": 64}
    paper = "TReS, Golestaneh et al., WACV 2022 (github.com/isalirezag/TReS)"
    paper_selection = "srcc"  # the released code's test-set epoch rule
    original_precision = "fp32"  # no autocast in the released code
    #: pyiqa 0.1.16's state dict of this model → ours (loads pyiqa's released checkpoints)
    pyiqa_key_map = staticmethod(pyiqa_keymaps.tres)

    def __init__(self, config: TReSConfig):
        super().__init__(config)
        self.backbone = create_backbone(config.backbone, config.pretrained, features_only=True,
                                        out_indices=(1, 2, 3, 4))
        self.set_input_norm(*backbone_norm(self.backbone, config))
        channels = self.backbone.feature_info.channels()
        reductions = self.backbone.feature_info.reduction()
        self.stride = reductions[-1]
        self.windows = [self.stride // r for r in reductions]
        dim = sum(channels)
        if dim % config.heads or dim % 4:
            raise ConfigError(f"TReS: {config.backbone}'s stacked width {dim} must be divisible "
                              f"by heads ({config.heads}) and by 4 (sine positions)")
        self.l2pool = L2Pool()
        self.feature_dropout = nn.Dropout(config.feature_dropout)
        self.encoder = Encoder(dim, config.heads, config.layers, config.ffn_dim, config.dropout)
        self.fc2 = nn.Linear(dim, channels[-1])
        self.fc = nn.Linear(2 * channels[-1], 1)
        self.num_features = 2 * channels[-1]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images → encoder output map (B, D, h, w) and stage 4 (B, C4, h, w)."""
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"TReS takes sides that are multiples of {self.stride}, "
                             f"got {tuple(x.shape[-2:])}")
        stages = self.backbone(x)
        maps = []
        for stage, window in zip(stages, self.windows):
            pooled = self.feature_dropout(self.l2pool(F.normalize(stage, dim=1)))
            maps.append(F.avg_pool2d(pooled, window) if window > 1 else pooled)
        grid = torch.cat(maps, dim=1)
        batch, dim, height, width = grid.shape
        positions = sine_positions(dim, height, width, grid.device)
        tokens = self.encoder(grid.flatten(2).transpose(1, 2), positions)
        return tokens.transpose(1, 2).reshape(batch, dim, height, width), stages[-1]

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(self.normalize(images))

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor],
                     pre_logits: bool = False) -> torch.Tensor:
        encoded, stage4 = features
        embedding = torch.cat([self.fc2(encoded.mean(dim=(2, 3))), stage4.mean(dim=(2, 3))], 1)
        return embedding if pre_logits else self.fc(embedding).squeeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The regressor's input (B, 2 x stage-4 width): projected encoder mean ‖ stage-4 mean."""
        return self.forward_head(self.forward_features(images), pre_logits=True)

    def param_groups(self) -> list[dict]:
        return [{**group, "part": "all"} for group in super().param_groups()]

    @classmethod
    def recipe(cls, c: TReSConfig) -> Recipe:
        """One stage per lr, each on a fresh ``optimizer``, as the code builds a new Adam at
        each drop: after every ``droplr`` epochs the lr is multiplied by ``gamma``, three
        times at most (so FLIVE's epochs 4 and 5 share one rate)."""
        drops = min(_MAX_DROPS, (c.epochs - 1) // c.droplr) if c.epochs else 0
        return Recipe(tuple(
            Stage("start" if k == 0 else f"after drop {k}",
                  c.droplr if k < drops else c.epochs - k * c.droplr, c.optimizer,
                  lr={"all": c.lr * c.gamma ** k})
            for k in range(drops + 1)))

    def loss(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        c = self.config
        images, labels = batch["image"], batch["label"].float().view(-1)
        if c.vflip:
            flip = torch.rand(len(images), device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(2), images)
        x = self.normalize(images)
        views = [self._encode(x), self._encode(x.flip(3))]
        predictions = [self.forward_head(view) for view in views]
        quality = sum(regression_loss(p, labels, c.loss) for p in predictions)
        plain, flipped = views
        consistency = sum(F.l1_loss(mine, theirs.detach())
                          for view, other in ((plain, flipped), (flipped, plain))
                          for mine, theirs in zip(view, other))
        rank, flipped_rank = (relative_ranking_loss(p.float(), labels) for p in predictions)
        rank_consistency = ((rank - flipped_rank.detach()).abs()
                            + (flipped_rank - rank.detach()).abs())
        total = (quality + c.consistency_weight * consistency
                 + c.rank_consistency_weight * rank_consistency
                 + c.rank_weight * (rank + flipped_rank))
        return {"loss": total, "quality": quality, "consistency": consistency,
                "rank": rank + flipped_rank, "rank_consistency": rank_consistency}

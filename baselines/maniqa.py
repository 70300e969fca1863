"""MANIQA: Multi-dimension Attention Network for No-Reference IQA (Yang et al., CVPRW 2022).

Paper: https://arxiv.org/abs/2204.08958 (winner of NTIRE 2022 NR-IQA). Official code
(Apache-2.0): IIGROUP/MANIQA, ``models/maniqa.py``, ``models/swin.py``, ``train_maniqa.py``
(the latest version, March 2023). Re-implemented here from those files; no code is copied.

Model. A timm ViT-B/8 (``vit_base_patch8_224``, ImageNet weights) runs on a 224 crop; the
patch tokens (not [CLS]) of blocks 6, 7, 8 and 9 (0-based, the official hook indices) are
concatenated into a 28×28 map of 4·768 channels. Stage 1: two transposed attention blocks
(TAB: attention between channels, whose q/k/v are linear maps over the 784 spatial
positions), a 1×1 convolution to 768 channels, and a scale Swin transformer (SSTB: input
dropout 0.1, then two layers, each two Swin blocks — window 4, shift 0 and 2, 4 heads, MLP 768,
stochastic depth rising linearly to 0.1 over the four blocks — a 3×3 convolution and ReLU,
added back as ``x + 0.8·layer(x)``). Stage 2: two more TABs, a 1×1 convolution to 384 and a
second SSTB at that width. Every one of the 784 patches then gets a score (Linear, ReLU,
Dropout 0.1, Linear, ReLU) and a weight (the same with a sigmoid); the image score is
Σ score·weight / Σ weight. The Swin blocks are timm's ``SwinTransformerBlock`` (same tensors
and window masks as the official ``SwinBlock``).

Weights. The backbone comes from :func:`benchmark.models.create_backbone`:
``pretrained="true"`` (the default) loads ``vit_base_patch8_224.augreg_in21k_ft_in1k``, the
AugReg ImageNet-21k → 1k weights the official ``timm.create_model('vit_base_patch8_224',
pretrained=True)`` loaded in the timm of its time (today's untagged name resolves to the later
``augreg2`` fine-tune, another network); ``"false"`` is random; a path loads a local file.
MANIQA's own layers start from PyTorch's and timm's default initialisation, as in the official
code.

Parameters. ``train_maniqa.py`` logs 135,747,530 (computed here from the official shapes).
21,582,952 of them cannot affect the score: each official ``SwinTransformer`` builds a 3×3/2
``downsample`` convolution it never calls (5,309,184 + 1,327,488), and the ViT runs its blocks
10–11, final norm and 1000-class head (14,175,744 + 1,536 + 769,000) only to discard their
output. With ``official_layers=True`` (the default) this module builds them too, unused, so its
parameter count and module inventory equal the official model's; ``official_layers=False``
drops them and keeps exactly the other 114,164,578 (ViT to block 9: 71,630,592; MANIQA's own
layers: 42,533,986). The score is the same either way.

Recipe (``train_maniqa.py``): Adam, lr 1e-5, weight decay 1e-5, batch 8, 300 epochs,
MSE on scores min-max normalised to [0, 1] (``label_scale="unit"``), inputs normalised with
mean = std = 0.5, one random 224 crop per image per epoch, flips with probability 0.7. The
official ``RandHorizontalFlip`` calls ``np.fliplr`` on C×H×W arrays, which reverses axis 1,
the rows: the released training flips *vertically*. :meth:`MANIQA.loss` draws those flips
(``flip="vertical"``, ``flip_prob=0.7``; ``flip="horizontal"`` keeps the flip the code's name
promises, ``"none"`` turns it off), so the loader's own 0.5 horizontal flip (``hflip``) is
off. The official ``CosineAnnealingLR(T_max=50)`` is stepped
every batch, so its lr cycles every 100 batches; ``schedule="cosine_periodic"`` with
``cycle_steps=50`` replays it (``"cosine"`` spans the whole run instead).
Evaluation averages five crops (four corners and centre; the engine draws five seeded
crops); only ``predict_one_image.py`` averages 20. The released training script's validation,
whose best epoch the published numbers report, scores one random crop per image. On KonIQ-10k the official loader first
resizes every image to 224×224 (bicubic; the engine's resize is bilinear) and evaluates one
crop (``dataset_overrides``). The first release (2022) used an SSTB scale of 0.13, the
latest 0.8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from baselines import pyiqa_keymaps
from benchmark.models import (ConfigError, IQAModel, LabelScale, Loss, ModelConfig, Optimizer,
                              Schedule, TrainContext, create_backbone, regression_loss)

__all__ = ["MANIQA", "MANIQAConfig", "Flip"]

#: MANIQA's training flips: the released code's (vertical), the one it names, or none
Flip = Literal["vertical", "horizontal", "none"]


class TransposedAttention(nn.Module):
    """TAB: self-attention among channels of a (B, C, N) map; q/k/v map the N positions."""

    def __init__(self, positions: int, drop: float):
        super().__init__()
        self.c_q = nn.Linear(positions, positions)
        self.c_k = nn.Linear(positions, positions)
        self.c_v = nn.Linear(positions, positions)
        self.scale = positions ** -0.5
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, positions = x.shape
        attn = (self.c_q(x) @ self.c_k(x).transpose(-2, -1) * self.scale).softmax(-1)
        # The official block transposes (C, N) → (N, C) and then *reshapes* to (C, N), which
        # reinterprets the buffer rather than transposing back. Kept: it is the trained model.
        out = (attn @ self.c_v(x)).transpose(1, 2).reshape(batch, channels, positions)
        return x + self.proj_drop(out)


class ScaleSwinStage(nn.Module):
    """SSTB: ``depths`` layers of Swin blocks + 3×3 conv + ReLU, each added back scaled."""

    def __init__(self, dim: int, resolution: int, depths: tuple[int, ...], heads: tuple[int, ...],
                 window: int, dim_mlp: int, scale: float, drop: float, drop_path: float,
                 official_layers: bool = False):
        super().__init__()
        if official_layers:  # built by the official SwinTransformer, never called
            self.unused_downsample = nn.Conv2d(dim, dim, 3, 2, 1)
        self.scale = scale
        self.dropout = nn.Dropout(drop)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for layer, (depth, n_heads) in enumerate(zip(depths, heads)):
            first = sum(depths[:layer])
            blocks = nn.Sequential(*[
                SwinTransformerBlock(dim, (resolution, resolution), num_heads=n_heads,
                                     window_size=window, shift_size=(i % 2) * (window // 2),
                                     mlp_ratio=dim_mlp / dim, qkv_bias=True,
                                     drop_path=rates[first + i])
                for i in range(depth)])
            conv = nn.Conv2d(dim, dim, 3, 1, 1)
            self.layers.append(nn.ModuleDict({"blocks": blocks, "conv": conv}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)  # (B, C, H, W)
        for layer in self.layers:
            y = layer["blocks"](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            x = x + self.scale * torch.relu(layer["conv"](y))
        return x


def _score_branch(dim: int, drop: float, out: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(drop), nn.Linear(dim, 1), out)


@dataclass(frozen=True)
class MANIQAConfig(ModelConfig):
    backbone: str = "vit_base_patch8_224.augreg_in21k_ft_in1k"
    pretrained: str = "true"  # the official ImageNet ViT-B/8; offline: a local weights file
    img_size: int = 224
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 1e-5
    optimizer: Optimizer = "adam"  # with L2 decay on every parameter, as the official code
    decay_all: bool = True
    warmup_epochs: float = 0.0
    schedule: Schedule = "cosine_periodic"  # the official T_max=50, stepped every batch
    cycle_steps: int = 50
    clip_grad: float = 0.0
    train_crops: int = 1
    test_crops: int = 5
    hflip: bool = False  # the flips are loss()'s
    flip: Flip = "vertical"  # vertical: the released code
    flip_prob: float = 0.7
    label_scale: LabelScale = "unit"
    loss: Loss = "mse"
    mean: tuple[float, float, float] | None = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] | None = (0.5, 0.5, 0.5)
    block_indices: tuple[int, ...] = (6, 7, 8, 9)
    num_tab: int = 2
    depths: tuple[int, ...] = (2, 2)
    num_heads: tuple[int, ...] = (4, 4)
    window_size: int = 4
    dim_mlp: int = 768
    scale: float = 0.8
    drop: float = 0.1
    drop_path: float = 0.1
    #: also build the official layers that never reach the score (see the module docstring)
    official_layers: bool = True

    dataset_overrides = {"koniq": {"resize_hw": (224, 224), "test_crops": 1}}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hflip and self.flip != "none":
            raise ConfigError("MANIQA draws its own flips (flip, flip_prob); keep hflip false "
                              "or set flip=none")


class MANIQA(IQAModel):
    name = "maniqa"
    label = "MANIQA"
    Config = MANIQAConfig
    #: test_vit: 6 blocks, width 64, patch 16 → an 8×8 grid at 128, so windows still shift
    tiny_config = {"backbone": "test_vit", "pretrained": "false", "img_size": 128,
                   "block_indices": (2, 3, 4, 5), "dim_mlp": 64}
    paper = "MANIQA: Multi-dimension Attention Network for NR-IQA (Yang et al., CVPRW 2022)"
    paper_selection = "srcc+plcc"  # the released code's test-set epoch rule
    original_precision = "fp32"  # no autocast in the released code
    #: pyiqa 0.1.16's state dict of this model → ours (loads pyiqa's released checkpoints)
    pyiqa_key_map = staticmethod(pyiqa_keymaps.maniqa)

    def __init__(self, config: MANIQAConfig):
        super().__init__(config)
        # the official ViT keeps its 1000-class head; forward stops at the last tap either way
        self.backbone = create_backbone(config.backbone, config.pretrained,
                                        num_classes=1000 if config.official_layers else 0,
                                        img_size=config.img_size)
        self.set_input_norm(config.mean, config.std)
        grid = self.backbone.patch_embed.grid_size
        if grid[0] != grid[1]:
            raise ConfigError(f"MANIQA needs a square token grid; {config.backbone} gives {grid}")
        if max(config.block_indices) >= len(self.backbone.blocks):
            raise ConfigError(f"block_indices {config.block_indices} exceed the "
                              f"{len(self.backbone.blocks)} blocks of {config.backbone}")
        if not config.official_layers:
            # blocks after the last tapped one, the final norm and the head never reach the score
            self.backbone.prune_intermediate_layers(list(config.block_indices), prune_norm=True)
        side, width = grid[0], self.backbone.embed_dim
        stage = dict(resolution=side, depths=config.depths, heads=config.num_heads,
                     window=config.window_size, dim_mlp=config.dim_mlp, scale=config.scale,
                     drop=config.drop, drop_path=config.drop_path,
                     official_layers=config.official_layers)
        tabs = [TransposedAttention(side * side, config.drop) for _ in range(2 * config.num_tab)]
        self.tab1 = nn.ModuleList(tabs[:config.num_tab])
        self.conv1 = nn.Conv2d(width * len(config.block_indices), width, 1)
        self.stage1 = ScaleSwinStage(width, **stage)
        self.tab2 = nn.ModuleList(tabs[config.num_tab:])
        self.conv2 = nn.Conv2d(width, width // 2, 1)
        self.stage2 = ScaleSwinStage(width // 2, **stage)
        self.fc_score = _score_branch(width // 2, config.drop, nn.ReLU())
        self.fc_weight = _score_branch(width // 2, config.drop, nn.Sigmoid())

    @property
    def num_features(self) -> int:
        return self.backbone.embed_dim // 2

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch features after both stages, (B, N, D/2)."""
        taps = self.backbone.forward_intermediates(
            self.normalize(images), indices=list(self.config.block_indices), norm=False,
            stop_early=True, output_fmt="NLC", intermediates_only=True)
        x = torch.cat(taps, dim=2).transpose(1, 2)  # (B, 4D, N)
        side = round(x.shape[-1] ** 0.5)
        for tab in self.tab1:
            x = tab(x)
        x = self.stage1(self.conv1(x.unflatten(2, (side, side))))
        x = x.flatten(2)
        for tab in self.tab2:
            x = tab(x)
        x = self.stage2(self.conv2(x.unflatten(2, (side, side))))
        return x.flatten(2).transpose(1, 2)

    def _patch_shares(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch's weight over the image's total weight, (B, N)."""
        weight = self.fc_weight(tokens).squeeze(-1)
        return weight / weight.sum(1, keepdim=True)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The patch-weighted mean of the final patch features, (B, D/2): the pooling the
        score uses, applied to the features the score branch reads."""
        tokens = self.forward_features(images)
        return (self._patch_shares(tokens).unsqueeze(-1) * tokens).sum(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(images)
        return (self.fc_score(tokens).squeeze(-1) * self._patch_shares(tokens)).sum(1)

    def loss(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        """The configured loss after the released code's random flips (see the module docstring)."""
        images, c = batch["image"], self.config
        if c.flip != "none":
            chosen = torch.rand(len(images), device=images.device) < c.flip_prob
            flipped = images.flip(2 if c.flip == "vertical" else 3)
            images = torch.where(chosen[:, None, None, None], flipped, images)
        return {"loss": regression_loss(self(images), batch["label"], c.loss)}

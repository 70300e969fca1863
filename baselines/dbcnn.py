"""DBCNN: deep bilinear CNN for blind image quality assessment (Zhang et al., TCSVT 2020).

Paper: Zhang, Ma, Yan, Deng, Wang, "Blind Image Quality Assessment Using a Deep Bilinear
Convolutional Neural Network", IEEE TCSVT 30(1):36-47, 2020. Original code:
https://github.com/zwx8981/DBCNN-PyTorch (``DBCNN.py``; read for the architecture and recipe,
not copied). Weights: the content stream is VGG-16 (torchvision's ImageNet weights, timm
``vgg16.tv_in1k``, as the original's ``models.vgg16(pretrained=True)``); the synthetic stream
is S-CNN (:mod:`baselines.scnn`), chosen by ``scnn_weights``: ``"original"`` (the default) is
the original's released ``pretrained_scnn/scnn.pkl``, fetched on first use and checked against
its pinned sha256 (:data:`baselines.scnn.ORIGINAL_SCNN`); a path loads another S-CNN file (our
21-class :func:`~baselines.scnn.pretrain_scnn` substitute, or a local copy of ``scnn.pkl``);
``"none"`` leaves S-CNN randomly initialised, which is not the paper's model.

The model: VGG-16 up to conv5_3 (after its ReLU, before the last max-pool; 512 channels, stride
16) and S-CNN's convolutional part (128 channels, stride 16) see the same image; if their maps
differ in size the S-CNN map is resized bilinearly (corners aligned, as the original's
``upsample_bilinear``). Bilinear pooling averages the outer products over positions (B, 512x128),
then a signed square root (with the original's +1e-8; both streams end in ReLU, so it is the
original's plain root), L2 normalisation and one linear layer (Kaiming-normal weight, zero bias)
give the score.

Parameters: 15,311,345 = VGG-16 convolutions 14,714,688 + S-CNN features 531,120 (nine convs
with bias 529,648 + nine BatchNorms 1,472) + FC 65,536 + 1. The original's ``DBCNN`` module
holds exactly these layers.

Recipe (``DBCNN.py``): two stages per split, MSE on raw labels, batch 8, weight decay 5e-4.
Stage 1 trains the FC only, streams frozen, SGD (momentum 0.9) at 1e-3 for 50 epochs; stage 2
fine-tunes everything with Adam at 1e-5 for 50 epochs, starting from stage 1's FC; each stage
builds its own optimiser (``head_optimizer``, then ``optimizer``). Train crops: LIVE 432, LIVE
Challenge 448, CSIQ/TID2013 whole images; test on whole images; random horizontal flips.
``stage`` selects what a run does:

- ``"head"``: stage 1 only (streams frozen; ``head_lr``);
- ``"all"``: stage 2 only (everything at ``lr``), from a fresh FC;
- ``"both"`` (default): ``head_epochs`` epochs of stage 1, then ``epochs - head_epochs`` of
  stage 2, in one run: :meth:`DBCNN.recipe` states the two stages as data (parameter groups
  carry a ``part`` key, ``head`` or ``streams``; stage 1 freezes ``streams``, stage 2 sets
  both parts to ``lr``), and the engine freezes, builds the fresh optimiser and moves the
  learning rates at the switch.

Differences from the original, so results are labelled honestly: stage 2 starts from stage
1's last FC, not the one with the best *test* SRCC. Training crops and whole-image testing
follow the code (``img_size`` 0 in ``dataset_overrides`` trains on whole images;
``test_img_size`` 0 tests on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from baselines import pyiqa_keymaps
from baselines.scnn import ORIGINAL_SCNN, SCNN, load_scnn_features, pretrain_scnn
from benchmark.models import (ConfigError, IQAModel, Loss, ModelConfig, Optimizer, Recipe,
                              Schedule, Stage, backbone_norm, create_backbone, decay_groups)
from benchmark.weights import fetch_weights

__all__ = ["DBCNN", "DBCNNConfig", "StageChoice"]

StageChoice = Literal["head", "all", "both"]


@dataclass(frozen=True)
class DBCNNConfig(ModelConfig):
    """DBCNN's recipe as ``DBCNN.py`` runs it (see the module docstring for the stages)."""

    backbone: str = "vgg16.tv_in1k"  # torchvision's ImageNet VGG-16, as the original
    pretrained: str = "true"  # ImageNet VGG-16; offline: a local weights file
    scnn_weights: str = "original"  # "original" (released scnn.pkl) | "none" (random) | a path
    stage: StageChoice = "both"
    head_epochs: int = 50  # stage 1's length when stage="both"
    head_lr: float = 1e-3  # stage 1's lr (FC only)
    head_optimizer: Optimizer = "sgd"  # stage 1's (momentum 0.9); stage 2 uses `optimizer`
    img_size: int = 448  # LIVE Challenge crop; LIVE in dataset_overrides
    epochs: int = 100  # all epochs of the run: 50 + 50 for "both"
    batch_size: int = 8
    lr: float = 1e-5  # stage 2's lr (everything)
    weight_decay: float = 5e-4
    optimizer: Optimizer = "adam"  # stage 2's
    decay_all: bool = True  # both solvers get net.parameters() with the weight decay
    warmup_epochs: float = 0.0
    schedule: Schedule = "constant"
    clip_grad: float = 0.0
    train_crops: int = 1
    test_img_size: int | None = 0  # whole test images, one per batch, as the original
    test_crops: int = 1
    loss: Loss = "mse"

    dataset_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "live": {"img_size": 432},
        "csiq": {"img_size": 0},  # whole images (all 512x512), as the original trains
        "tid2013": {"img_size": 0},  # whole images (all 512x384), as the original trains
        "kadid": {"img_size": 0},  # not in the original; whole images like TID2013
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage == "both" and not 0 < self.head_epochs < self.epochs:
            raise ConfigError(f"stage 'both' needs 0 < head_epochs < epochs, got head_epochs "
                              f"{self.head_epochs} and epochs {self.epochs}")


def _content_stream(config: DBCNNConfig) -> tuple[nn.Sequential, int, nn.Module]:
    """VGG features up to the last conv block's ReLU, its width, and the timm model (for norm)."""
    vgg = create_backbone(config.backbone, config.pretrained)
    features = getattr(vgg, "features", None)
    if not isinstance(features, nn.Sequential) or not isinstance(features[-1], nn.MaxPool2d):
        raise ConfigError(f"DBCNN needs a VGG backbone (a 'features' stack ending in max-pool); "
                          f"{config.backbone} is not one")
    width = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    return features[:-1], width, vgg


def _synthetic_stream(scnn_weights: str) -> nn.Sequential:
    """S-CNN's convolutional part with the weights ``scnn_weights`` names."""
    features = SCNN().features
    if scnn_weights == "none":
        return features
    path = fetch_weights(ORIGINAL_SCNN) if scnn_weights == "original" else Path(scnn_weights)
    try:
        features.load_state_dict(load_scnn_features(path))
    except RuntimeError as error:
        raise ConfigError(f"scnn_weights file {path} does not fit S-CNN: "
                          f"{str(error).splitlines()[0]}") from None
    return features


class DBCNN(IQAModel):
    """VGG-16 content stream x S-CNN synthetic stream → bilinear pooling → linear score (B,)."""

    #: ``bench pretrain --model dbcnn --out scnn.pt``: the S-CNN distortion-classification step
    pretrain = staticmethod(pretrain_scnn)

    name = "dbcnn"
    label = "DBCNN"
    Config = DBCNNConfig
    tiny_config = {"backbone": "vgg11", "pretrained": "false", "scnn_weights": "none",
                   "stage": "all", "img_size": 64}
    paper = "DBCNN, Zhang et al., IEEE TCSVT 2020 (github.com/zwx8981/DBCNN-PyTorch)"
    paper_selection = "srcc"  # the released code's test-set epoch rule
    original_precision = "fp32"  # no autocast in the released code
    #: pyiqa 0.1.16's state dict of this model → ours (loads pyiqa's released checkpoints)
    pyiqa_key_map = staticmethod(pyiqa_keymaps.dbcnn)

    def __init__(self, config: DBCNNConfig):
        super().__init__(config)
        self.content, width, vgg = _content_stream(config)
        self.set_input_norm(*backbone_norm(vgg, config))
        self.synthetic = _synthetic_stream(config.scnn_weights)
        self.num_features = width * SCNN.out_channels
        self.fc = nn.Linear(self.num_features, 1)
        nn.init.kaiming_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        # "head" never trains the streams; "both" freezes them through its recipe's first stage
        self._freeze_streams(config.stage == "head")

    def _stream_parameters(self):
        yield from self.content.parameters()
        yield from self.synthetic.parameters()

    def _freeze_streams(self, frozen: bool) -> None:
        for parameter in self._stream_parameters():
            parameter.requires_grad_(not frozen)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised bilinear vector (B, 512x128), the FC's input."""
        x = self.normalize(images)
        content, synthetic = self.content(x), self.synthetic(x)
        if synthetic.shape[-2:] != content.shape[-2:]:
            synthetic = F.interpolate(synthetic, size=content.shape[-2:], mode="bilinear",
                                      align_corners=True)
        height, width = content.shape[-2:]
        # sums of up to ~800 products of activations; half precision would lose the small ones
        dtype = torch.promote_types(content.dtype, torch.float32)
        with torch.autocast(content.device.type, enabled=False):
            pooled = torch.bmm(content.to(dtype).flatten(2),
                               synthetic.to(dtype).flatten(2).transpose(1, 2)) / (height * width)
            pooled = pooled.flatten(1)
            pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-8)
            return F.normalize(pooled, dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features if pre_logits else self.fc(features).squeeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)

    def param_groups(self) -> list[dict]:
        c = self.config
        head = [{**g, "part": "head"}
                for g in decay_groups(self.fc, c.head_lr, c.weight_decay, decay_all=c.decay_all)]
        if c.stage == "head":
            return head
        if c.stage == "all":
            return [{**g, "part": "all"}
                    for g in decay_groups(self, c.lr, c.weight_decay, decay_all=c.decay_all)]
        streams = nn.ModuleList([self.content, self.synthetic])
        return head + [{**g, "part": "streams"}
                       for g in decay_groups(streams, c.lr, c.weight_decay, decay_all=c.decay_all)]

    @classmethod
    def recipe(cls, c: DBCNNConfig) -> Recipe:
        """Stage 1 (the FC, streams frozen) on ``head_optimizer`` at ``head_lr``, then stage 2
        (everything) on a fresh ``optimizer`` at ``lr``, as the original builds a new solver
        per stage; "head" and "all" run one of them."""
        if c.stage == "head":
            return Recipe((Stage("head", c.epochs, c.head_optimizer, lr={"head": c.head_lr}),))
        if c.stage == "all":
            return Recipe((Stage("all", c.epochs, c.optimizer),))
        return Recipe((Stage("head", c.head_epochs, c.head_optimizer, lr={"head": c.head_lr},
                             frozen=("streams",)),
                       Stage("all", c.epochs - c.head_epochs, c.optimizer,
                             lr={"head": c.lr, "streams": c.lr})))

"""Linear probe, fine-tuned end to end: a timm backbone's pooled feature and one linear score.

The simplest deep NR-IQA baseline, and the engine's own test subject: if a probe cannot
learn a dataset, the pipeline is broken, not the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.models import IQAModel, ModelConfig, backbone_norm, create_backbone, decay_groups

__all__ = ["Probe", "ProbeConfig"]


@dataclass(frozen=True)
class ProbeConfig(ModelConfig):
    backbone: str = "tf_efficientnet_lite0"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-4
    backbone_lr_scale: float = 0.1  # a pretrained backbone moves slower than the fresh head
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    train_crops: int = 4
    test_crops: int = 4
    label_scale: str = "unit"
    loss: str = "mse"


class Probe(IQAModel):
    name = "probe"
    Config = ProbeConfig
    paper = "linear probe on a timm backbone (harness baseline)"

    def __init__(self, config: ProbeConfig):
        super().__init__(config)
        self.backbone = create_backbone(config.backbone, config.pretrained, num_classes=0)
        self.set_input_norm(*backbone_norm(self.backbone, config))
        self.head = nn.Linear(self.backbone.num_features, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)).squeeze(1)

    def param_groups(self) -> list[dict]:
        return decay_groups(self, self.config.lr, self.config.weight_decay, backbone=self.backbone,
                            backbone_lr=self.config.lr * self.config.backbone_lr_scale)

"""Linear probe, fine-tuned end to end: a timm backbone's pooled feature and one linear score.

The simplest deep NR-IQA baseline, and the engine's own test subject: if a probe cannot
learn a dataset, the pipeline is broken, not the model.

``head_init="ridge"`` (the default) first fits the head in closed form on the frozen
backbone's features of the training images, then fine-tunes everything (LP-FT, Kumar et al.,
ICLR 2022). On a few hundred images this matters more than any learning rate: 1280 pooled
features and 300 labels make the head's least-squares problem under-determined, and AdamW
from a random head fits it far worse (LIVEC, 302 training images: test SRCC about 0.5 from a
trained head on frozen features, 0.74 from ridge on the same features). ``"random"`` is the
plain fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from benchmark.models import (IQAModel, LabelScale, Loss, ModelConfig, Schedule, backbone_norm,
                              create_backbone, decay_groups)

__all__ = ["Probe", "ProbeConfig"]

#: ridge penalties searched by leave-one-out; the choice does not depend on the label scale
_RIDGE_ALPHAS = np.logspace(-3, 4, 29)


@dataclass(frozen=True)
class ProbeConfig(ModelConfig):
    backbone: str = "tf_efficientnet_lite0"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    backbone_lr_scale: float = 1.0  # the ridge-fitted head needs no faster lr than the backbone
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    schedule: Schedule = "cosine"
    train_crops: int = 4
    test_crops: int = 4
    label_scale: LabelScale = "unit"
    loss: Loss = "mse"
    #: ridge: fitted in closed form on the frozen features, then fine-tuned
    head_init: Literal["ridge", "random"] = "ridge"


class Probe(IQAModel):
    name = "probe"
    label = "Probe"
    Config = ProbeConfig
    tiny_config = {"backbone": "test_resnet", "pretrained": "false", "img_size": 64}
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

    def init_from_features(self, features: Callable[[], np.ndarray],
                           labels: np.ndarray) -> str | None:
        if self.config.head_init == "random":
            return None
        from sklearn.linear_model import RidgeCV

        # generalised cross-validation (efficient leave-one-out) picks the penalty on the
        # training images alone, so the validation slice stays untouched for model selection
        ridge = RidgeCV(alphas=_RIDGE_ALPHAS).fit(features(), labels)
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(ridge.coef_, dtype=torch.float32).view(1, -1))
            self.head.bias.fill_(float(ridge.intercept_))
        return (f"probe head: ridge on frozen features of {len(labels)} training images "
                f"(alpha {ridge.alpha_:.3g} by leave-one-out)")

    def param_groups(self) -> list[dict]:
        c = self.config
        return decay_groups(self, c.lr, c.weight_decay, backbone=self.backbone,
                            backbone_lr=c.lr * c.backbone_lr_scale, decay_all=c.decay_all)

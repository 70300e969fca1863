"""DEIQT: Data-Efficient Image Quality Transformer (Qin et al., AAAI 2023).

Paper: "Data-Efficient Image Quality Assessment with Attention-Panel Decoder", arXiv 2304.04952.
Original code: https://github.com/narthchin/DEIQT (read for the architecture, not copied).
Weights: the backbone is DeiT-III ViT-S/16 (ImageNet-1k, 224), timm's
``deit3_small_patch16_224.fb_in1k``; the decoder is trained from scratch. No ViT weights can be
downloaded offline, so ``pretrained`` must name a local file there; a run with
``pretrained=false`` is not a DEIQT run and is labelled by its config.

The model: the backbone's normalised tokens are split into the CLS vector ``c`` (the decoder's
queries, added to each of 6 learned panel embeddings) and the patch tokens ``P`` (the decoder's
memory). One pre-norm transformer decoder layer, a shared bias-free scoring layer and the mean
over the panel give the score. A CNN backbone (e.g. ``tf_efficientnet_lite0``) is adapted by
turning its last feature map into tokens and its pooled feature into the CLS vector, each through
its own linear projection to the decoder width, followed by one LayerNorm over all tokens (the
role of the ViT's final norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.models import (ConfigError, IQAModel, ModelConfig, backbone_norm,
                              create_backbone_at, decay_groups)

__all__ = ["DEIQT", "DEIQTConfig", "PanelDecoder", "TokenProjection", "build_backbone",
           "backbone_tokens"]


class PanelDecoder(nn.Module):
    """The attention-panel decoder ("Experts_MOS"): panel queries E + c attend to the patches."""

    def __init__(self, dim: int, panel_size: int = 6, heads: int = 6, ffn_ratio: int = 4):
        super().__init__()
        self.panel = nn.Parameter(torch.zeros(1, panel_size, dim))
        # norm_first + no final norm + LayerNorm eps 1e-5, as the official depth-1 decoder
        self.layer = nn.TransformerDecoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=ffn_ratio * dim, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True)
        self.score = nn.Linear(dim, 1, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official init pass: every nn.Linear (attention out_proj included) gets trunc-normal
        # 0.02 and zero bias; the packed in-projection keeps PyTorch's Xavier-uniform default.
        nn.init.trunc_normal_(self.panel, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor,
                pre_logits: bool = False) -> torch.Tensor:
        """Scores (B,) from CLS (B, D) and patches (B, N, D); ``pre_logits``: panel-mean (B, D)."""
        hidden = self.layer(self.panel + cls.unsqueeze(1), patches)
        if pre_logits:
            return hidden.mean(dim=1)
        return self.score(hidden).mean(dim=(1, 2))


class TokenProjection(nn.Module):
    """Maps a backbone's (CLS, tokens) of width C to the decoder width, then one LayerNorm."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.cls_proj = nn.Linear(in_dim, dim)
        self.token_proj = nn.Linear(in_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = torch.cat([self.cls_proj(cls).unsqueeze(1), self.token_proj(tokens)], dim=1)
        projected = self.norm(projected)
        return projected[:, 0], projected[:, 1:]


@dataclass(frozen=True)
class DEIQTConfig(ModelConfig):
    """DEIQT's recipe (method.md §2.4): AdamW 2e-4 / wd 0.05, 3 warm-up epochs from 2e-7, step
    ×0.1 every 3 epochs, 9 epochs, clip 5.0, SmoothL1 on raw labels, 10 crops in train and test."""

    backbone: str = "deit3_small_patch16_224"
    pretrained: str = "true"  # DeiT-III ImageNet-1k; offline: a local weights file
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm kwargs
    decoder_dim: int = 384  # tokens of another width (and every CNN's) are projected to it
    panel_size: int = 6
    decoder_heads: int = 6
    batch_size: int = 48

    #: §2.5: effective batch sizes (per-GPU × 4 GPUs) and KonIQ/SPAQ's (height, width) resize
    dataset_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "live": {"batch_size": 48},
        "csiq": {"batch_size": 48},
        "tid2013": {"batch_size": 48},  # not recovered from the configs; ours
        "kadid": {"batch_size": 512},
        "livec": {"batch_size": 64},
        "koniq": {"batch_size": 512, "resize_hw": (512, 384)},
        "spaq": {"batch_size": 512, "resize_hw": (512, 384)},
        "flive": {"batch_size": 1024},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"decoder_dim {self.decoder_dim} is not divisible by "
                              f"decoder_heads {self.decoder_heads}")


def build_backbone(config: DEIQTConfig) -> nn.Module:
    """The config's timm backbone without its classifier, at the config's crop side."""
    return create_backbone_at(config.backbone, config.pretrained, config.img_size,
                              **config.backbone_kwargs)


def backbone_tokens(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised batch → the backbone's CLS (B, C) and tokens (B, N, C), before projection.

    ViT: token 0 and the tokens after the prefix (CLS, registers). CNN: the last feature map's
    positions as tokens and their mean as the CLS vector.
    """
    out = backbone.forward_features(x)
    if getattr(backbone, "cls_token", None) is not None:
        return out[:, 0], out[:, getattr(backbone, "num_prefix_tokens", 1):]
    if out.ndim == 4:
        tokens = out.flatten(2).transpose(1, 2)
        return tokens.mean(dim=1), tokens
    raise ConfigError(f"backbone {type(backbone).__name__} returns features of shape "
                      f"{tuple(out.shape)}; expected ViT tokens or a B×C×H×W map")


class DEIQT(IQAModel):
    """ViT (or CNN) backbone → CLS + patch tokens → attention-panel decoder → score (B,)."""

    name = "deiqt"
    label = "DEIQT"
    Config = DEIQTConfig
    tiny_config = {"backbone": "vit_tiny_patch16_224", "pretrained": "false", "img_size": 64,
                   "backbone_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3},
                   "decoder_dim": 48}
    paper = "DEIQT, Qin et al., AAAI 2023 (github.com/narthchin/DEIQT)"
    original_precision = "mixed"  # the official main.py trains under autocast (AMP_ENABLE)

    def __init__(self, config: DEIQTConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        is_vit = getattr(self.backbone, "cls_token", None) is not None
        width = self.backbone.num_features
        needs_projection = not is_vit or width != config.decoder_dim
        self.projection = TokenProjection(width, config.decoder_dim) if needs_projection else None
        self.decoder = PanelDecoder(config.decoder_dim, config.panel_size, config.decoder_heads)
        self.num_features = config.decoder_dim
        self.set_input_norm(*backbone_norm(self.backbone, config))

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] → the decoder inputs: CLS (B, D) and patch tokens (B, N, D)."""
        cls, tokens = backbone_tokens(self.backbone, self.normalize(images))
        if self.projection is not None:
            cls, tokens = self.projection(cls, tokens)
        return cls, tokens

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder input as one token sequence (B, 1 + N, D), CLS first."""
        cls, patches = self.forward_tokens(images)
        return torch.cat([cls.unsqueeze(1), patches], dim=1)

    def decode(self, cls: torch.Tensor, patches: torch.Tensor,
               pre_logits: bool = False) -> torch.Tensor:
        return self.decoder(cls, patches, pre_logits=pre_logits)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Scores (B,) from :meth:`forward_features`; ``pre_logits``: panel-mean output (B, D)."""
        return self.decode(tokens[:, 0], tokens[:, 1:], pre_logits=pre_logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.forward_tokens(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's query input: the CLS vector c (B, D)."""
        return self.forward_tokens(images)[0]

    def param_groups(self) -> list[dict]:
        """The official code trains everything at one lr (backbone_lr_scale = 1); another
        scale sets the backbone's (the projection and decoder keep lr)."""
        c = self.config
        return decay_groups(self, c.lr, c.weight_decay, backbone=self.backbone,
                            backbone_lr=c.lr * c.backbone_lr_scale, decay_all=c.decay_all)

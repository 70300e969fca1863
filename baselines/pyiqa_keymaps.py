"""State-dict key maps from pyiqa's ports to this project's baselines.

pyiqa (chaofengc/IQA-PyTorch, version 0.1.16, ``pyiqa/archs/*_arch.py``) re-implements
HyperIQA, DBCNN, MUSIQ, MANIQA and TReS under its own module names. Each function here takes
a state dict of pyiqa's module and returns one that loads into ours with ``strict=True``, so
pyiqa's released checkpoints load into our models and the golden-output tests
(``tests/test_pyiqa_golden.py``) can prove that both compute the same scores.

Every pyiqa key must match a rule: a rule either renames it or drops it (buffers that ours
computes, layers that ours does not build), and a key that no rule covers is an error, so a
change in pyiqa's layout cannot pass silently. The maps are pure functions of the tensors;
nothing here builds or imports a model. Each model exposes its map as the class attribute
``pyiqa_key_map``, so code that finds models by name reaches it through the registry.
"""

from __future__ import annotations

import re

import torch

from benchmark.models import ConfigError

__all__ = ["rename", "hyperiqa", "dbcnn", "tres", "maniqa", "musiq"]

#: (regular expression over the whole pyiqa key, replacement template or None to drop it)
Rule = tuple[str, "str | None"]

_W = r"(weight|bias)"

_HYPERIQA: list[Rule] = [
    (r"base_model\.(.+)", r"backbone.\1"),
    (r"lda_modules\.([0-2])\.0\.weight", r"lda.\1.squeeze.weight"),
    (rf"lda_modules\.([0-2])\.3\.{_W}", r"lda.\1.fc.\2"),
    (rf"lda_modules\.3\.2\.{_W}", r"lda.3.fc.\1"),
    (rf"conv1\.([024])\.{_W}", r"hyper.reduce.\1.\2"),
    (rf"fc_w_modules\.([0-3])\.{_W}", r"hyper.weight_convs.\1.\2"),
    (rf"fc_w_modules\.4\.2\.{_W}", r"hyper.last_weight.\1"),
    (rf"fc_b_modules\.([0-3])\.2\.{_W}", r"hyper.bias_fcs.\1.\2"),
    (rf"fc_b_modules\.4\.2\.{_W}", r"hyper.last_bias.\1"),
]

_DBCNN: list[Rule] = [
    (r"features1\.(.+)", r"content.\1"),
    (r"features2\.(.+)", r"synthetic.\1"),
    (rf"fc\.{_W}", r"fc.\1"),
]

_TRES: list[Rule] = [
    (rf"model\.fc\.{_W}", None),  # the ImageNet classifier the original builds and never uses
    (r"model\.(.+)", r"backbone.\1"),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)", r"encoder.layers.\1.attn.\2"),
    (rf"transformer\.encoder\.layers\.(\d+)\.((?:linear|norm)[12])\.{_W}",
     r"encoder.layers.\1.\2.\3"),
    (rf"transformer\.encoder\.norm\.{_W}", r"encoder.norm.\1"),
    (r"L2pooling_l[1-4]\.filter", None),  # the fixed Hann window, computed by ours
    (rf"(fc2?)\.{_W}", r"\1.\2"),
]

_MANIQA: list[Rule] = [
    (r"vit\.(.+)", r"backbone.\1"),
    (r"tablock([12])\.(\d+)\.(.+)", r"tab\1.\2.\3"),
    (rf"conv([12])\.{_W}", r"conv\1.\2"),
    (rf"swintransformer([12])\.downsample\.{_W}", r"stage\1.unused_downsample.\2"),
    (rf"swintransformer([12])\.layers\.(\d+)\.conv\.{_W}", r"stage\1.layers.\2.conv.\3"),
    # window masks and relative-position indices: buffers timm's Swin block computes
    (r"swintransformer[12]\.layers\.\d+\.blocks\.\d+\.(attn_mask|attn\.relative_position_index)",
     None),
    (r"swintransformer([12])\.layers\.(\d+)\.blocks\.(\d+)\.(.+)", r"stage\1.layers.\2.blocks.\3.\4"),
    (r"(fc_score|fc_weight)\.(\d)\.(weight|bias)", r"\1.\2.\3"),
]

_BLOCK = r"transformer_encoder\.transformer\.encoderblock_(\d+)"
_MUSIQ: list[Rule] = [
    (r"(conv_root\.weight|gn_root\.weight|gn_root\.bias)", r"stem.\1"),
    (r"block1\.(.+)", r"stem.unit.\1"),
    (rf"embedding\.{_W}", r"stem.embedding.\1"),
    (r"transformer_encoder\.posembed_input\.position_emb", "pos_embed"),
    (r"transformer_encoder\.scaleembed_input\.scale_emb", "scale_embed"),
    (r"transformer_encoder\.cls", "cls_token"),
    (rf"transformer_encoder\.encoder_norm\.{_W}", r"norm.\1"),
    (rf"{_BLOCK}\.(norm[12]|mlp\.fc[12])\.{_W}", r"blocks.\1.\2.\3"),
    (rf"{_BLOCK}\.attention\.out\.{_W}", r"blocks.\1.attn.proj.\2"),
    # fused into timm's single qkv projection by musiq() below
    (rf"{_BLOCK}\.attention\.(query|key|value)\.{_W}", r"blocks.\1.attn.\2.\3"),
    (rf"head\.{_W}", r"head.\1"),
]


def rename(state: dict[str, torch.Tensor], rules: list[Rule], model: str) -> dict[str, torch.Tensor]:
    """Apply the first matching rule to every key; a key no rule matches is an error."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, key)
            if match:
                if replacement is not None:
                    out[match.expand(replacement)] = value
                break
        else:
            raise ConfigError(f"pyiqa {model} key {key!r} has no counterpart in ours "
                              f"(not a pyiqa 0.1.16 {model} state dict?)")
    return out


def hyperiqa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pyiqa ``HyperNet`` → :class:`baselines.hyperiqa.HyperIQA`."""
    return rename(state, _HYPERIQA, "hyperiqa")


def dbcnn(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pyiqa ``DBCNN`` → :class:`baselines.dbcnn.DBCNN`."""
    return rename(state, _DBCNN, "dbcnn")


def tres(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pyiqa ``TReS`` (ResNet-50) → :class:`baselines.tres.TReS`."""
    return rename(state, _TRES, "tres")


def maniqa(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pyiqa ``MANIQA`` → :class:`baselines.maniqa.MANIQA` with ``official_layers=True``
    (pyiqa, like the official code, keeps the ViT's last blocks and head)."""
    return rename(state, _MANIQA, "maniqa")


def musiq(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pyiqa ``MUSIQ`` (one-output head) → :class:`baselines.musiq.MUSIQ`: separate q/k/v
    projections are stacked into one, the (1, G², D) position table loses its batch axis."""
    out = rename(state, _MUSIQ, "musiq")
    if out.get("head.weight") is not None and out["head.weight"].shape[0] != 1:
        raise ConfigError("pyiqa musiq state dict has a distribution head (AVA, 10 classes); "
                          "ours predicts one score")
    if "pos_embed" in out:
        out["pos_embed"] = out["pos_embed"].reshape(-1, out["pos_embed"].shape[-1])
    blocks = sorted({int(k.split(".")[1]) for k in out if k.startswith("blocks.")})
    for index in blocks:
        prefix = f"blocks.{index}.attn."
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{name}.{kind}") for name in ("query", "key", "value")]
            out[f"{prefix}qkv.{kind}"] = torch.cat(parts)
    return out

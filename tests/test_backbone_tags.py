"""Each model's default backbone resolves to the weights its original used.

An untagged timm name resolves to timm's current default weights, which can be another
network (``resnet50`` is RSB A1, ``vit_base_patch8_224`` the augreg2 fine-tune), so the
configs name the tag and this test pins what timm resolves it to.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.models import create_backbone, get_model_class, list_models

#: model → (timm architecture, pretrained_cfg tag) of its original's ImageNet weights
ORIGINAL_WEIGHTS = {
    "hyperiqa": ("resnet50", "tv_in1k"),  # torchvision models.resnet50(pretrained=True)
    "tres": ("resnet50", "tv_in1k"),
    "dbcnn": ("vgg16", "tv_in1k"),  # torchvision models.vgg16(pretrained=True)
    "maniqa": ("vit_base_patch8_224", "augreg_in21k_ft_in1k"),
    "deiqt": ("deit3_small_patch16_224", "fb_in1k"),  # DeiT-III ImageNet-1k
    "qfm": ("deit3_small_patch16_224", "fb_in1k"),  # its student is a DEIQT
    "probe": ("tf_efficientnet_lite0", "in1k"),
}
#: models that build no timm backbone
OWN_NETWORKS = {"musiq", "brisque"}


def test_every_model_is_listed():
    assert set(list_models()) == set(ORIGINAL_WEIGHTS) | OWN_NETWORKS


@pytest.mark.parametrize("name", sorted(ORIGINAL_WEIGHTS))
def test_default_backbone_resolves_to_the_originals_weights(name):
    with torch.device("meta"):  # the resolved config only; no weights, no compute
        backbone = create_backbone(get_model_class(name).Config.backbone, "false")
    cfg = backbone.pretrained_cfg
    architecture, tag = ORIGINAL_WEIGHTS[name]
    assert (cfg["architecture"], cfg["tag"]) == (architecture, tag)
    assert cfg["hf_hub_id"] == f"timm/{architecture}.{tag}"

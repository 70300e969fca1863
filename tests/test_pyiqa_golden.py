"""Golden outputs: our HyperIQA, DBCNN, MUSIQ, MANIQA and TReS score like pyiqa's ports.

For each model, pyiqa 0.1.16's architecture is built with every weight download stubbed out,
filled with seeded random weights (``seeded_weights.fill_seeded``), mapped into ours through
``baselines.pyiqa_keymaps`` and loaded with ``strict=True``; both then score the same seeded
images in eval mode and must agree within 1e-5. pyiqa's test-time crop helpers are replaced by
the identity (the inputs already have the crop size), and for MUSIQ both sides use our
resize, whose match to TensorFlow's is tested in ``test_baselines_transformer.py``.

Skipped without pyiqa: ``pip install -e '.[golden]' && pip install --no-deps pyiqa==0.1.16``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pyiqa", reason="pyiqa is not installed: pip install -e '.[golden]' && "
                                     "pip install --no-deps pyiqa==0.1.16")

import timm  # noqa: E402
import torchvision  # noqa: E402
from pyiqa.archs import dbcnn_arch, hypernet_arch, maniqa_arch, musiq_arch, tres_arch  # noqa: E402
from pyiqa.data import multiscale_trans_util  # noqa: E402

from benchmark.models import get_model_class  # noqa: E402
from seeded_weights import fill_seeded  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture
def offline(monkeypatch):
    """Every pyiqa weight source replaced: timm and torchvision build random networks, and
    pyiqa's loader must never be reached. ``swap`` maps a network name pyiqa hard-codes to a
    smaller one of the same family for the fast variants."""
    swap: dict[str, str] = {}
    create = timm.create_model

    def random_timm(name, *args, **kwargs):
        return create(swap.get(name, name), *args, **{**kwargs, "pretrained": False})

    monkeypatch.setattr(timm, "create_model", random_timm)
    builders = {name: getattr(torchvision.models, name)
                for name in ("resnet18", "resnet50", "vgg11", "vgg16")}
    for name in ("resnet18", "resnet50", "vgg16"):
        monkeypatch.setattr(torchvision.models, name,
                            lambda *args, _name=name, **kwargs: builders[swap.get(_name, _name)]())

    def refuse(*args, **kwargs):
        raise AssertionError("a pyiqa weight download was attempted")

    for module in (hypernet_arch, maniqa_arch, musiq_arch, tres_arch):
        monkeypatch.setattr(module, "load_pretrained_network", refuse)
    # DBCNN loads its S-CNN unconditionally; the seeded fill overwrites it anyway
    monkeypatch.setattr(dbcnn_arch, "load_pretrained_network", lambda *args, **kwargs: None)
    for module in (maniqa_arch, tres_arch):
        monkeypatch.setattr(module, "uniform_crop", lambda x, crop_size, crop_num: x)
    return swap


def ours_from(pyiqa_model: torch.nn.Module, name: str, **config) -> torch.nn.Module:
    cls = get_model_class(name)
    model = cls(cls.Config(pretrained="false", **config)).eval()
    model.load_state_dict(cls.pyiqa_key_map(pyiqa_model.state_dict()), strict=True)
    return model.double()


def images(*shape: int, seed: int = 7) -> torch.Tensor:
    """Seeded uniform noise; every second image darkened (x⁴), so the scores differ clearly."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[1::2] = x[1::2] ** 4
    return x


def assert_same(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    theirs, ours = theirs.reshape(-1), ours.reshape(-1)
    assert ours.shape == theirs.shape
    # two different images must score further apart than the tolerance, or equality proves nothing
    assert float(theirs.max() - theirs.min()) > 10 * TOLERANCE
    assert float((ours - theirs).abs().max()) <= TOLERANCE, (ours, theirs)


#: the default configs (slow on a CPU), and small networks of the same families (fast)
FULL = pytest.param("full", marks=pytest.mark.slow)
VARIANTS = ("tiny", FULL)


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_hyperiqa_matches_pyiqa(offline, variant):
    backbone = {"tiny": "resnet14t", "full": "resnet50"}[variant]
    theirs = hypernet_arch.HyperNet(base_model_name=backbone, pretrained=False).eval()
    fill_seeded(theirs, 0)
    ours = ours_from(theirs, "hyperiqa", **({"backbone": backbone} if variant == "tiny" else {}))
    x = images(2, 3, 224, 224)
    assert_same(theirs.double().forward_patch(x), ours(x))


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_dbcnn_matches_pyiqa(offline, variant):
    if variant == "tiny":
        offline["vgg16"] = "vgg11"
    theirs = dbcnn_arch.DBCNN(pretrained=False).eval()
    fill_seeded(theirs, 1, gain=2.0)
    ours = ours_from(theirs, "dbcnn", scnn_weights="none",
                     **({"backbone": "vgg11"} if variant == "tiny" else {}))
    # 52x60: VGG's map is 3x3, S-CNN's 4x4, so the bilinear resize of S-CNN's map is exercised
    x = images(2, 3, 52, 60)
    assert_same(theirs.double()(x), ours(x))


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_tres_matches_pyiqa(offline, variant):
    network = {"tiny": "resnet18", "full": "resnet50"}[variant]
    theirs = tres_arch.TReS(network=network, pretrained=False, test_sample=1).eval()
    fill_seeded(theirs, 2)
    ours = ours_from(theirs, "tres", **({"backbone": network} if variant == "tiny" else {}))
    x = images(2, 3, 224, 224)
    assert_same(theirs.double()(x), ours(x))


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_maniqa_matches_pyiqa(offline, variant):
    if variant == "tiny":  # 14x14 tokens of width 192; window 7 keeps the shifted windows
        offline["vit_base_patch8_224"] = "vit_tiny_patch16_224"
        shape = dict(embed_dim=192, patch_size=16, window_size=7)
        config = dict(backbone="vit_tiny_patch16_224", window_size=7)
    else:
        shape, config = {}, {}
    theirs = maniqa_arch.MANIQA(pretrained=False, scale=0.8, test_sample=1, **shape).eval()
    fill_seeded(theirs, 3)
    ours = ours_from(theirs, "maniqa", **config)
    x = images(2, 3, 224, 224)
    assert_same(theirs.double()(x), ours(x))


def align_musiq_with_official(model: torch.nn.Module, monkeypatch) -> None:
    """pyiqa's MUSIQ departs from the official Flax model twice: exact instead of tanh GELU
    (Flax's default) and an unbiased instead of a population weight std in ``StdConv``
    (``jnp.std``). Both are set to the official choice, as ours has them."""
    for block in model.transformer_encoder.transformer.values():
        block.mlp.act = torch.nn.GELU(approximate="tanh")

    def population_std_conv(self, x):
        x = musiq_arch.exact_padding_2d(x, self.kernel_size, self.stride, mode="same")
        weight = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        weight = weight / (weight.std((1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
        return torch.nn.functional.conv2d(x, weight, self.bias, self.stride)

    monkeypatch.setattr(musiq_arch.StdConv, "forward", population_std_conv)


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_musiq_matches_pyiqa(offline, monkeypatch, variant):
    from baselines.musiq import resize_longer

    def same_resize(image, h, w, longer_side_length):
        resized = resize_longer(image, longer_side_length)
        return resized, resized.shape[-2], resized.shape[-1]

    monkeypatch.setattr(multiscale_trans_util, "resize_preserve_aspect_ratio", same_resize)
    shape = ({"hidden_size": 64, "mlp_dim": 128, "num_heads": 2, "num_layers": 2}
             if variant == "tiny" else {})
    theirs = musiq_arch.MUSIQ(pretrained=False, max_seq_len_from_original_res=-1, **shape).eval()
    align_musiq_with_official(theirs, monkeypatch)
    fill_seeded(theirs, 4)
    config = ({"hidden_size": 64, "mlp_dim": 128, "num_heads": 2, "depth": 2}
              if variant == "tiny" else {})
    ours = ours_from(theirs, "musiq", **config)
    # 200x280: the 224 scale is 160x224 (5x7 patches, padded to 49 by pyiqa), the 384 scale
    # 274x384; pyiqa's padded tokens are masked, ours are absent: the scores must still agree
    x = images(2, 3, 200, 280)
    assert_same(theirs.double()(x), ours(x))

"""MUSIQ and MANIQA: official parameter counts, shapes, multi-resolution batches, overfitting.

The reference parameter counts are summed here, term by term, from the shapes in the
official code (google-research musiq/model/*.py with run_predict_image.py's config;
IIGROUP/MANIQA models/maniqa.py and models/swin.py with train_maniqa.py's config).
Only one forward pass runs the full ViT-B/8 at 224; everything else uses tiny variants.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.models import (ConfigError, TrainContext, config_from_dict, config_to_dict,
                              get_model_class)
from baselines.maniqa import MANIQA, MANIQAConfig, TransposedAttention
from baselines.musiq import (MUSIQ, MUSIQConfig, gaussian_resize, hashed_positions, patchify,
                             resize_longer)

FIXTURES = Path(__file__).parent / "fixtures"
CTX = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=1.0, device=torch.device("cpu"))
TINY_MUSIQ = dict(pretrained="false", hidden_size=64, depth=2, num_heads=2, mlp_dim=128, stem_width=32,
                  longer_sides=(32, 64), dropout=0.0)
# test_vit: 6 blocks, width 64, patch 16 → an 8×8 grid at 128, so shifted windows are exercised
TINY_MANIQA = dict(backbone="test_vit", pretrained="false", img_size=128, block_indices=(2, 3, 4, 5), dim_mlp=64,
                   drop=0.0, drop_path=0.0)


def musiq_official_params() -> int:
    """MUSIQ as released: hidden 384, 14 layers, MLP 1152, G=10, 3 scales, ResNet root of 64."""
    d, mlp, width = 384, 1152, 64
    root = 7 * 7 * 3 * width + 2 * width  # conv_root, gn_root
    unit = (width * 4 * width + 2 * 4 * width  # conv_proj, gn_proj
            + width * width + 2 * width  # conv1, gn1
            + 9 * width * width + 2 * width  # conv2, gn2
            + width * 4 * width + 2 * 4 * width)  # conv3, gn3
    embedding = 4 * width * 8 * 8 * d + d
    layer = 2 * d + 4 * (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
    return root + unit + embedding + 10 * 10 * d + 3 * d + d + 14 * layer + 2 * d + (d + 1)


def maniqa_official_params() -> tuple[int, int]:
    """(total, never affecting the score) for MANIQA as train_maniqa.py builds it."""
    d, n = 768, 28 * 28
    vit_block = (2 * d + (d * 3 * d + 3 * d) + (d * d + d)  # norm1, qkv, proj
                 + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d))  # norm2, fc1, fc2
    vit_norm, vit_head = 2 * d, d * 1000 + 1000
    vit = (3 * 8 * 8 * d + d) + d + (n + 1) * d + 12 * vit_block + vit_norm + vit_head
    tab = 3 * (n * n + n)

    def conv3(dim: int) -> int:
        return 9 * dim * dim + dim

    def sstb(dim: int) -> int:  # two layers of (2 Swin blocks + conv), plus the unused downsample
        block = (2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + 7 * 7 * 4
                 + 2 * dim + (dim * 768 + 768) + (768 * dim + dim))
        return conv3(dim) + 2 * (2 * block + conv3(dim))

    heads = 2 * ((d // 2) * (d // 2) + d // 2 + d // 2 + 1)
    total = vit + 4 * tab + (4 * d * d + d) + sstb(d) + (d * d // 2 + d // 2) + sstb(d // 2) + heads
    unused = conv3(d) + conv3(d // 2) + 2 * vit_block + vit_norm + vit_head
    return total, unused


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def overfit_ratio(model, size: int, steps: int, lr: float) -> float:
    """First over last loss of a hand-written AdamW loop on one fixed batch."""
    generator = torch.Generator().manual_seed(1)
    batch = {"image": torch.rand(4, 3, size, size, generator=generator),
             "label": torch.tensor([0.1, 0.4, 0.6, 0.9])}
    ctx = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=1.0,
                       device=torch.device("cpu"))
    groups = model.param_groups()
    for group in groups:
        group["lr"] = lr
    optimizer = torch.optim.AdamW(groups)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model.loss(batch, ctx)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0] / losses[-1]


# -- MUSIQ

def test_registered_by_name():
    assert get_model_class("musiq") is MUSIQ
    assert get_model_class("maniqa") is MANIQA


@pytest.mark.parametrize("cls", [MUSIQConfig, MANIQAConfig])
def test_config_round_trips(cls):
    config = cls()
    assert config_from_dict(cls, config_to_dict(config)) == config


def test_hashed_positions_follow_nearest_neighbour_resize():
    rows = hashed_positions(12, 1, 10).tolist()
    assert rows == [v * 10 for v in [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]]
    assert hashed_positions(2, 5, 10).tolist() == [0, 2, 4, 6, 8, 50, 52, 54, 56, 58]


def test_patchify_pads_like_tf_same():
    image = torch.rand(1, 3, 33, 34) + 1.0  # strictly positive, so padding shows as zeros
    patches, rows, cols = patchify(image, 32)
    assert (rows, cols) == (2, 2) and patches.shape == (1, 4, 3, 32, 32)
    # 31 padding rows: 15 above, 16 below; 30 padding columns: 15 each side
    assert torch.equal(patches[0, 0, :, 15, 15:], image[0, :, 0, :17])
    assert patches[0, 0, :, :15].abs().sum() == 0 and patches[0, 3, :, 16:].abs().sum() == 0
    assert torch.isclose(patches.sum(), image.sum())


def test_musiq_resize_matches_tensorflow_gaussian_without_antialias():
    """Numbers from TensorFlow 2.21 (tests/fixtures/musiq_tf_gaussian_resize.json): the official
    preprocessing's output sizes, and tf.image.resize(..., GAUSSIAN) down, up and at scale 1
    (where TF's fixed-width kernel still blurs)."""
    fixture = json.loads((FIXTURES / "musiq_tf_gaussian_resize.json").read_text())
    for case in fixture["sizes"]:
        image = torch.zeros(1, 3, *case["in_hw"])
        assert list(resize_longer(image, case["longer"]).shape[-2:]) == case["out_hw"], case
    for case in fixture["resize"]:
        image = np.random.default_rng(case["seed"]).random((*case["in_hw"], 3), dtype=np.float32)
        image = torch.from_numpy(image).permute(2, 0, 1)[None].double()
        expected = torch.tensor(case["expected_hwc"], dtype=torch.float64).permute(2, 0, 1)
        got = gaussian_resize(image, case["out_hw"])[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_musiq_token_count_and_training_cap(one_torch_thread):
    model = MUSIQ(MUSIQConfig(**{**TINY_MUSIQ, "longer_sides": (224, 384),
                                 "train_max_native_patches": 5}))
    image = [torch.rand(3, 100, 70)]
    # native 4×3 patches; 224 → 224×157: 7×5; 384 → 384×269: 12×9; plus [CLS]
    assert model.eval().forward_features(image).shape == (1, 1 + 12 + 35 + 108, 64)
    assert model.train().forward_features(image).shape == (1, 1 + 5 + 35 + 108, 64)


def test_musiq_mixed_resolutions_in_one_call(one_torch_thread):
    torch.manual_seed(0)
    model = MUSIQ(MUSIQConfig(**TINY_MUSIQ)).eval()
    torch.nn.init.normal_(model.head.weight)  # the official zero head would hide any difference
    images = [torch.rand(3, 100, 70), torch.rand(3, 64, 130)]
    with torch.no_grad():
        together = model(images)
        alone = torch.cat([model(images[:1]), model(images[1:])])
        features = model.features(images)
    assert together.shape == (2,) and features.shape == (2, 64)
    # padding is masked: an image's score does not depend on its batch-mate
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert abs(float(together[0] - together[1])) > 1e-3


def test_musiq_paper_model_params_and_shapes():
    model = MUSIQ(MUSIQConfig(pretrained="false")).eval()
    reference = musiq_official_params()
    assert reference == 27_125_825  # the paper: "around 27 million"
    assert n_params(model) == reference
    with torch.no_grad():
        assert model(torch.rand(1, 3, 384, 384)).shape == (1,)
        assert model.features(torch.rand(3, 3, 384, 384)).shape == (3, 384)


def test_musiq_rejects_weights_it_cannot_have():
    with pytest.raises(ConfigError, match="backbone must be 'musiq'"):
        MUSIQ(MUSIQConfig(**TINY_MUSIQ, backbone="vit_small_patch16_224"))
    with pytest.raises(ConfigError, match="no 'true' weights"):
        MUSIQ(MUSIQConfig(**{**TINY_MUSIQ, "pretrained": "true"}))


def official_arrays(depth: int, dim: int, heads: int, mlp: int, width: int, grid: int,
                    scales: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under the official npz's keys, in Flax's layouts (kernels (in, out) and
    HWIO; attention (D, heads, head dim) and (heads, head dim, D))."""
    rng = np.random.default_rng(seed)
    shapes = {"conv_root/kernel": (7, 7, 3, width), "gn_root/scale": (width,),
              "gn_root/bias": (width,), "embedding/kernel": (4 * width * 8 * 8, dim),
              "embedding/bias": (dim,), "head/kernel": (dim, 1000), "head/bias": (1000,),
              "Transformer/posembed_input/pos_embedding": (1, grid * grid, dim),
              "Transformer/scaleembed_input/scale_embedding": (1, scales, dim),
              "Transformer/cls": (1, 1, dim), "Transformer/encoder_norm/scale": (dim,),
              "Transformer/encoder_norm/bias": (dim,)}
    for name, shape in (("conv_proj", (1, 1, width, 4 * width)), ("conv1", (1, 1, width, width)),
                        ("conv2", (3, 3, width, width)), ("conv3", (1, 1, width, 4 * width))):
        shapes[f"block1/unit1/{name}/kernel"] = shape
        norm = name.replace("conv", "gn")
        shapes[f"block1/unit1/{norm}/scale"] = shapes[f"block1/unit1/{norm}/bias"] = (shape[-1],)
    for i in range(depth):
        block = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            shapes[f"{block}/{norm}/scale"] = shapes[f"{block}/{norm}/bias"] = (dim,)
        for part in ("query", "key", "value"):
            shapes[f"{block}/MultiHeadDotProductAttention_1/{part}/kernel"] = (dim, heads, dim // heads)
            shapes[f"{block}/MultiHeadDotProductAttention_1/{part}/bias"] = (heads, dim // heads)
        shapes[f"{block}/MultiHeadDotProductAttention_1/out/kernel"] = (heads, dim // heads, dim)
        shapes[f"{block}/MultiHeadDotProductAttention_1/out/bias"] = (dim,)
        for dense, (n_in, n_out) in (("Dense_0", (dim, mlp)), ("Dense_1", (mlp, dim))):
            shapes[f"{block}/MlpBlock_3/{dense}/kernel"] = (n_in, n_out)
            shapes[f"{block}/MlpBlock_3/{dense}/bias"] = (n_out,)
    return {f"opt/target/{key}": rng.standard_normal(shape).astype(np.float32)
            for key, shape in shapes.items()}


def test_musiq_loads_the_official_npz_key_by_key(tmp_path):
    arrays = official_arrays(depth=2, dim=64, heads=2, mlp=128, width=32, grid=10, scales=3)
    arrays["opt/state/step"] = np.zeros(1)  # optimiser state beside the parameters is ignored
    np.savez(tmp_path / "official.npz", **arrays)
    model = MUSIQ(MUSIQConfig(**{**TINY_MUSIQ, "pretrained": str(tmp_path / "official.npz")}))
    w = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    a = {k[len("opt/target/"):]: v for k, v in arrays.items() if k.startswith("opt/target/")}
    attention = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1"
    assert w["stem.conv_root.weight"][5, 2, 6, 1] == a["conv_root/kernel"][6, 1, 2, 5]
    assert w["stem.unit.conv2.weight"][3, 4, 0, 2] == a["block1/unit1/conv2/kernel"][0, 2, 4, 3]
    assert w["stem.embedding.weight"][7, 100] == a["embedding/kernel"][100, 7]
    # head 1, dim 5 of query / key / value: rows 32 + 5 of each 64-row block of qkv
    for offset, part in ((0, "query"), (64, "key"), (128, "value")):
        assert w["blocks.1.attn.qkv.weight"][offset + 37, 9] == a[f"{attention}/{part}/kernel"][9, 1, 5]
        assert w["blocks.1.attn.qkv.bias"][offset + 37] == a[f"{attention}/{part}/bias"][1, 5]
    assert w["blocks.1.attn.proj.weight"][11, 37] == a[f"{attention}/out/kernel"][1, 5, 11]
    fc1 = a["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    assert w["blocks.0.mlp.fc1.weight"][120, 3] == fc1[3, 120]
    assert w["blocks.0.norm2.weight"][4] == a["Transformer/encoderblock_0/LayerNorm_2/scale"][4]
    assert (w["pos_embed"][42] == a["Transformer/posembed_input/pos_embedding"][0, 42]).all()
    assert (w["scale_embed"] == a["Transformer/scaleembed_input/scale_embedding"][0]).all()
    assert not w["head.weight"].any()  # the ImageNet classifier is not taken


def test_musiq_defaults_to_the_official_imagenet_checkpoint(tmp_path, monkeypatch):
    from baselines.musiq_weights import IMAGENET

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    assert MUSIQConfig().pretrained == "imagenet"
    config = {**TINY_MUSIQ, "pretrained": "imagenet"}
    with pytest.raises(ConfigError, match="not downloaded automatically") as error:
        MUSIQ(MUSIQConfig(**config))
    destination = tmp_path / "weights" / "imagenet_pretrain.npz"
    assert IMAGENET.url in str(error.value) and str(destination) in str(error.value)
    del_key = "opt/target/Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"
    arrays = official_arrays(depth=2, dim=64, heads=2, mlp=128, width=32, grid=10, scales=3)
    destination.parent.mkdir()
    np.savez(destination, **{k: v for k, v in arrays.items() if k != del_key})
    with pytest.raises(ConfigError, match="lack the official key .*Dense_1/bias"):
        MUSIQ(MUSIQConfig(**config))


def test_musiq_overfits_a_fixed_batch(one_torch_thread):
    torch.manual_seed(0)
    model = MUSIQ(MUSIQConfig(**TINY_MUSIQ, loss="mse"))
    assert overfit_ratio(model, 64, steps=40, lr=1e-3) > 10


# -- MANIQA

def test_maniqa_paper_model_params_and_forward():
    total, unused = maniqa_official_params()
    assert total == 135_747_530  # what train_maniqa.py logs
    random_vit = MANIQAConfig(pretrained="false")
    assert n_params(MANIQA(replace(random_vit, official_layers=False))) == total - unused \
        == 114_164_578
    model = MANIQA(random_vit).eval()
    assert n_params(model) == total  # the default builds the official, never-used layers too
    with torch.no_grad():  # the one full-size ViT-B/8 forward of this file
        score = model(torch.rand(1, 3, 224, 224))
    assert score.shape == (1,) and bool(torch.isfinite(score).all()) and float(score) >= 0


def test_maniqa_small_shapes(one_torch_thread):
    model = MANIQA(MANIQAConfig(**TINY_MANIQA)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 128, 128)).shape == (1,)
        assert model(torch.rand(3, 3, 128, 128)).shape == (3,)
        assert model.forward_features(torch.rand(3, 3, 128, 128)).shape == (3, 64, 32)
        assert model.features(torch.rand(3, 3, 128, 128)).shape == (3, model.num_features)


@pytest.mark.parametrize("flip, axis, prob", [("vertical", 2, 0.7), ("horizontal", 3, 0.7),
                                              ("none", None, 0.0)])
def test_maniqa_flips_as_the_released_training(flip, axis, prob, one_torch_thread):
    """np.fliplr on C×H×W arrays reverses the rows: by default 70 % of images flip vertically."""
    assert (MANIQAConfig().flip, MANIQAConfig().flip_prob, MANIQAConfig().hflip) == \
        ("vertical", 0.7, False)
    model = MANIQA(MANIQAConfig(**TINY_MANIQA, flip=flip))
    seen = []
    model.forward = lambda x: seen.append(x) or x.mean(dim=(1, 2, 3))
    images = torch.rand(2000, 3, 4, 4)
    torch.manual_seed(0)
    model.loss({"image": images, "label": torch.zeros(2000)}, CTX)
    (got,) = seen
    kept = (got == images).flatten(1).all(1)
    if axis is None:
        assert bool(kept.all())
        return
    flipped = (got == images.flip(axis)).flatten(1).all(1)
    assert bool((kept | flipped).all())
    assert abs(float(flipped.float().mean()) - prob) < 0.03


def test_maniqa_refuses_a_second_flip():
    with pytest.raises(ConfigError, match="draws its own flips"):
        MANIQAConfig(hflip=True)
    assert MANIQAConfig(hflip=True, flip="none").hflip
    with pytest.raises(ConfigError, match="'flip' expects one of vertical, horizontal, none"):
        MANIQAConfig(flip="diagonal")


def test_transposed_attention_keeps_the_official_reshape():
    torch.manual_seed(0)
    tab = TransposedAttention(6, drop=0.0)
    x = torch.randn(2, 4, 6)
    q, k, v = tab.c_q(x), tab.c_k(x), tab.c_v(x)
    mixed = torch.softmax(q @ k.transpose(1, 2) / 6 ** 0.5, -1) @ v  # (B, C, N)
    expected = x + mixed.transpose(1, 2).reshape(2, 4, 6)  # a reinterpretation, not a transpose
    torch.testing.assert_close(tab(x), expected)
    assert not torch.allclose(tab(x), x + mixed)


def test_maniqa_rejects_taps_beyond_the_backbone():
    with pytest.raises(ConfigError, match="exceed the 6 blocks"):
        MANIQA(MANIQAConfig(**{**TINY_MANIQA, "block_indices": (6, 7, 8, 9)}))


def test_maniqa_overfits_a_fixed_batch(one_torch_thread):
    torch.manual_seed(0)
    model = MANIQA(MANIQAConfig(**TINY_MANIQA))
    assert overfit_ratio(model, 128, steps=40, lr=1e-3) > 10

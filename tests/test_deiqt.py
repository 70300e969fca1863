"""DEIQT: official outputs, size, decoder structure and init, optimiser groups, CNN adaptation,
overfitting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines.deiqt import DEIQT, DEIQTConfig
from benchmark.models import ConfigError, TrainContext
from seeded_weights import fill_seeded

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="vit_tiny_patch16_224", pretrained="false", img_size=64,
            backbone_kwargs={"depth": 2, "embed_dim": 48, "num_heads": 3}, decoder_dim=48)



def tiny(**changes) -> DEIQT:
    torch.manual_seed(0)
    return DEIQT(DEIQTConfig(**{**TINY, **changes}))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_vit_s_has_the_published_size():
    model = DEIQT(DEIQTConfig(pretrained="false"))
    assert model.config.backbone == "deit3_small_patch16_224"
    assert count(model) == 24_043_776  # method.md §2.6; within 1 % is the brief's bound
    assert count(model.backbone) == 21_674_496
    assert count(model.decoder.layer) == 2_366_592
    assert model.decoder.panel.numel() == 2_304 and model.decoder.score.weight.numel() == 384
    assert model.projection is None


def test_reproduces_the_official_models_outputs():
    """Numbers from running the official code (tests/fixtures/deiqt_official_outputs.json): the
    same seeded weights give the same scores, CLS vectors and patch tokens, in float64."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "deiqt_official_outputs.json")
                         .read_text())
    model = DEIQT(DEIQTConfig(pretrained="false")).eval()
    assert count(model) == fixture["official_parameters"]
    fill_seeded(model, fixture["weight_seed"])
    model.double()
    generator = torch.Generator().manual_seed(fixture["input_seed"])
    images = torch.rand(fixture["input_shape"], generator=generator, dtype=torch.float64)
    images[1] = images[1] ** 4
    with torch.no_grad():
        cls, patches = model.forward_tokens(images)
        score = model.decode(cls, patches)
    for got, name in ((score, "score"), (cls.sum(1), "cls_sum"), (patches.mean((1, 2)), "patch_mean")):
        expected = torch.tensor(fixture[name], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=name)
    assert float(score[1] - score[0]) > 0.5  # distinct inputs, distinct scores


def test_recipe_defaults_and_dataset_overrides():
    config = DEIQTConfig()
    assert (config.lr, config.weight_decay, config.epochs, config.warmup_epochs) == (2e-4, 0.05, 9, 3.0)
    assert (config.warmup_lr, config.step_epochs, config.gamma, config.clip_grad) == (2e-7, 3.0, 0.1, 5.0)
    assert (config.train_crops, config.test_crops, config.loss, config.label_scale) == \
        (10, 10, "smoothl1", "raw")
    overrides = DEIQTConfig.dataset_overrides
    assert set(overrides) == {"live", "csiq", "tid2013", "kadid", "livec", "koniq", "spaq", "flive"}
    assert {k: v["batch_size"] for k, v in overrides.items()} == {
        "live": 48, "csiq": 48, "tid2013": 48, "kadid": 512, "livec": 64, "koniq": 512,
        "spaq": 512, "flive": 1024}
    assert overrides["koniq"]["resize_hw"] == overrides["spaq"]["resize_hw"] == (512, 384)


def test_backbone_kwargs_accept_json_and_reject_garbage():
    assert DEIQTConfig(backbone_kwargs='{"depth": 2}').backbone_kwargs == {"depth": 2}
    with pytest.raises(ConfigError, match="backbone_kwargs"):
        DEIQTConfig(backbone_kwargs="[1, 2]")
    with pytest.raises(ConfigError, match="divisible"):
        DEIQTConfig(decoder_dim=50)


def test_decoder_is_one_prenorm_layer_without_final_norm():
    model = tiny()
    decoder, layer = model.decoder, model.decoder.layer
    assert layer.norm_first and layer.norm1.eps == 1e-5 and layer.linear1.out_features == 4 * 48
    assert layer.self_attn.num_heads == 6 and decoder.panel.shape == (1, 6, 48)
    cls, patches = torch.randn(3, 48), torch.randn(3, 16, 48)
    queries = decoder.panel + cls[:, None]
    h = queries + layer.self_attn(*[layer.norm1(queries)] * 3, need_weights=False)[0]
    normed = layer.norm2(h)
    h = h + layer.multihead_attn(normed, patches, patches, need_weights=False)[0]
    h = h + layer.linear2(F.gelu(layer.linear1(layer.norm3(h))))
    expected = (h @ decoder.score.weight.T).mean(dim=(1, 2))
    assert decoder.score.bias is None
    torch.testing.assert_close(model.decode(cls, patches), expected, rtol=1e-5, atol=1e-5)


def test_decoder_init_follows_the_official_pass():
    torch.manual_seed(0)
    decoder = DEIQT(DEIQTConfig(pretrained="false")).decoder
    layer = decoder.layer
    for weight in (decoder.panel, decoder.score.weight, layer.linear1.weight,
                   layer.self_attn.out_proj.weight, layer.multihead_attn.out_proj.weight):
        assert abs(weight.std().item() - 0.02) < 0.002
    for bias in (layer.linear1.bias, layer.linear2.bias, layer.self_attn.out_proj.bias,
                 layer.self_attn.in_proj_bias, layer.norm1.bias):
        assert bias.abs().max().item() == 0.0
    bound = math.sqrt(6.0 / (384 + 3 * 384))  # Xavier-uniform on the packed (3D × D) in-proj
    in_proj = layer.self_attn.in_proj_weight
    assert in_proj.abs().max().item() <= bound and in_proj.abs().max().item() > 0.9 * bound
    assert torch.equal(layer.norm3.weight, torch.ones(384))


def test_param_groups_decay_the_panel_but_not_embeddings_or_vectors():
    model = tiny()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.param_groups()
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "decoder.panel" in decayed and "decoder.layer.self_attn.in_proj_weight" in decayed
    assert {"backbone.pos_embed", "backbone.cls_token", "decoder.layer.norm1.weight",
            "decoder.layer.self_attn.in_proj_bias"} <= plain
    assert all(g["lr"] == 2e-4 and g["weight_decay"] in (0.0, 0.05) for g in groups)
    assert len(decayed) + len(plain) == len(names)


def test_interfaces_agree():
    model = tiny().eval()
    images = torch.rand(2, 3, 64, 64)
    tokens = model.forward_features(images)
    cls, patches = model.forward_tokens(images)
    assert tokens.shape == (2, 17, 48) and cls.shape == (2, 48) and patches.shape == (2, 16, 48)
    scores = model(images)
    assert scores.shape == (2,)
    assert torch.equal(model.forward_head(tokens), scores)
    assert torch.equal(model.features(images), cls)
    assert model.forward_head(tokens, pre_logits=True).shape == (2, 48)


def test_cnn_backbone_becomes_projected_normalised_tokens():
    model = DEIQT(DEIQTConfig(backbone="tf_efficientnet_lite0", pretrained="false", img_size=64))
    cls, patches = model.forward_tokens(torch.rand(2, 3, 64, 64))
    assert cls.shape == (2, 384) and patches.shape == (2, 4, 384)  # 64/32 = 2×2 positions
    assert model.projection.cls_proj.in_features == 1280
    assert patches.mean(dim=-1).abs().max().item() < 1e-4  # the final LayerNorm, bias 0 at init
    assert tuple(model.input_mean.flatten().tolist()) == (0.5, 0.5, 0.5)  # the backbone's own


def test_tiny_deiqt_overfits_a_fixed_batch():
    model = tiny(lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(8, 3, 64, 64, generator=generator),
             "label": torch.linspace(1, 5, 8), "index": torch.arange(8)}
    ctx = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=4.0,
                       device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.param_groups())
    losses = []
    for _ in range(40):
        loss = model.loss(batch, ctx)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.0 and losses[-1] < losses[0] / 50

"""HyperIQA, DBCNN (with S-CNN) and TReS: registry, parameter counts against the official
implementations, forward shapes, the recipes' lr rules, the TReS loss terms, overfitting a
fixed batch, and S-CNN pre-training feeding DBCNN.

Reference parameter counts, read off the official code's layer shapes (see each module's
docstring for the layer-by-layer sums):
- HyperIQA, SSL92/hyperIQA ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)``: 27,375,369.
- DBCNN, zwx8981/DBCNN-PyTorch ``DBCNN``: VGG-16 convs 14,714,688 + S-CNN features 531,120
  + FC 65,537 = 15,311,345.
- TReS, isalirezag/TReS ``Net`` (ResNet-50): 152,452,265, of which 2,049,000 are the ResNet
  classifier it builds and never uses; ours omits it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.dbcnn import DBCNN, DBCNNConfig
from baselines.hyperiqa import HyperIQA, HyperIQAConfig
from baselines.scnn import CLASSES, ORIGINAL_SCNN, SCNN, load_scnn_features, pretrain_scnn
from baselines.tres import L2Pool, TReS, TReSConfig, relative_ranking_loss, sine_positions
from benchmark.models import (ConfigError, TrainContext, config_from_dict, config_to_dict,
                              get_model_class)
from benchmark.engine import RunConfig
from benchmark.train_step import Trainer, stage_groups
from benchmark.weights import weights_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {"hyperiqa": (HyperIQA, HyperIQAConfig), "dbcnn": (DBCNN, DBCNNConfig),
          "tres": (TReS, TReSConfig)}

REFERENCE_PARAMS = {"hyperiqa": 27_375_369, "dbcnn": 15_311_345, "tres": 152_452_265}
OUR_PARAMS = {"hyperiqa": 27_375_369, "dbcnn": 15_311_345, "tres": 152_452_265 - 2_049_000}
CTX = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=1.0, device=torch.device("cpu"))


def _meta(name: str, **overrides):
    """The paper-default model with shapes only: counts and shape checks without the compute."""
    cls, config_cls = MODELS[name]
    if name == "dbcnn":  # shapes only: no need for the released S-CNN file
        overrides.setdefault("scnn_weights", "none")
    with torch.device("meta"):
        return cls(config_cls(pretrained="false", **overrides))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_and_config_round_trips(name):
    cls, config_cls = MODELS[name]
    assert get_model_class(name) is cls
    config = config_cls()
    assert config_from_dict(config_cls, config_to_dict(config)) == config
    fields = set(config_to_dict(config))
    for dataset, overrides in config_cls.dataset_overrides.items():
        assert set(overrides) <= fields, (dataset, overrides)
        config_from_dict(config_cls, overrides)  # the override values themselves are valid


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_match_official_code(name):
    count = _count(_meta(name))
    assert count == OUR_PARAMS[name]
    assert abs(count - REFERENCE_PARAMS[name]) / REFERENCE_PARAMS[name] < 0.02


def test_parameter_counts_by_part():
    hyper = _meta("hyperiqa")
    assert _count(hyper.backbone) == 23_508_032 and _count(hyper.lda) == 475_360
    assert _count(hyper.hyper) == 3_391_977
    dbcnn = _meta("dbcnn")
    assert (_count(dbcnn.content), _count(dbcnn.synthetic)) == (14_714_688, 531_120)
    assert _count(SCNN(num_classes=39)) == 640_983  # the released scnn.pkl's tensors
    tres = _meta("tres")
    assert _count(tres.encoder) == 119_024_768 and _count(tres.backbone) == 23_508_032


@pytest.mark.parametrize("name,side,width", [("hyperiqa", 224, 224), ("tres", 224, 4096)])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes_at_paper_size(name, side, width, batch):
    model = _meta(name).eval()
    images = torch.rand(batch, 3, side, side, device="meta")
    assert model(images).shape == (batch,)
    assert model.features(images).shape == (batch, width) and model.num_features == width


@pytest.fixture(scope="module")
def resnet50_hyperiqa():
    torch.manual_seed(0)
    return HyperIQA(HyperIQAConfig(pretrained="false")).eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_hyperiqa_resnet50_forward(resnet50_hyperiqa, batch):
    with torch.no_grad():
        scores = resnet50_hyperiqa(torch.rand(batch, 3, 224, 224))
    assert scores.shape == (batch,) and torch.isfinite(scores).all()


def test_hyperiqa_takes_224_only():
    with pytest.raises(ConfigError, match="224"):
        HyperIQAConfig(img_size=256)
    with pytest.raises(ValueError, match="224"):
        _meta("hyperiqa")(torch.rand(1, 3, 192, 192, device="meta"))


def test_hyperiqa_lr_rule_replays_the_code():
    model = _meta("hyperiqa")
    parts = {g["part"]: g["lr"] for g in model.param_groups()}
    assert parts == {"backbone": pytest.approx(2e-5), "hyper": pytest.approx(2e-4)}
    assert sum(len(g["params"]) for g in model.param_groups()) == len(list(model.parameters()))
    stages = HyperIQA.recipe(model.config).stages
    assert [(stage.epochs, stage.optimizer) for stage in stages] == [(1, "adam")] * 16
    hyper = [stage.lr["hyper"] for stage in stages]
    assert hyper == pytest.approx([2e-4] * 7 + [2e-5] * 3 + [2e-6] * 3 + [2e-7] * 3)
    assert all(set(stage.lr) == {"hyper"} for stage in stages)  # the backbone keeps 2e-5


def _optimizer_per_epoch(model, epochs: int) -> list[tuple[int, dict[str, float]]]:
    """(optimiser id, lr per part) of every epoch, through the engine's own stage switch."""
    trainer = Trainer.build(model, model.config, RunConfig(progress=False),
                            torch.device("cpu"), steps=2)
    optimizers, seen = [], []
    for epoch in range(epochs):
        trainer.enter_stage(epoch)
        optimizers.append(trainer.optimizer)  # kept alive, so their ids stay distinct
        seen.append((id(trainer.optimizer),
                     {g["part"]: g["lr"] for g in trainer.optimizer.param_groups}))
    return seen


def test_hyperiqa_gets_a_fresh_adam_every_epoch_at_that_epochs_rates():
    """As the code rebuilds its solver per epoch."""
    torch.manual_seed(0)
    model = HyperIQA(HyperIQAConfig(backbone="test_resnet", pretrained="false", epochs=12))
    seen = _optimizer_per_epoch(model, 12)
    assert len({optimizer for optimizer, _ in seen}) == 12
    assert [lrs["hyper"] for _, lrs in seen] == pytest.approx([2e-4] * 7 + [2e-5] * 3
                                                              + [2e-6] * 2)
    assert [lrs["backbone"] for _, lrs in seen] == pytest.approx([2e-5] * 12)


@pytest.mark.parametrize("epochs, lengths", [(3, [1, 1, 1]), (5, [1, 1, 1, 2]), (1, [1])])
def test_tres_drops_the_lr_on_a_fresh_adam_three_times_at_most(epochs, lengths):
    """The code builds a new Adam at lr / 10 after epochs 1, 2 and 3 only (FLIVE: 5 epochs)."""
    torch.manual_seed(0)
    model = TReS(TReSConfig(backbone="test_resnet", pretrained="false", epochs=epochs))
    stages = TReS.recipe(model.config).stages
    assert [stage.epochs for stage in stages] == lengths
    seen = _optimizer_per_epoch(model, epochs)
    assert len({optimizer for optimizer, _ in seen}) == len(lengths)
    assert [lrs["all"] for _, lrs in seen] == pytest.approx([2e-5, 2e-6, 2e-7, 2e-8, 2e-8][:epochs])


@pytest.fixture(scope="module")
def vgg16_dbcnn():
    torch.manual_seed(0)
    return DBCNN(DBCNNConfig(pretrained="false", scnn_weights="none")).eval()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(64, 64), (72, 88)])  # 72x88: the S-CNN map is resized
def test_dbcnn_vgg16_forward(vgg16_dbcnn, batch, size):
    with torch.no_grad():
        images = torch.rand(batch, 3, *size)
        scores, features = vgg16_dbcnn(images), vgg16_dbcnn.features(images)
    assert scores.shape == (batch,) and torch.isfinite(scores).all()
    assert features.shape == (batch, 512 * 128)
    assert torch.linalg.vector_norm(features, dim=1) == pytest.approx(torch.ones(batch), abs=1e-5)


def test_dbcnn_config_checks():
    with pytest.raises(ConfigError, match="stage"):
        DBCNNConfig(stage="fc")
    with pytest.raises(ConfigError, match="head_epochs"):
        DBCNNConfig(head_epochs=100, epochs=100)
    with pytest.raises(ConfigError, match="VGG"):
        DBCNN(DBCNNConfig(backbone="test_resnet", pretrained="false", scnn_weights="none"))


def test_dbcnn_stage_groups():
    head = _meta("dbcnn", stage="head")
    # the original's solvers decay every parameter: weight and bias share one group
    assert [(g["part"], g["weight_decay"]) for g in head.param_groups()] == [("head", 5e-4)]
    assert not any(p.requires_grad for p in head.content.parameters())
    everything = _meta("dbcnn", stage="all")
    assert sum(len(g["params"]) for g in everything.param_groups()) == 2 + 26 + 36
    assert {g["lr"] for g in everything.param_groups()} == {1e-5}
    both = _meta("dbcnn")
    assert {g["part"]: g["lr"] for g in both.param_groups()} == {"head": 1e-3, "streams": 1e-5}
    head_stage, all_stage = both.recipe(both.config).stages
    groups, frozen = stage_groups(both, head_stage, [])
    assert [(g["part"], g["lr"]) for g in groups] == [("head", 1e-3)]
    assert len(frozen) == 26 + 36 and not any(p.requires_grad for p in frozen)
    groups, thawed = stage_groups(both, all_stage, frozen)
    assert {g["part"]: g["lr"] for g in groups} == {"head": 1e-5, "streams": 1e-5}
    assert thawed == [] and all(p.requires_grad for p in both.parameters())


def _overfit(model, images, labels, steps):
    """A hand-written AdamW loop over model.loss/param_groups; the first and last totals."""
    batch = {"image": images, "label": labels}
    optimizer = torch.optim.AdamW(model.param_groups())
    model.train()
    losses = []
    for _ in range(steps):
        terms = model.loss(batch, CTX)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        losses.append({k: float(v.detach()) for k, v in terms.items()})
    return losses[0], losses[-1]


LABELS = torch.tensor([0.1, 0.4, 0.6, 0.9])


def test_hyperiqa_overfits_a_batch():
    torch.manual_seed(0)
    model = HyperIQA(HyperIQAConfig(backbone="test_resnet", pretrained="false", lr=1e-3))
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    first, last = _overfit(model, images, LABELS, 30)
    assert last["loss"] < 0.2 * first["loss"]


def test_tres_overfits_a_batch():
    torch.manual_seed(0)
    # dropout and random vertical flips off: the test is the objective, not the regulariser
    config = TReSConfig(backbone="test_resnet", pretrained="false", lr=1e-3, dropout=0.0,
                        feature_dropout=0.0, vflip=False)
    model = TReS(config)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    first, last = _overfit(model, images, LABELS, 40)
    assert set(first) == {"loss", "quality", "consistency", "rank", "rank_consistency"}
    assert last["loss"] < 0.25 * first["loss"] and last["quality"] < 0.2 * first["quality"]
    model.eval()
    with torch.no_grad():
        for batch in (1, 3):
            assert model(images[:batch]).shape == (batch,)
            assert model.features(images[:batch]).shape == (batch, 2 * 96)


def test_dbcnn_two_stages_on_a_batch():
    torch.manual_seed(0)
    model = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false", scnn_weights="none",
                              head_epochs=1, epochs=2))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    streams = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    head_stage, all_stage = model.recipe(model.config).stages
    _, frozen_streams = stage_groups(model, head_stage, [])
    first, last = _overfit(model, images, LABELS, 30)
    assert last["loss"] < 0.05 * first["loss"]
    # BatchNorm statistics move in stage 1 (train mode), as in the original; weights do not
    frozen = [k for k in streams if not k.endswith(("running_mean", "running_var", "tracked"))]
    assert all(torch.equal(streams[k], model.state_dict()[k]) for k in frozen)
    stage_groups(model, all_stage, frozen_streams)
    assert all(p.requires_grad for p in model.parameters())
    _overfit(model, images, LABELS, 1)
    assert not torch.equal(streams["content.0.weight"], model.state_dict()["content.0.weight"])


def test_tres_relative_ranking_loss_by_hand():
    labels = torch.tensor([3.0, 1.0, 4.0, 2.0])
    prediction = torch.tensor([2.5, 1.0, 2.0, 1.5])
    # low=1 (pred 1.0), low2=3 (1.5), high=2 (2.0), high2=0 (2.5)
    # low triplet: |1.0-1.5| - |1.0-2.0| + (4-2) = 1.5; high: |2.0-2.5| - |2.0-1.0| + (3-1) = 1.5
    assert float(relative_ranking_loss(prediction, labels)) == pytest.approx(3.0)
    assert float(relative_ranking_loss(labels, labels)) == pytest.approx(0.0)  # perfect: 0
    assert float(relative_ranking_loss(prediction[:1], labels[:1])) == 0.0


def test_tres_building_blocks():
    positions = sine_positions(4, 2, 3, torch.device("cpu"))
    third = 2 * math.pi / 3
    assert positions.shape == (6, 4)
    assert positions[0].tolist() == pytest.approx([0.0, -1.0, math.sin(third), math.cos(third)],
                                                  abs=1e-5)
    pooled = L2Pool()(torch.full((1, 2, 5, 5), -3.0))
    assert pooled[0, :, 2, 2].tolist() == pytest.approx([3.0, 3.0])  # Hann weights sum to 1


def _small_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(3)]


def test_scnn_pretraining_feeds_dbcnn(tmp_path):
    path = tmp_path / "scnn.pt"
    facts = pretrain_scnn(path, _small_images(), steps=3, batch_size=8, crop=32, seed=0)
    assert facts["classes"] == len(CLASSES) == 21 and facts["steps"] == 3
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["classifier.weight"].shape == (21, 256)
    model = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false", scnn_weights=str(path)))
    loaded = model.synthetic.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in load_scnn_features(path).items())
    assert torch.equal(loaded["0.weight"], state["features.0.weight"])


def test_scnn_weights_errors_name_the_file(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="wrong.pt"):
        load_scnn_features(wrong)
    with pytest.raises(ConfigError, match="missing.pt"):
        load_scnn_features(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="smaller"):
        pretrain_scnn(tmp_path / "x.pt", _small_images(), steps=1, batch_size=2, crop=64)


def test_dbcnn_defaults_to_the_released_scnn(tmp_path, monkeypatch):
    """Offline with an empty cache, the default names the pinned file and where it goes."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert DBCNNConfig().scnn_weights == "original"
    with pytest.raises(ConfigError) as error:
        DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false"))
    message = str(error.value)
    assert ORIGINAL_SCNN.url in message and ORIGINAL_SCNN.sha256 in message
    assert str(tmp_path / "weights" / "scnn-7ea73d75.pkl") in message


def test_released_scnn_loads_every_feature_tensor():
    path = weights_cache() / ORIGINAL_SCNN.cached_name
    if not path.is_file():
        pytest.skip(f"the released S-CNN is not cached; download {ORIGINAL_SCNN.url} to {path}")
    features = load_scnn_features(path)  # weights_only: the legacy pickle holds tensors only
    assert len(features) == 54 and features["0.weight"].shape == (48, 3, 3, 3)
    model = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false"))
    loaded = model.synthetic.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in features.items())

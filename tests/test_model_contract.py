"""What the harness relies on, checked on every registered model and dataset: a model is
tested here the moment its entry point is registered, with the ``tiny_config`` it declares.

Models: the config round-trips through plain data; ``forward`` gives finite (B,) scores and
``features`` finite (B, D); the loss is finite and its gradient reaches the parameters that
``param_groups`` hands the optimiser; a fresh instance given the state dict (tensors only, as
checkpoints load with ``weights_only=True``) and the train state scores the same. Models
trained by their own ``fit`` are fitted, scored and round-tripped instead.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from benchmark.models import (FitModel, TrainContext, config_from_dict, config_to_dict, eval_crop,
                              get_model_class, list_models)
from benchmark.registry import dataset_registry, model_registry
from benchmark.report.tables import model_label, tex_escape

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH = 2


def tiny(name: str, seed: int = 0):
    cls = get_model_class(name)
    assert cls.tiny_config is not None, f"{name}: declare a tiny_config on the model class"
    config = cls.resolve_config(cls.tiny_config)
    assert cls.prerequisites(config) == [], f"{name}: its tiny_config needs another model's run"
    torch.manual_seed(seed)
    return cls(config)


def images(side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(BATCH, 3, side, side, generator=torch.Generator().manual_seed(seed))


def reloaded(model, seed: int = 1):
    """A fresh instance (other random weights) given ``model``'s saved state."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = tiny(model.name, seed)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.load_train_state(model.train_state())
    return fresh


@pytest.mark.parametrize("name", list_models())
def test_config_round_trips_through_plain_data(name):
    config = tiny(name).config
    assert config_from_dict(type(config), config_to_dict(config)) == config


@pytest.mark.parametrize("name", list_models())
def test_the_label_reports_show_is_the_one_the_class_declares(name):
    """Reports read it from the source, never importing the model: it must be a literal in
    the class's own body."""
    cls = get_model_class(name)
    assert cls.label and model_registry().declared(name, "label") == cls.label
    assert model_label(name) == tex_escape(cls.label)


@pytest.mark.parametrize("name", [n for n in list_models()
                                  if not issubclass(get_model_class(n), FitModel)])
def test_gradient_model_scores_trains_a_step_and_reloads(name):
    model = tiny(name)
    config = model.config
    side = config.img_size or 64
    batch = {"image": images(side), "label": torch.tensor([1.0, 3.0]),
             "unit": torch.tensor([0.25, 0.75]), "index": torch.arange(BATCH)}
    batch.update({key: images(side, seed=2) for key in model.extra_crops()})
    ctx = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=2.0,
                       device=torch.device("cpu"))

    model.train()
    terms = model.loss(batch, ctx)
    assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grouped = [p for group in model.param_groups() for p in group["params"]]
    assert len({id(p) for p in grouped}) == len(grouped), "a parameter is in two groups"
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters() if p.requires_grad}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in grouped)
    assert all(torch.isfinite(p.grad).all() for p in grouped if p.grad is not None)

    model.eval()
    test_images = images(eval_crop(config) or side, seed=3)
    with torch.no_grad():
        scores, features = model(test_images), model.features(test_images)
        again = reloaded(model).eval()(test_images)
    assert scores.shape == (BATCH,) and torch.isfinite(scores).all()
    assert features.ndim == 2 and features.shape[0] == BATCH and torch.isfinite(features).all()
    torch.testing.assert_close(again, scores)


@pytest.mark.parametrize("name", [n for n in list_models()
                                  if issubclass(get_model_class(n), FitModel)])
def test_fitted_model_fits_scores_and_reloads(name):
    model = tiny(name)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(12)]
    labels = np.linspace(0.0, 1.0, len(pictures))
    facts = model.fit(pictures[:8], labels[:8], pictures[8:], labels[8:])
    assert isinstance(facts, dict)
    scores = model.predict(pictures[8:])
    assert scores.shape == (4,) and np.isfinite(scores).all()
    np.testing.assert_allclose(reloaded(model).predict(pictures[8:]), scores)


@pytest.mark.parametrize("name", dataset_registry().names())
def test_dataset_declares_what_prepare_and_reports_read(name):
    cls = dataset_registry().get(name)
    assert cls.name == name and cls.title and cls.label
    assert cls.kind in ("synthetic", "authentic")
    low, high = cls.score_range
    assert low < high and isinstance(cls.higher_is_better, bool)
    assert cls.score_type in ("MOS", "DMOS")
    assert all(dataset_registry().canonical(alias) == name for alias in cls.aliases)

"""Model configs are conformed to their annotations: a value that fits no annotation fails in
one line naming the key and what it takes, and the named choices are the ``Literal``
annotations, spelled once. The ``--set`` and params.yaml paths are tested with the CLI
(test_engine.py) and the suites (test_suite.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from baselines.dbcnn import DBCNNConfig
from baselines.deiqt import DEIQTConfig
from benchmark.model_config import ConfigError, ModelConfig, config_from_dict, field_choices
from qfm.config import QFMConfig


@pytest.mark.parametrize("cls, values, message", [
    (ModelConfig, {"test_img_size": "abc"},
     "config key 'test_img_size' expects an integer or null, got 'abc'"),
    (ModelConfig, {"optimizer": "adagrad"},
     "config key 'optimizer' expects one of adamw, adam, sgd, got 'adagrad'"),
    (DBCNNConfig, {"head_optimizer": "rmsprop"},
     "config key 'head_optimizer' expects one of adamw, adam, sgd, got 'rmsprop'"),
    (QFMConfig, {"gate": "mlp"},
     "config key 'gate' expects one of se_mlp, static, none, got 'mlp'"),
    (ModelConfig, {"epochs": 2.5}, "config key 'epochs' expects an integer, got 2.5"),
    (ModelConfig, {"hflip": "maybe"}, "config key 'hflip' expects true or false, got 'maybe'"),
    (ModelConfig, {"resize_hw": [384]},
     "config key 'resize_hw' expects a list of 2 integers or null, got [384]"),
    (DEIQTConfig, {"backbone_kwargs": "[1, 2]"},
     "config key 'backbone_kwargs' expects a mapping (or its JSON text), got '[1, 2]'"),
])
def test_a_value_that_fits_no_annotation_names_the_key_and_what_it_takes(cls, values, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(cls, values)
    assert str(error.value) == message


def test_plain_data_is_conformed_to_the_annotations():
    config = config_from_dict(DEIQTConfig, {"test_img_size": "384", "resize_hw": [512, 384],
                                            "hflip": "no", "epochs": 3.0, "lr": "1e-4",
                                            "backbone_kwargs": '{"depth": 2}'})
    assert (config.test_img_size, config.resize_hw, config.hflip) == (384, (512, 384), False)
    assert (config.epochs, config.lr, config.backbone_kwargs) == (3, 1e-4, {"depth": 2})
    assert type(config.epochs) is int and type(config.lr) is float
    # built directly, as code and checkpoints do, the same rules apply
    assert ModelConfig(mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="'test_img_size' expects an integer or null"):
        ModelConfig(test_img_size="abc")


def test_choices_are_read_from_the_literal_annotations():
    assert field_choices(ModelConfig) == {
        "optimizer": ("adamw", "adam", "sgd"),
        "schedule": ("step", "cosine", "cosine_periodic", "constant"),
        "label_scale": ("raw", "unit"), "loss": ("smoothl1", "l1", "mse")}
    assert field_choices(DBCNNConfig)["stage"] == ("head", "all", "both")
    assert field_choices(QFMConfig)["gate"] == ("se_mlp", "static", "none")


def test_a_subclass_cannot_loosen_an_annotated_choice():
    @dataclass(frozen=True)
    class Loose(ModelConfig):
        optimizer: str = "adam"

    with pytest.raises(TypeError, match="Loose.optimizer is annotated <class 'str'>, but "
                                        "ModelConfig declares"):
        Loose()

    @dataclass(frozen=True)
    class Kept(ModelConfig):
        optimizer: Literal["adamw", "adam", "sgd"] = "adam"
        flavour: Literal["a", "b"] = "a"

    assert Kept().optimizer == "adam"
    with pytest.raises(ConfigError, match="'flavour' expects one of a, b, got 'c'"):
        Kept(flavour="c")

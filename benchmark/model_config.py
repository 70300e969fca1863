"""Model configs: the frozen-dataclass recipe every model's ``Config`` extends, and its checks.

A config is built from plain data (``--set``, params.yaml, a checkpoint) by
:func:`config_from_dict`, which rejects unknown keys; building it checks every value
(named choices, ranges), so a bad recipe fails before any data is read. No torch here: the
CLI and the suite checker import this without loading a model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["ConfigError", "ModelConfig", "OPTIMIZERS", "SCHEDULES", "check_choices",
           "check_trainable", "config_from_dict", "config_to_dict", "eval_crop"]

#: what ``ModelConfig.optimizer`` and ``schedule`` may name; the engine builds them
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("step", "cosine", "cosine_periodic", "constant")
#: every config key restricted to named values, checked when a config is built
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "label_scale": ("raw", "unit"),
            "loss": ("smoothl1", "l1", "mse")}


class ConfigError(ValueError):
    """An unknown config key or a value of the wrong type; names the key."""


def check_choices(config: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is not one of its choices."""
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ConfigError(f"config key {key!r} expects one of {', '.join(allowed)}, "
                              f"got {getattr(config, key)!r}")


def _check_ranges(config: Any) -> None:
    """Values no recipe can have: each fails when the config is built, naming its key."""
    rules = [("batch_size", config.batch_size >= 1, "at least 1"),
             ("train_crops", config.train_crops >= 1, "at least 1"),
             ("test_crops", config.test_crops >= 1, "at least 1"),
             ("img_size", config.img_size >= 0, "0 (whole images) or a crop side"),
             ("test_img_size", config.test_img_size is None or config.test_img_size >= 0,
              "0 (whole images) or a crop side"),
             ("epochs", config.epochs >= 0, "not negative"),
             ("lr", config.lr >= 0 and math.isfinite(config.lr), "a finite lr >= 0"),
             ("backbone_lr_scale", config.backbone_lr_scale >= 0, "not negative"),
             ("weight_decay", config.weight_decay >= 0, "not negative"),
             ("momentum", 0 <= config.momentum < 1, "in [0, 1)"),
             ("warmup_epochs", config.warmup_epochs >= 0, "not negative"),
             ("warmup_lr", config.warmup_lr >= 0, "not negative"),
             ("step_epochs", config.step_epochs > 0, "positive"),
             ("gamma", config.gamma > 0, "positive"),
             ("cycle_steps", config.cycle_steps >= 1, "at least 1"),
             ("clip_grad", config.clip_grad >= 0, "0 (off) or a positive norm"),
             ("resize_hw", config.resize_hw is None or (
                 len(config.resize_hw) == 2 and all(int(v) >= 1 for v in config.resize_hw)),
              "[height, width], both positive")]
    for key, ok, expected in rules:
        if not ok:  # a NaN fails every comparison, so it lands here too
            raise ConfigError(f"config key {key!r} must be {expected}, got {getattr(config, key)!r}")


def check_trainable(config: Any) -> None:
    """What training by gradient descent needs on top of :func:`_check_ranges` (a fitted
    model such as BRISQUE has no lr and no epochs)."""
    if not config.lr > 0:
        raise ConfigError(f"config key 'lr' must be positive, got {config.lr!r}")
    if config.epochs < 1:
        raise ConfigError(f"config key 'epochs' must be at least 1, got {config.epochs!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Recipe fields every model shares. Subclasses override the defaults with their paper's."""

    backbone: str = "vit_small_patch16_224"
    pretrained: str = "false"  # "true" | "false" | "offline-lite0" | path to a weights file
    img_size: int = 224  # crop side; 0 = whole images (all of one size, e.g. via resize_hw)
    test_img_size: int | None = None  # test crop side; None = img_size; 0 = whole images
    resize_hw: tuple[int, int] | None = None  # resize (height, width) before cropping; None = native
    epochs: int = 9
    batch_size: int = 48
    lr: float = 2e-4
    backbone_lr_scale: float = 1.0  # the backbone's lr is lr × this
    weight_decay: float = 0.05
    decay_all: bool = False  # true: decay biases and norms too, as originals passing parameters()
    optimizer: str = "adamw"  # adamw | adam | sgd (weight decay: decoupled | L2 | L2)
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 3.0
    schedule: str = "step"  # step | cosine | cosine_periodic | constant
    step_epochs: float = 3.0  # step schedule: decay by `gamma` every this many epochs
    gamma: float = 0.1
    cycle_steps: int = 50  # cosine_periodic: steps from full lr to 0 (torch's T_max, per batch)
    warmup_lr: float = 2e-7
    clip_grad: float = 5.0  # global norm; 0 disables
    train_crops: int = 10  # random crops per image per epoch (dataset repetition)
    test_crops: int = 10  # seeded crops averaged per test image
    hflip: bool = True
    label_scale: str = "raw"  # "raw" (original label) or "unit" ([0, 1], higher = better)
    loss: str = "smoothl1"  # smoothl1 | l1 | mse
    mean: tuple[float, float, float] | None = None  # None: the backbone's pretrained_cfg
    std: tuple[float, float, float] | None = None

    #: per-dataset recipe overrides from the paper (e.g. DEIQT's batch size per dataset)
    dataset_overrides: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:  # subclasses that add checks call this first
        check_choices(self, _CHOICES)
        _check_ranges(self)


def _coerce(field_type: Any, value: Any, key: str) -> Any:
    text = str(field_type)
    if value is None:
        return None
    if "tuple" in text and isinstance(value, (list, tuple)):
        return tuple(value)
    if text in ("bool", "<class 'bool'>"):
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
        return bool(value)
    for name, cast in (("int", int), ("float", float), ("str", str)):
        if text in (name, f"<class '{name}'>"):
            try:
                return cast(value)
            except (TypeError, ValueError):
                raise ConfigError(f"config key {key!r} expects {name}, got {value!r}") from None
    return value


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build a config, rejecting unknown keys; a None value means "keep the default"."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {cls.__qualname__} "
            f"(known: {', '.join(sorted(known))})"
        )
    kwargs = {k: _coerce(known[k].type, v, k) for k, v in values.items() if v is not None}
    return cls(**kwargs)


def eval_crop(config: ModelConfig) -> int:
    """The crop side used at evaluation (0: whole images)."""
    return config.img_size if config.test_img_size is None else config.test_img_size


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

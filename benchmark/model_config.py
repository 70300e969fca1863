"""Model configs: the frozen dataclasses every model's ``Config`` extends, and their checks.

A config is built from plain data (``--set``, params.yaml, a checkpoint) by
:func:`config_from_dict`, which rejects unknown keys. Building it conforms every value to its
field's annotation (``int``, ``tuple[int, int] | None``, a ``Literal`` of named choices…):
``"3"`` becomes 3, a list becomes a tuple, and a value that fits no annotation fails with
one line naming the key and what it takes. Range checks follow, so a bad recipe fails before
any data is read. No torch here: the CLI and the suite checker import this without loading a
model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from benchmark.errors import UserError

__all__ = ["ConfigError", "InputConfig", "ModelConfig", "Optimizer", "Schedule", "Loss",
           "LabelScale", "field_choices", "check_trainable", "config_from_dict", "config_to_dict",
           "eval_crop"]

#: weight decay under each: decoupled | L2 | L2 (the engine builds them)
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["step", "cosine", "cosine_periodic", "constant"]
Loss = Literal["smoothl1", "l1", "mse"]
#: "raw": the dataset's original label; "unit": [0, 1], higher = better
LabelScale = Literal["raw", "unit"]


class ConfigError(UserError, ValueError):
    """An unknown config key or a value of the wrong type; names the key."""


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    """Each field's resolved annotation. A subclass that re-declares a field (to change its
    default) must keep the base's annotation, or a ``str`` would silently drop the base's
    ``Literal`` check."""
    hints = get_type_hints(cls)
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            for name, hint in _field_hints(base).items():
                if hints[name] != hint:
                    raise TypeError(f"{cls.__qualname__}.{name} is annotated {hints[name]}, but "
                                    f"{base.__qualname__} declares {hint}; keep the base's type")
    return {f.name: hints[f.name] for f in fields(cls)}


def _options(hint: Any) -> tuple | None:
    """The values a ``Literal`` (or a union of them, plus None) allows; None if not one."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        parts = [_options(arg) for arg in get_args(hint) if arg is not type(None)]
        if parts and all(part is not None for part in parts):
            return tuple(value for part in parts for value in part)
    return None


def field_choices(cls: type) -> dict[str, tuple]:
    """Config key → the named values it allows, for every key annotated with a ``Literal``."""
    found = {name: _options(hint) for name, hint in _field_hints(cls).items()}
    return {name: options for name, options in found.items() if options is not None}


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          type(None): "null"}
_PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _describe(hint: Any) -> str:
    """What a key annotated ``hint`` takes, as the error message says it."""
    origin, args = get_origin(hint), get_args(hint)
    options = _options(hint)
    if options is not None:
        return f"one of {', '.join(map(str, options))}" + (
            " or null" if type(None) in args else "")
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:  # config tuples hold one type: (height, width), a mean per channel
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_PLURALS.get(args[0], str(args[0]))}"
    if origin is dict or hint is dict:
        return "a mapping (or its JSON text)"
    return _NAMES.get(hint, str(hint))


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _conform(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` types it; raises ValueError where it cannot be."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _conform(arg, value)
            except ValueError:
                continue
        raise ValueError
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise ValueError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ValueError
        return tuple(_conform(item, v) for item, v in zip(items, value))
    if origin is dict or hint is dict:
        parsed = (json.loads(value) if value else {}) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise ValueError
        return parsed
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value) if isinstance(value, (int, float)) else int(str(value).strip())
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ValueError
        return str(value)
    raise TypeError(f"config annotations cannot be {hint}")  # a programming error, not input


def _conform_fields(config: Any) -> None:
    """Conform every field of a (frozen) config to its annotation, in place."""
    for name, hint in _field_hints(type(config)).items():
        value = getattr(config, name)
        try:
            conformed = _conform(hint, value)
        except ValueError:  # json's decode error is one too
            raise ConfigError(f"config key {name!r} expects {_describe(hint)}, "
                              f"got {value!r}") from None
        object.__setattr__(config, name, conformed)


#: (key, test, what it must be): values no recipe can have; a config checks the keys it has
_RANGES: tuple[tuple[str, Any, str], ...] = (
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("train_crops", lambda v: v >= 1, "at least 1"),
    ("test_crops", lambda v: v >= 1, "at least 1"),
    ("img_size", lambda v: v >= 0, "0 (whole images) or a crop side"),
    ("test_img_size", lambda v: v is None or v >= 0, "0 (whole images) or a crop side"),
    ("resize_hw", lambda v: v is None or all(side >= 1 for side in v),
     "[height, width], both positive"),
    ("epochs", lambda v: v >= 0, "not negative"),
    ("lr", lambda v: v >= 0 and math.isfinite(v), "a finite lr >= 0"),
    ("backbone_lr_scale", lambda v: v >= 0, "not negative"),
    ("weight_decay", lambda v: v >= 0, "not negative"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("warmup_epochs", lambda v: v >= 0, "not negative"),
    ("warmup_lr", lambda v: v >= 0, "not negative"),
    ("step_epochs", lambda v: v > 0, "positive"),
    ("gamma", lambda v: v > 0, "positive"),
    ("cycle_steps", lambda v: v >= 1, "at least 1"),
    ("clip_grad", lambda v: v >= 0, "0 (off) or a positive norm"),
)


def _check_ranges(config: Any) -> None:
    """Values no recipe can have: each fails when the config is built, naming its key."""
    present = {f.name for f in fields(config)}
    for key, test, expected in _RANGES:
        if key in present and not test(getattr(config, key)):
            # a NaN fails every comparison, so it lands here too
            raise ConfigError(f"config key {key!r} must be {expected}, got {getattr(config, key)!r}")


def check_trainable(config: Any) -> None:
    """What training by gradient descent needs on top of :func:`_check_ranges` (a fitted
    model such as BRISQUE has no lr and no epochs)."""
    if not config.lr > 0:
        raise ConfigError(f"config key 'lr' must be positive, got {config.lr!r}")
    if config.epochs < 1:
        raise ConfigError(f"config key 'epochs' must be at least 1, got {config.epochs!r}")


@dataclass(frozen=True)
class InputConfig:
    """What every model is configured by: its backbone and the images it sees (crops, sizes,
    flips, label scale). A model fitted in closed form (BRISQUE: ``FitModel``) has only
    these. Subclasses override the defaults with their paper's."""

    backbone: str = "vit_small_patch16_224"
    pretrained: str = "false"  # "true" | "false" | "offline-lite0" | path to a weights file
    img_size: int = 224  # crop side; 0 = whole images (all of one size, e.g. via resize_hw)
    test_img_size: int | None = None  # test crop side; None = img_size; 0 = whole images
    resize_hw: tuple[int, int] | None = None  # resize (height, width) before cropping; None = native
    batch_size: int = 48
    train_crops: int = 10  # random crops per image per epoch (dataset repetition)
    test_crops: int = 10  # seeded crops averaged per test image
    hflip: bool = True
    label_scale: LabelScale = "raw"
    mean: tuple[float, float, float] | None = None  # None: the backbone's pretrained_cfg
    std: tuple[float, float, float] | None = None

    #: per-dataset recipe overrides from the paper (e.g. DEIQT's batch size per dataset)
    dataset_overrides: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:  # subclasses that add checks call this first
        _conform_fields(self)
        _check_ranges(self)


@dataclass(frozen=True)
class ModelConfig(InputConfig):
    """A model trained by gradient descent: the input fields, then its optimisation recipe
    (epochs, optimiser, learning rates, schedule, loss), which the model's
    :meth:`~benchmark.models.IQAModel.recipe` turns into training stages. One flat namespace
    with the input fields, so ``--set lr=…``, params.yaml and the config hash name each
    setting by one key."""

    epochs: int = 9
    lr: float = 2e-4
    backbone_lr_scale: float = 1.0  # the backbone's lr is lr × this
    weight_decay: float = 0.05
    decay_all: bool = False  # true: decay biases and norms too, as originals passing parameters()
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 3.0
    schedule: Schedule = "step"
    step_epochs: float = 3.0  # step schedule: decay by `gamma` every this many epochs
    gamma: float = 0.1
    cycle_steps: int = 50  # cosine_periodic: steps from full lr to 0 (torch's T_max, per batch)
    warmup_lr: float = 2e-7
    clip_grad: float = 5.0  # global norm; 0 disables
    loss: Loss = "smoothl1"


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build a config, rejecting unknown keys; a None value means "keep the default"."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {cls.__qualname__} "
            f"(known: {', '.join(sorted(known))})"
        )
    return cls(**{k: v for k, v in values.items() if v is not None})


def eval_crop(config: InputConfig) -> int:
    """The crop side used at evaluation (0: whole images)."""
    return config.img_size if config.test_img_size is None else config.test_img_size


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

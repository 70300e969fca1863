"""QFM-IQM's teacher: a frozen DEIQT checkpoint or an EMA of the student (method.md §3.3).

The teacher is never a submodule of the student: it gets no gradient, no optimiser group and
no place in the saved state dict, and it always stays in eval mode.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from baselines.deiqt import DEIQT, DEIQTConfig
from benchmark.models import ConfigError, config_from_dict

__all__ = ["MissingTeacherError", "freeze", "load_deiqt_teacher", "deiqt_config", "ema_update"]


class MissingTeacherError(ConfigError):
    """QFM needs the DEIQT run of the same dataset and split; the runner adds the command."""

    def __init__(self, detail: str):
        super().__init__(f"QFM with teacher=deiqt_frozen needs the last-epoch checkpoint of the "
                         f"DEIQT run on the same dataset and split: {detail}")


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def deiqt_config(config: DEIQTConfig, **changes) -> DEIQTConfig:
    """The DEIQT part of a (QFM) config, e.g. to build an EMA teacher of the student."""
    values = {f.name: getattr(config, f.name) for f in fields(DEIQTConfig)}
    return DEIQTConfig(**{**values, **changes})


def load_deiqt_teacher(path: Path) -> DEIQT:
    """A frozen DEIQT from a run checkpoint {"model": "deiqt", "config": {...}, "state_dict"}."""
    path = Path(path)
    if not path.is_file():
        raise MissingTeacherError(detail=f"{path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not {"model", "config", "state_dict"} <= set(checkpoint):
        raise ConfigError(f"teacher checkpoint {path} lacks the keys model, config, state_dict")
    if checkpoint["model"] != DEIQT.name:
        raise ConfigError(f"teacher checkpoint {path} holds model {checkpoint['model']!r}, "
                          f"not {DEIQT.name!r}")
    # the weights come from the checkpoint, so the backbone is built without fetching any
    config = config_from_dict(DEIQTConfig, {**checkpoint["config"], "pretrained": "false"})
    teacher = DEIQT(config)
    teacher.load_state_dict(checkpoint["state_dict"])
    return freeze(teacher)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m·θ_t + (1 − m)·θ_s for every teacher parameter, matched by name."""
    own = dict(student.named_parameters())
    for name, parameter in teacher.named_parameters():
        parameter.lerp_(own[name].detach().to(parameter.dtype), 1.0 - momentum)

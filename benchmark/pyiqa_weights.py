"""pyiqa's released checkpoints loaded into our models: ``pyiqa:MODEL:FILE``.

pyiqa (0.1.16) saves a trained network as ``{"params": state_dict}`` (BasicSR's
``save_network``) or, for some released files, the bare state dict, keys sometimes prefixed
``module.`` by DataParallel. :func:`load_pyiqa_model` reads such a file with
``torch.load(..., weights_only=True)`` (tensors only: nothing is unpickled), renames its keys
with the model's explicit key map (the class attribute ``pyiqa_key_map``, a pure function
from pyiqa's state dict to ours that fails on any key it does not know) and loads the result
strictly (every key of ours filled, none left over) into our model, built from its paper
config plus the caller's overrides with backbone weights off (the file holds the network).

``bench score --checkpoint pyiqa:dbcnn:DBCNN_KonIQ.pth`` and
``load_metric("pyiqa:dbcnn:DBCNN_KonIQ.pth")`` then score with our evaluation protocol. Such
a model has no run record, so its scores are on pyiqa's output scale, which the file does not
state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.engine import CheckpointError, load_checkpoint
from benchmark.models import IQAModel, config_from_dict, get_model_class, list_models

__all__ = ["PREFIX", "parse_source", "read_pyiqa_state", "load_pyiqa_model"]

PREFIX = "pyiqa:"


def parse_source(text: str | Path) -> tuple[str, Path] | None:
    """(model, file) for ``pyiqa:MODEL:FILE``; None for anything else (a run or a file)."""
    text = str(text)
    if not text.startswith(PREFIX):
        return None
    model, sep, file = text[len(PREFIX):].partition(":")
    if not sep or not model or not file:
        raise CheckpointError(f"{text!r}: a pyiqa checkpoint is given as pyiqa:MODEL:FILE, e.g. "
                              "pyiqa:dbcnn:DBCNN_KonIQ.pth")
    return model, Path(file)


def read_pyiqa_state(path: Path) -> dict[str, torch.Tensor]:
    """The network state of a pyiqa checkpoint file, ``module.`` prefixes removed."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no pyiqa checkpoint at {path}")
    try:
        state = load_checkpoint(path)
    except Exception as error:  # torch's refusals of non-tensor content come in many types
        raise CheckpointError(f"{path}: not a checkpoint that loads with weights_only=True "
                              f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a pyiqa checkpoint (a state dict of tensors, or "
                              "one under 'params')")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_pyiqa_model(model: str, path: Path, overrides: dict[str, Any] | None = None) -> IQAModel:
    """Our ``model`` with the weights of pyiqa's checkpoint ``path``, in eval mode."""
    cls = get_model_class(model)
    key_map = cls.pyiqa_key_map
    if key_map is None:
        mapped = [n for n in list_models() if get_model_class(n).pyiqa_key_map is not None]
        raise CheckpointError(f"{cls.name} has no pyiqa key map; pyiqa checkpoints load into: "
                              f"{', '.join(mapped) or 'no model yet'}")
    state = read_pyiqa_state(path)
    instance = cls(config_from_dict(cls.Config, {"pretrained": "false", **(overrides or {})}))
    unfit = f"{path} does not fit our {cls.name} with this config"
    try:
        result = instance.load_state_dict(key_map(state), strict=False)
    except RuntimeError as error:  # a shape of another variant of the architecture
        mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch"
                         in line), str(error).splitlines()[0])
        raise CheckpointError(f"{unfit} ({mismatch}): set its architecture options to "
                              "pyiqa's") from None
    problems = [f"{len(keys)} {kind} key(s), first {keys[0]}" for kind, keys in
                (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys]
    if problems:  # what strict=True refuses, said in a line
        raise CheckpointError(f"{unfit} ({'; '.join(problems)}): set its architecture options "
                              "to pyiqa's")
    return instance.eval()

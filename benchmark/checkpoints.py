"""Checkpoint files: written atomically, read without unpickling anything but tensors.

A checkpoint is a dict with ``model`` (registered name), ``config``, ``epoch`` and
``state_dict``; one written during training also holds :data:`RESUME_KEYS`, which a
finished run drops once its record is in place. Every file a user hands in is untrusted:
``torch.load(..., weights_only=True)``, and any failure is one line naming the file.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import UserError
from benchmark.files import atomic_write_bytes

__all__ = ["CheckpointError", "RESUME_KEYS", "WEIGHT_KEYS", "save_checkpoint",
           "load_torch_file", "load_checkpoint", "load_weights", "strip_training_state"]

#: what every bench checkpoint holds
WEIGHT_KEYS = ("model", "config", "epoch", "state_dict")
#: what a checkpoint written during training holds beyond the weights, to resume from
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "history", "preds", "train_s", "eval_s")


class CheckpointError(UserError, ValueError):
    """A checkpoint that is not a bench checkpoint, or belongs to another model or config."""


def save_checkpoint(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch_file(path: Path, what: str) -> Any:
    """The file's content (tensors and plain data only); an unreadable file is a
    CheckpointError saying it is not ``what``."""
    try:
        with warnings.catch_warnings():  # its note on pickle protocols would be a second line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no file at {path}") from None
    except EOFError:
        reason = "empty or truncated file"
    except pickle.UnpicklingError:
        reason = "a pickle holding more than tensors and plain data; not unpickled"
    except (KeyError, RuntimeError, ValueError, OSError, UnicodeDecodeError):
        reason = "not a torch file, or a damaged one"
    raise CheckpointError(f"{path} is not {what} ({reason})")


def load_checkpoint(path: Path) -> Any:
    return load_torch_file(path, "a bench checkpoint")


def load_weights(path: Path) -> dict:
    """A bench checkpoint's content, checked to hold :data:`WEIGHT_KEYS`."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a bench checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict)")
    missing = [key for key in WEIGHT_KEYS if key not in state]
    if missing:
        hint = " (a bare state dict?)" if all(torch.is_tensor(v) for v in state.values()) else ""
        raise CheckpointError(f"{path} is not a bench checkpoint (no {missing[0]!r} entry"
                              f"{hint})")
    if not isinstance(state["model"], str) or not isinstance(state["config"], dict) \
            or not isinstance(state["state_dict"], dict):
        raise CheckpointError(f"{path} is not a bench checkpoint (its model, config or "
                              f"state_dict entry has the wrong type)")
    return state


def strip_training_state(path: Path) -> bool:
    """Keep only the weights of a finished run's checkpoint; False when nothing was dropped."""
    state = load_checkpoint(path)
    if not any(key in state for key in RESUME_KEYS):
        return False
    save_checkpoint(path, {key: state[key] for key in WEIGHT_KEYS})
    return True

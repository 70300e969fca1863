"""A trained model read back from a run folder or a checkpoint file (``bench score``,
``bench cross``, the feature-distance analysis and the metric API read runs through here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.checkpoints import CheckpointError, load_weights
from benchmark.models import ConfigError, IQAModel, config_from_dict, get_model_class
from benchmark.records import load_record
from benchmark.registry import UnknownNameError

__all__ = ["RULE_CHECKPOINTS", "Trained", "load_trained"]


#: selection rule → the weights file a run keeps for it (test_oracle keeps none)
RULE_CHECKPOINTS = {"val": "best_val.pt", "last": "checkpoint.pt"}


@dataclass(frozen=True)
class Trained:
    """A trained model with the record beside it and the rule and epoch its weights are."""

    model: IQAModel
    record: dict
    rule: str | None  # None: a checkpoint file of another name, chosen by the user
    epoch: int | None
    path: Path
    source: str = "bench"  # or "pyiqa": a pyiqa checkpoint through the model's key map


def load_trained(path: Path, rule: str | None = None) -> Trained:
    """A trained model from a run directory or a checkpoint file, in eval mode.

    A directory gives the weights of ``rule`` (default ``val``, the epoch the record reports);
    a file named ``best_val.pt`` or ``checkpoint.pt`` is the weights of its rule, and asking
    for another rule with it is refused."""
    path = Path(path)
    named = {file: name for name, file in RULE_CHECKPOINTS.items()}
    if path.is_dir():
        rule = rule or "val"
        if rule not in RULE_CHECKPOINTS:
            raise CheckpointError(f"a run keeps weights for the rules "
                                  f"{', '.join(RULE_CHECKPOINTS)}, not {rule!r}")
        checkpoint_path = path / RULE_CHECKPOINTS[rule]
    else:
        checkpoint_path = path
        if rule and named.get(path.name, rule) != rule:
            raise CheckpointError(f"{path} holds the weights of rule {named[path.name]}, not "
                                  f"{rule}: pass the run directory to choose the rule")
        rule = rule or named.get(path.name)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint_path}")
    state = load_weights(checkpoint_path)
    try:
        cls = get_model_class(state["model"])
        config = config_from_dict(cls.Config, state["config"])
    except (UnknownNameError, ConfigError) as error:
        raise CheckpointError(f"{checkpoint_path} is not a bench checkpoint of this harness's "
                              f"models ({error})") from None
    model = cls(config)
    own, given = model.state_dict(), state["state_dict"]
    wrong = sorted({*own} ^ {*given})
    if not wrong:
        try:  # torch checks the shapes, unless the model takes a fitted buffer's (BRISQUE's SVR)
            model.load_state_dict(given)
        except (RuntimeError, TypeError, AttributeError):
            wrong = sorted(k for k in own if not hasattr(given[k], "shape")
                           or given[k].shape != own[k].shape) or ["(load_state_dict)"]
    if wrong:
        raise CheckpointError(f"{checkpoint_path} is not a bench checkpoint of {cls.name} (its "
                              f"weights do not fit: {len(wrong)} tensors missing, unexpected "
                              f"or of another shape, first {wrong[0]})")
    record_path = checkpoint_path.parent / "record.json"
    record = load_record(record_path) if record_path.is_file() else {}
    # the record numbers epochs from 1 whatever its age; a bare checkpoint says its own
    epoch = record.get("metrics", {}).get(rule, {}).get("epoch", state.get("epoch"))
    return Trained(model.eval(), record, rule, epoch, checkpoint_path)

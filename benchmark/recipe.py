"""A training recipe as data: the stages a run goes through, each with its own optimiser.

Most originals train in one stage: one optimiser over the model's parameter groups for all
epochs. Some build a new optimiser part-way (DBCNN: SGD on the FC with the streams frozen,
then a fresh Adam on everything). A model states this as a :class:`Recipe` of
:class:`Stage` values (:meth:`benchmark.models.IQAModel.recipe`); the engine interprets it:
at each stage's first epoch it freezes the stage's frozen parts, builds the stage's
optimiser over the other parameter groups at the stage's learning rates, and continues the
run's schedule from the global step (a new stage does not warm up again). A part is the
``"part"`` key of a group of :meth:`~benchmark.models.IQAModel.param_groups`.

This module imports nothing but the standard library, so configs and tools can read a
recipe without torch; ``bench models --recipe M`` prints one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["Stage", "Recipe", "recipe_lines"]


@dataclass(frozen=True)
class Stage:
    """``epochs`` epochs on a fresh ``optimizer``. ``lr`` sets the learning rate of named
    parts (the others keep their group's own); ``frozen`` parts neither receive gradients
    nor enter the optimiser."""

    name: str
    epochs: int
    optimizer: str
    lr: Mapping[str, float] = field(default_factory=dict)
    frozen: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{self.epochs} epoch(s) of {self.optimizer}"]
        parts += [f"lr {part} {value:g}" for part, value in self.lr.items()]
        if self.frozen:
            parts.append(f"frozen: {', '.join(self.frozen)}")
        return f"{self.name}: " + ", ".join(parts)


@dataclass(frozen=True)
class Recipe:
    """The stages of a run; none for a model fitted by its own ``fit()`` (BRISQUE)."""

    stages: tuple[Stage, ...]

    def __post_init__(self):
        if any(stage.epochs < 0 for stage in self.stages):
            raise ValueError(f"a recipe needs stages of at least 0 epochs, got {self.stages}")

    def stage_of(self, epoch: int) -> tuple[int, int]:
        """(index of the stage the 0-based ``epoch`` belongs to, that stage's first epoch);
        epochs past the end belong to the last stage. A recipe without stages (a fitted
        model's) has no epochs to place."""
        first = 0
        for index, stage in enumerate(self.stages):
            if epoch < first + stage.epochs or index == len(self.stages) - 1:
                return index, first
            first += stage.epochs
        raise ValueError("a recipe without stages trains no epochs (the model fits itself)")


def recipe_lines(name: str, settings: dict, recipe: Recipe,
                 per_dataset: dict[str, dict]) -> list[str]:
    """``bench models --recipe``: a model's training settings, its stages and what each
    dataset changes, one line each, so two papers' recipes can be read side by side."""
    lines = [f"{name}: training recipe"]
    lines += [f"  {key:18s} {value}" for key, value in settings.items()]
    lines.append("stages:" if recipe.stages
                 else "stages: none (fitted by its own fit(), not by SGD)")
    lines += [f"  {stage.describe()}" for stage in recipe.stages]
    lines.append("per dataset (over the above):" if per_dataset else "per dataset: none")
    for dataset, changes in per_dataset.items():
        lines.append(f"  {dataset:10s} " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return lines

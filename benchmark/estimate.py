"""What a suite costs before it runs: crop-steps per run from the datasets' published image
counts and each model's resolved recipe, and GPU-hours from measured or tabled throughput.

No image is read. A split's parts are taken as the protocol's shares of the images
(``round(0.8 N)`` groups for training and validation, ``val_fraction`` of them held out), so
the counts are those of datasets with one image per group and approximate the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.registry import dataset_registry
from benchmark.grid.suite import Suite

__all__ = ["EstimateError", "Throughput", "BUILT_IN", "RunCost", "load_throughputs",
           "estimate_suite"]


class EstimateError(UserError, ValueError):
    """A profile file or a dataset the estimate cannot use; names the file or dataset."""


@dataclass(frozen=True)
class Throughput:
    """Training crops/s of the whole loop and evaluation crops/s on one GPU."""

    train_crops_per_s: float
    eval_crops_per_s: float
    source: str


#: one H200-class GPU, bf16, each paper recipe's batch: an estimate from the models' FLOPs per
#: crop at about a third of the bf16 peak, not a measurement; `bench profile --json` replaces it
BUILT_IN = {
    "probe": Throughput(15000, 40000, "estimate"),
    "deiqt": Throughput(8000, 25000, "estimate"),
    "qfm": Throughput(5000, 25000, "estimate"),  # teacher forward and a second pass
    "hyperiqa": Throughput(6000, 18000, "estimate"),
    "tres": Throughput(3000, 9000, "estimate"),
    "dbcnn": Throughput(1500, 4500, "estimate"),
    "musiq": Throughput(1500, 4000, "estimate"),
    "maniqa": Throughput(600, 2000, "estimate"),
}


@dataclass(frozen=True)
class RunCost:
    entry: str
    model: str
    dataset: str
    runs: int  # the suite's splits
    train_crops: int  # crop-steps of one run: epochs x training images x train_crops
    eval_crops: int  # crops one run evaluates: epochs x (val + test images) x test_crops
    gpu_hours: float | None  # all ``runs`` together; None: no SGD (BRISQUE: CPU minutes)
    source: str


def load_throughputs(paths: list[Path]) -> dict[str, Throughput]:
    """``bench profile --json`` files by model: the loop's figure (not the isolated step's)
    for training, evaluation images/s times their crops for evaluation."""
    measured = {}
    for path in paths:
        try:
            figures = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EstimateError(f"{path}: unreadable profile file ({error})") from None
        try:
            measured[figures["model"]] = Throughput(
                float(figures["loop_images_per_s"]),
                float(figures["eval_images_per_s"]) * int(figures["test_crops"]),
                f"{path} ({figures['device']}, {figures['precision']})")
        except KeyError as error:
            raise EstimateError(f"{path} is not a `bench profile --json` file: no {error}") from None
        except (TypeError, ValueError) as error:
            raise EstimateError(f"{path}: a figure is not a number ({error})") from None
    return measured


def _parts(images: int, val_fraction: float) -> tuple[int, int, int]:
    trainval = round(0.8 * images)
    val = round(val_fraction * trainval)
    return trainval - val, val, images - trainval


def estimate_suite(suite: Suite, protocol: dict[str, Any],
                   measured: dict[str, Throughput] | None = None) -> list[RunCost]:
    """One row per entry and dataset of ``suite`` (its splits together)."""
    from benchmark.runner import resolve_config

    registry = dataset_registry()
    throughputs = {**BUILT_IN, **(measured or {})}
    rows = []
    for entry in suite.entries:
        for dataset in suite.datasets:
            images = registry.get(dataset).expected_images
            if not images:
                raise EstimateError(f"dataset {dataset} declares no image count to estimate from")
            cls, config = resolve_config(entry.model, dataset, entry.overrides)
            # the paper protocol trains on the validation part too
            held_out = 0.0 if suite.run.get("protocol") == "paper" else \
                float(protocol.get("val_fraction", 0.1))
            n_train, n_val, n_test = _parts(images, held_out)
            if cls.training_kind != "gradient":
                rows.append(RunCost(entry.name, entry.model, dataset, len(suite.splits), 0,
                                    n_val + n_test, None, "no GPU"))
                continue
            train = config.epochs * n_train * config.train_crops
            evaluated = config.epochs * (n_val + n_test) * config.test_crops
            speed = throughputs.get(entry.model)
            hours = None if speed is None else len(suite.splits) * (
                train / speed.train_crops_per_s + evaluated / speed.eval_crops_per_s) / 3600
            rows.append(RunCost(entry.name, entry.model, dataset, len(suite.splits), train,
                                evaluated, hours, speed.source if speed else "no throughput"))
    return rows

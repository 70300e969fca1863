"""One (model, dataset, split) run from prepared data to a finished run record.

This is the library call behind ``bench run``, sweeps and the DVC stages: it resolves the
config (paper defaults → the paper's per-dataset overrides → the user's overrides), hashes
it, skips a run that already has a record, orders prerequisites (QFM-IQM's teacher), calls
the engine and writes the run directory atomically.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from benchmark.checkpoints import strip_training_state
from benchmark.loader import DecodeSpec, ImageCache
from benchmark.datasets.prepare import PreparedDataset, load_prepared
from benchmark.engine import (RunConfig, SplitData, fit, resolve_device, result_run_fields,
                              save_checkpoint)
from benchmark.errors import UserError
from benchmark.files import DiskFullError, atomic_write_text, exclusive_lock, rename
from benchmark.metrics import HIGHER_IS_BETTER, all_metrics
from benchmark.models import (ConfigError, FitModel, IQAModel, check_trainable, config_to_dict,
                              get_model_class)
from benchmark.protocol import precision_facts, resolve_amp
from benchmark.records import (RECORD_SCHEMA, SELECTION_RULES, RunKey, RunRecord, config_hash,
                               find_record, git_state, latest_record, load_record,
                               package_versions, run_dir, write_record)
from benchmark.registry import dataset_registry
from benchmark.datasets.splits import check_split_file, load_split_file, split_images

__all__ = ["MissingPrerequisiteError", "ResumableRunError", "RunPlan", "dataset_recipe",
           "resolve_config",
           "plan_run", "prerequisite_command", "run_one", "unit_mapping", "label_facts"]


class MissingPrerequisiteError(UserError, RuntimeError):
    """A run needs another run first (QFM-IQM needs its DEIQT teacher)."""


class ResumableRunError(UserError, RuntimeError):
    """A rerun found the checkpoint of an unfinished run and was told neither to resume it
    nor to start over."""


@dataclass(frozen=True)
class RunPlan:
    """Everything that identifies one run, resolved before it trains (:func:`plan_run`)."""

    cls: type[IQAModel]
    config: Any  # the model's Config, fully resolved
    key: RunKey
    identity: dict[str, Any]  # what the config hash is computed over
    config_hash: str
    prepared: PreparedDataset
    split_file: dict[str, Any]
    parts: dict[str, list[str]]  # train / val / test image paths, as the protocol uses them
    #: needed model → {"dir": its run folder, "config_hash": its hash}
    prerequisites: dict[str, dict[str, str]]
    directory: Path  # the run folder it writes (work happens in a ``.partial`` sibling)


def dataset_recipe(cls: type[IQAModel], dataset: str) -> dict[str, Any]:
    """What ``dataset`` changes in ``cls``'s paper recipe: the paper's per-dataset settings,
    then the dataset's own recipe for the model (the demo's CPU-sized ones). A name that is
    not a registered dataset (``bench profile``'s synthetic set) declares nothing."""
    registry = dataset_registry()
    declared = (registry.get(dataset).model_recipes.get(cls.name, {})
                if dataset in registry.names() else {})
    return {**cls.Config.dataset_overrides.get(dataset, {}), **declared}


def resolve_config(model: str, dataset: str, overrides: dict[str, Any] | None = None):
    cls = get_model_class(model)
    values = {**dataset_recipe(cls, dataset), **(overrides or {})}
    config = cls.resolve_config(values)
    if cls.training_kind == "gradient":
        check_trainable(config)
    return cls, config


def unit_mapping(table: pd.DataFrame) -> tuple[float, float]:
    """(a, b) with score_unit = a·score + b: the dataset's own affine label map."""
    scores, units = table["score"].to_numpy(float), table["score_unit"].to_numpy(float)
    if np.ptp(scores) == 0:
        return 1.0, 0.0
    a, b = np.polyfit(scores, units, 1)
    return float(a), float(b)


def label_facts(table: pd.DataFrame, score_type: str | None) -> dict[str, Any]:
    """The scale of a run's labels, recorded so a trained model scores on it later
    (:mod:`benchmark.metric`): the affine map to ``score_unit``, the raw scores at unit 0 and 1
    (the range ``to_unit`` used, widened to the observed labels) and the direction."""
    a, b = unit_mapping(table)
    ends = sorted((unit - b) / a for unit in (0.0, 1.0))
    digits = 9 - int(np.floor(np.log10(ends[1] - ends[0])))  # drop polyfit's last bits
    ends = [float(round(end, digits)) + 0.0 for end in ends]  # + 0.0: no -0.0
    return {"score_type": score_type, "higher_is_better": bool(a > 0), "score_range": ends,
            "unit_map": [a, b]}


def plan_run(model: str, dataset: str, split: int, root: Path, overrides: dict | None = None,
             run: RunConfig = RunConfig(), results: Path = Path("results"),
             pins: dict[str, str] | None = None) -> RunPlan:
    """Everything that identifies a run, without training: config, hash, paths, parts.

    A prerequisite is the newest finished run of its model on the same dataset and split, or,
    when ``pins`` maps its model to a config-hash prefix, the newest run with that prefix."""
    name = dataset_registry().canonical(dataset)
    prepared = load_prepared(root, name)
    split_file = load_split_file(prepared.split_path)
    check_split_file(split_file, prepared.table, name, prepared.meta["splits_sha256"],
                     prepared.split_path)
    parts = split_images(split_file, split)
    if run.protocol == "paper":  # the published protocol has no validation part
        parts = {**parts, "train": parts["train"] + parts["val"], "val": []}
    cls, config = resolve_config(model, name, overrides)
    crops = len(parts["train"]) * config.train_crops
    if cls.training_kind == "gradient" and config.batch_size > crops:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {crops} training crops of "
                          f"{name} split {split} ({len(parts['train'])} images x train_crops "
                          f"{config.train_crops}): lower batch_size")
    run = replace(run, amp=resolve_amp(run.amp, cls.original_precision))  # hashed as resolved
    key = RunKey(cls.name, name, split)
    prerequisites = {}
    pins = pins or {}
    unknown = sorted(set(pins) - set(cls.prerequisites(config)))
    if unknown:
        raise ConfigError(f"{cls.name} needs no {unknown[0]} run, so it cannot be pinned "
                          f"(prerequisites: {', '.join(cls.prerequisites(config)) or 'none'})")
    for needed in cls.prerequisites(config):
        record_path = latest_record(results, RunKey(needed, name, split), pins.get(needed, ""),
                                    run.protocol)
        if record_path is None and needed in pins:
            raise MissingPrerequisiteError(
                f"no finished {needed} run on {name} split {split} has a config hash starting "
                f"with {pins[needed]!r} under {Path(results) / 'runs' / needed / name}")
        if record_path is None:
            raise MissingPrerequisiteError(
                f"{cls.name} on {name} split {split} needs a finished {needed} run first: "
                f"{prerequisite_command(cls, config, needed, name, split, root, results, run)}")
        record = load_record(record_path)
        if record["data"]["splits_sha256"] != split_file["sha256"]:
            raise MissingPrerequisiteError(
                f"the {needed} run in {record_path.parent} used another split file; its training "
                f"images may include this split's test images: rerun it on this split file")
        prerequisites[needed] = {"dir": str(record_path.parent), "config_hash": record["config_hash"]}
    identity = {
        "model": cls.name, "dataset": name, "split": split, "config": config_to_dict(config),
        "run": result_run_fields(run),
        "data": {"table_sha256": prepared.meta["table_sha256"], "splits_sha256": split_file["sha256"]},
        "prerequisites": {k: v["config_hash"] for k, v in prerequisites.items()},
    }
    digest = config_hash(identity)
    return RunPlan(cls, config, key, identity, digest, prepared, split_file, parts,
                   prerequisites, run_dir(results, key, digest))


def prerequisite_command(cls: type[IQAModel], config, needed: str, dataset: str, split: int,
                         root: Path, results: Path, run: RunConfig) -> str:
    """The ``bench run`` command that makes the ``needed`` run this one accepts: the values the
    model asks of it (:meth:`IQAModel.prerequisite_config`) that differ from that model's own
    resolved defaults become ``--set`` overrides; data, results and seed are this run's."""
    import shlex

    import yaml

    defaults = config_to_dict(resolve_config(needed, dataset)[1])
    wanted = cls.prerequisite_config(config, needed)
    words = ["bench", "run", "--model", needed, "--dataset", dataset, "--split", str(split),
             "--root", str(root), "--results", str(results), "--seed", str(run.seed)]
    for option, value, default in (("--amp", run.amp, "auto"), ("--device", run.device, "auto"),
                                   ("--protocol", run.protocol, "honest")):
        if value != default:
            words += [option, value]
    if run.compile:
        words.append("--compile")
    for key, value in wanted.items():
        if defaults.get(key) != value:
            # YAML flow text is what --set parses back to the same value ('true' stays a string)
            text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
            words += ["--set", f"{key}={text.rstrip().removesuffix('...').rstrip()}"]
    return shlex.join(words)


def _split_data(plan: RunPlan, run: RunConfig, results: Path) -> SplitData:
    prepared: PreparedDataset = plan.prepared
    config = plan.config
    table = prepared.table.set_index("image")
    spec = DecodeSpec(resize_hw=config.resize_hw, min_side=config.img_size)
    a, b = unit_mapping(prepared.table)
    unit_scale = config.label_scale == "unit"
    caches = {part: ImageCache([prepared.image_path(i) for i in images], spec, run.cache,
                               results / "cache" / "images")
              for part, images in plan.parts.items()}
    if config.img_size <= 0 and plan.cls.training_kind == "gradient":
        _require_one_size(caches["train"])
    label_column = "score_unit" if unit_scale else "score"
    units = {part: table.loc[images, "score_unit"].to_numpy(float)
             for part, images in plan.parts.items()}
    return SplitData(
        train=caches["train"], val=caches["val"], test=caches["test"],
        train_labels=table.loc[plan.parts["train"], label_column].to_numpy(float),
        val_labels=table.loc[plan.parts["val"], label_column].to_numpy(float),
        train_units=units["train"], val_units=units["val"], test_units=units["test"],
        to_unit=(lambda x: np.asarray(x)) if unit_scale else (lambda x: a * np.asarray(x) + b))


def _require_one_size(train: ImageCache) -> None:
    """``img_size`` 0 trains on whole images, which stack into a batch only at one size
    (evaluation takes mixed sizes one by one, and so does a fit model such as BRISQUE)."""
    for index, path in enumerate(train.paths):
        shape = train[index].shape[:2]
        if index == 0:
            first = (path, shape)
        elif shape != first[1]:
            raise ConfigError(
                f"img_size 0 trains on whole images, but {first[0].name} is {first[1][0]}x"
                f"{first[1][1]} and {path.name} is {shape[0]}x{shape[1]}: set "
                f"resize_hw=[H, W] or a crop size img_size>0")


def _fit_without_sgd(model: FitModel, data: SplitData, config, work_dir: Path):
    from benchmark.engine import FitResult

    tic = time.perf_counter()
    images = {part: [cache[i] for i in range(len(cache))]
              for part, cache in (("train", data.train), ("val", data.val), ("test", data.test))}
    facts = model.fit(images["train"], data.train_labels, images["val"], data.val_labels)
    train_s = time.perf_counter() - tic
    tic = time.perf_counter()
    scores = {part: np.asarray(model.predict(images[part]), dtype=np.float64) for part in ("val", "test")}
    entry = {"epoch": 1, "lr": 0.0, "train": {k: v for k, v in facts.items()
                                              if isinstance(v, (int, float))},
             "val": all_metrics(data.to_unit(scores["val"]), data.val_units),
             "test": all_metrics(data.to_unit(scores["test"]), data.test_units), "time_s": 0.0}
    weights = {"model": model.name, "config": config_to_dict(config), "epoch": 1,
               "state_dict": model.state_dict()}
    save_checkpoint(work_dir / "checkpoint.pt", weights)
    save_checkpoint(work_dir / "best_val.pt", weights)
    selected = {k: entry[k] for k in ("epoch", "val", "test")}
    return FitResult(history=[entry], predictions={p: scores[p][None] for p in scores},
                     selection={rule: dict(selected) for rule in SELECTION_RULES},
                     train_s=train_s, eval_s=time.perf_counter() - tic), facts


def run_one(model: str, dataset: str, split: int, root: Path, overrides: dict | None = None,
            run: RunConfig = RunConfig(), results: Path = Path("results"), force: bool = False,
            resume: bool = False, log: Callable[[str], None] = print,
            pins: dict[str, str] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; returns its record (an existing one when already done).

    Nothing is written before the config, the data and the model are known to be good. The
    run folder is locked while it trains, so a second identical run names the first's pid.
    A checkpoint of an unfinished run is resumed with ``resume``, discarded with ``force``,
    and otherwise refused rather than silently thrown away."""
    results = Path(results)
    device = resolve_device(run.device)
    plan = plan_run(model, dataset, split, root, overrides, run, results, pins)
    work_dir = plan.directory.with_name(plan.directory.name + ".partial")
    existing = find_record(results, plan.key, plan.config_hash)
    if existing and not force:
        log(f"already done: {existing}")
        return load_record(existing)
    resumable = not issubclass(plan.cls, FitModel)
    _refuse_silent_restart(work_dir, resumable and not (resume or force))
    import torch

    previous_threads = torch.get_num_threads()
    if run.threads:
        torch.set_num_threads(run.threads)
    try:
        # amp as hashed (auto resolved to the original's precision), device and threads as used
        resolved = replace(run, device=str(device), amp=plan.identity["run"]["amp"],
                           threads=torch.get_num_threads())
        return _train(plan, resolved, run, device, Path(root), results, force, resume, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train(plan: RunPlan, run: RunConfig, asked: RunConfig, device, root: Path, results: Path,
           force: bool, resume: bool, log: Callable[[str], None]) -> dict:
    """``run`` as resolved (device, threads); ``asked`` as the user gave it (for commands)."""
    import torch

    final_dir: Path = plan.directory
    work_dir = final_dir.with_name(final_dir.name + ".partial")
    cls, config = plan.cls, plan.config
    resumable = not issubclass(cls, FitModel)
    torch.manual_seed(run.seed)  # the initial weights are part of the seeded run
    instance: IQAModel = cls(config)  # bad configs fail here, before anything is written
    try:
        instance.attach_prerequisites({name: Path(info["dir"]) / "checkpoint.pt"
                                       for name, info in plan.prerequisites.items()})
    except ConfigError as error:  # e.g. a teacher of another backbone: say how to make one
        commands = "; ".join(prerequisite_command(cls, config, needed, plan.key.dataset,
                                                  plan.key.split, root, results, asked)
                             for needed in plan.prerequisites)
        raise MissingPrerequisiteError(f"{error}; make one it accepts with: {commands}") from None
    started = time.perf_counter()
    data = _split_data(plan, run, results)
    decode_s = time.perf_counter() - started
    for line in _recipe_notes(plan):  # once the inputs are known good: errors stay one line
        log(line)
    with exclusive_lock(final_dir.with_name(f".{final_dir.name}.lock"), f"run folder {final_dir}"):
        existing = find_record(results, plan.key, plan.config_hash)  # finished meanwhile
        if existing and not force:
            log(f"already done: {existing}")
            return load_record(existing)
        _refuse_silent_restart(work_dir, resumable and not (resume or force))
        if work_dir.exists() and not (resume and resumable):
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            facts: dict = {}
            if issubclass(cls, FitModel):
                result, facts = _fit_without_sgd(instance, data, config, work_dir)
            else:
                result = fit(instance, data, config, run, work_dir, resume=resume, log=log)
            record = _record(plan, run, result, data, device, facts,
                             {"decode_s": round(decode_s, 3), "train_s": round(result.train_s, 3),
                              "eval_s": round(result.eval_s, 3),
                              "total_s": round(time.perf_counter() - started, 3)})
            _write_outputs(plan, result, record, work_dir)
        except DiskFullError as error:
            checkpoint = work_dir / "checkpoint.pt"
            kept = (f"the last checkpoint {checkpoint} is intact: free space and rerun with "
                    f"--resume" if checkpoint.is_file() else "no checkpoint was written yet")
            raise DiskFullError(error.errno, f"{error.strerror}; {kept}") from None
        except BaseException:
            if not (work_dir / "checkpoint.pt").exists():  # nothing worth resuming: no trace
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        if final_dir.exists():  # --force over a finished run
            shutil.rmtree(final_dir)
        rename(work_dir, final_dir)
    _drop_training_state(final_dir / "checkpoint.pt", log)
    log(f"wrote {final_dir / 'record.json'}")
    return load_record(final_dir / "record.json")


def _refuse_silent_restart(work_dir: Path, refuse: bool) -> None:
    if refuse and (work_dir / "checkpoint.pt").is_file():
        raise ResumableRunError(f"{work_dir} holds the checkpoint of an unfinished run of this "
                                f"config: pass --resume to continue it or --force to start over")


def _drop_training_state(checkpoint: Path, log: Callable[[str], None]) -> None:
    """Only once the record is in place: until then the optimiser state is what a resume
    needs, and a finished folder with a full checkpoint is still a finished run."""
    try:
        strip_training_state(checkpoint)
    except DiskFullError as error:
        log(f"note: {error.strerror}; {checkpoint} keeps its optimiser state")


def _recipe_notes(plan: RunPlan) -> list[str]:
    """What a reader of the log must know about the recipe before trusting its numbers."""
    cls, dataset = plan.cls, plan.key.dataset
    # only the settings in force: a user's --set or params.yaml value overrides the recipe's
    recipe = {key: value for key, value in dataset_recipe(cls, dataset).items()
              if getattr(plan.config, key, value) == value}
    lines = []
    if recipe:
        lines.append(f"{dataset} recipe ({cls.name}): "
                     + " ".join(f"{key}={value}" for key, value in recipe.items()))
    if cls.training_kind == "gradient" and plan.config.pretrained == "false":
        lines.append(f"note: {cls.name} starts from random weights (pretrained=false); its "
                     f"numbers say the pipeline runs, not how well the model rates quality")
    return lines


def _record(plan: RunPlan, run, result, data, device, facts, timings) -> RunRecord:
    parts = plan.parts
    return RunRecord({
        "schema": RECORD_SCHEMA, "model": plan.key.model, "dataset": plan.key.dataset,
        "split": plan.key.split,
        "split_seed": plan.split_file["splits"][plan.key.split]["seed"],
        "config": plan.identity["config"], "run_config": asdict(run),
        "dataset_recipe": dataset_recipe(plan.cls, plan.key.dataset),
        "config_hash": plan.config_hash, "identity": plan.identity, "seed": run.seed,
        "protocol": run.protocol,
        "git": git_state(), "versions": package_versions(),
        "device": {"type": device.type, "name": _device_name(device)},
        "data": {"root": str(plan.prepared.root), **plan.identity["data"],
                 "n_train": len(parts["train"]), "n_val": len(parts["val"]),
                 "n_test": len(parts["test"]), "partial_dataset": plan.prepared.meta.get("partial")},
        "prerequisites": plan.prerequisites, "fit_facts": facts, "timings": timings,
        "history": result.history, "metrics": result.selection,
        "precision": precision_facts(result.precision, plan.cls.original_precision),
        "compile": {"enabled": run.compile, "graphs": result.compiled_graphs},
        "data_path": result.data_path,
        "labels": label_facts(plan.prepared.table,
                              plan.prepared.meta.get("spec", {}).get("score_type")),
        "higher_is_better": HIGHER_IS_BETTER, "suite_tag": plan.identity["config"].get("preset"),
        "status": "complete", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def _device_name(device) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def _write_outputs(plan: RunPlan, result, record, work_dir: Path) -> None:
    prepared, parts = plan.prepared, plan.parts
    table = prepared.table.set_index("image")
    a, b = unit_mapping(prepared.table)
    unit = (lambda x: x) if plan.config.label_scale == "unit" else (lambda x: a * x + b)
    frames = []
    for part in ("val", "test"):
        rows = table.loc[parts[part], ["score", "score_unit"]].reset_index()
        rows.insert(1, "part", part)
        for rule in SELECTION_RULES:
            prediction = result.predictions[part][record["metrics"][rule]["epoch"] - 1]
            rows[f"pred_{rule}"] = prediction
            rows[f"pred_unit_{rule}"] = unit(prediction)
        frames.append(rows)
    atomic_write_text(work_dir / "predictions.csv",
                      pd.concat(frames).to_csv(index=False, float_format="%.8g", lineterminator="\n"))
    write_record(work_dir, record)

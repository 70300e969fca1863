"""Training and evaluation of one model on one split: the engine behind ``bench run``.

The engine owns the optimiser, schedule, precision, checkpoints and the three selection
rules; models own only their forward pass and (optionally) their training objective.
A checkpoint is written at every epoch end; ``resume`` restarts from the last one and,
because every random draw is derived from (seed, epoch, sample), ends with the same
metrics as an uninterrupted run on the CPU.

Epochs are numbered from 1 wherever a person reads them: the history, the selection rules,
checkpoints, logs and records. The model's recipe stages (:mod:`benchmark.recipe`) and
``TrainContext.epoch`` take the 0-based loop index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmark.batches import EvalBatches, eval_batches, training_batches
from benchmark.checkpoints import RESUME_KEYS, CheckpointError, load_checkpoint, save_checkpoint
from benchmark.errors import UserError
from benchmark.loader import ImageCache, TrainCrops
from benchmark.metrics import all_metrics
from benchmark.models import ConfigError, IQAModel, TrainContext, eval_crop
from benchmark.records import select_epochs
from benchmark.train_step import (DTYPE_NAMES, LossTally, Trainer, build_optimizer,
                                  compiled_graphs, lr_factor, to_input)

__all__ = ["RunConfig", "result_run_fields", "SplitData", "CheckpointError",
           "NonFiniteLossError", "fit", "train_epoch", "steps_per_epoch", "predict", "extract", "resolve_device",
           "build_optimizer", "lr_factor", "save_checkpoint", "load_checkpoint"]


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunConfig:
    """How a run executes. Only the RESULT_FIELDS change results; the rest is plumbing."""

    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (resolved and recorded by the runner)
    # auto: the model's original precision (the runner makes it off for fp32 originals), else
    # bf16 where supported, fp16+scaler on older GPUs, off on CPU | bf16 | fp16 | off
    amp: str = "auto"
    #: torch.compile the model's objective; hashed, since compiled kernels may round differently
    compile: bool = False
    channels_last: bool = True
    workers: int = 0
    #: CPU threads (torch.set_num_threads); 0 = torch's default. Recorded as the count used:
    #: on a CPU it moves a result in its last bits, and a noisy recipe by more (README)
    threads: int = 0
    cache: str = "memory"  # memory | disk
    #: training crops cut on the device from its copy of the images: auto (on CUDA when they
    #: fit), on (any device; refused when they do not fit) or off (the CPU loader)
    data_on_device: str = "auto"
    progress: bool = True
    max_steps_per_epoch: int = 0  # 0 = full epochs; profiling and smoke tests cap it
    #: steps between the loop's reads of the device (loss check, progress); each read waits for
    #: the device to finish, so a small value starves a GPU of queued work
    sync_every: int = 50
    #: honest: train on the split's train part, report the validation-selected epoch (the
    #: default); paper: train on train + val (the published 80 %) and report each original's
    #: test-set epoch rule, to reproduce published cells (README, "Two protocols")
    protocol: str = "honest"

    RESULT_FIELDS = ("seed", "amp", "compile", "protocol")
    PROTOCOLS = ("honest", "paper")

    def __post_init__(self) -> None:
        """Checked when built, before any data is read; whether CUDA is there is checked
        where the run starts (:func:`resolve_device`), since sweeps plan on login nodes."""
        _parse_device(self.device)
        for key, value, allowed in (("amp", self.amp, ("auto", "bf16", "fp16", "off")),
                                    ("cache", self.cache, ("memory", "disk")),
                                    ("protocol", self.protocol, self.PROTOCOLS),
                                    ("data_on_device", self.data_on_device, ("auto", "on", "off"))):
            if value not in allowed:
                raise ConfigError(f"{key} {value!r} is not one of {', '.join(allowed)}")
        for key in ("workers", "threads", "max_steps_per_epoch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be 0 or more, got {getattr(self, key)}")
        if self.sync_every < 1:
            raise ConfigError(f"sync_every must be 1 or more, got {self.sync_every}")


def result_run_fields(run: RunConfig) -> dict[str, Any]:
    """The run settings a config hash covers. ``protocol`` enters only when it is ``paper``,
    so honest runs keep the hashes (and folders) they had before there were two protocols."""
    fields = {k: getattr(run, k) for k in RunConfig.RESULT_FIELDS}
    if fields["protocol"] == "honest":
        del fields["protocol"]
    return fields


@dataclass
class SplitData:
    """One split's images, decoded, with labels on the model's training scale."""

    train: ImageCache
    val: ImageCache
    test: ImageCache
    train_labels: np.ndarray
    val_labels: np.ndarray
    train_units: np.ndarray
    val_units: np.ndarray
    test_units: np.ndarray
    to_unit: Callable[[np.ndarray], np.ndarray]  # model scale → unit scale (affine)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # "val"/"test" → E×N
    selection: dict[str, dict] = field(default_factory=dict)
    train_s: float = 0.0
    eval_s: float = 0.0
    precision: str = "fp32"  # what the forward passes computed in: fp32 | bf16 | fp16
    compiled_graphs: int = 0  # graphs torch.compile built for the objective (0: not compiled)
    data_path: str = "loader"  # where the training crops were cut: loader | device


def _parse_device(name: str) -> torch.device:
    try:
        return torch.device("cpu" if name == "auto" else name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not cpu, cuda, cuda:N or auto") from None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = _parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device "
                          f"cpu or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                          f"CUDA device(s) are visible")
    return device


@torch.no_grad()
def predict(model: IQAModel, cache: ImageCache, crop: int, n_crops: int, seed: int,
            device: torch.device, batch_size: int = 64, workers: int = 0,
            amp_dtype: torch.dtype | None = None, channels_last: bool = False,
            fn: str = "forward", batches: EvalBatches | None = None) -> np.ndarray:
    """Per-image outputs averaged over ``n_crops`` seeded crops: scores (N,) or features (N, D).
    ``crop`` 0 takes whole images, one per batch when their sizes differ. ``batches``: the
    same crops already packed (:func:`benchmark.batches.eval_batches`), reused across calls."""
    model.eval()
    outputs: list[torch.Tensor] = []
    head = model if fn == "forward" else getattr(model, fn)
    if batches is None:
        batches = eval_batches(cache, crop, n_crops, seed, device, batch_size, workers)
    for images in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = head(to_input(images, device, channels_last))
        outputs.append(out.float())  # kept on the device: one transfer at the end, not per batch
    if not outputs:
        return np.zeros((0,))
    stacked = torch.cat(outputs).cpu()
    per_image = stacked.view(len(cache), n_crops, *stacked.shape[1:]).mean(1)
    return per_image.numpy().astype(np.float64)


def extract(model: IQAModel, paths: list[Path], crop: int, n_crops: int, device: torch.device,
            fn: str = "forward", seed: int = 0, resize_hw: tuple[int, int] | None = None,
            batch_size: int = 32) -> np.ndarray:
    """:func:`predict` on image files: scores or ``features()`` averaged over seeded crops."""
    from benchmark.loader import DecodeSpec

    if resize_hw is None:
        resize_hw = getattr(getattr(model, "config", None), "resize_hw", None)
    cache = ImageCache(list(paths), DecodeSpec(resize_hw, crop))
    return predict(model, cache, crop, n_crops, seed, device, batch_size, fn=fn)


def _evaluate(model, data: SplitData, config, run: RunConfig, device, amp_dtype,
              packed: dict[str, EvalBatches]) -> dict:
    return {part: predict(model, cache, eval_crop(config), config.test_crops, run.seed, device,
                          config.batch_size, run.workers, amp_dtype, run.channels_last,
                          batches=packed[part])
            for part, cache in (("val", data.val), ("test", data.test))}


def _init_from_features(model: IQAModel, data: SplitData, config, run: RunConfig, device,
                        amp_dtype, log: Callable[[str], None]) -> None:
    def features() -> np.ndarray:  # the extra pass over the training images, on request
        return predict(model, data.train, config.img_size, config.test_crops, run.seed, device,
                       config.batch_size, run.workers, amp_dtype, run.channels_last,
                       fn="features")

    message = model.init_from_features(features, np.asarray(data.train_labels, dtype=np.float64))
    if message:
        log(message)


def fit(model: IQAModel, data: SplitData, config: Any, run: RunConfig, work_dir: Path,
        resume: bool = False, log: Callable[[str], None] = print) -> FitResult:
    """Train with the engine's loop, evaluating val and test at every epoch end."""
    device = resolve_device(run.device)
    torch.manual_seed(run.seed)
    model.to(device)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    train_set = TrainCrops(data.train, data.train_labels, data.train_units, config.img_size,
                           config.train_crops, run.seed, config.hflip,
                           extra_crops=model.extra_crops())
    steps = steps_per_epoch(len(train_set), config, run)
    batches = training_batches(train_set, config.batch_size, run, device, log)
    if 0 < config.epochs <= config.warmup_epochs:
        # a warning, not a refusal: short runs at a low lr are legitimate probes
        log(f"warning: warmup_epochs {config.warmup_epochs:g} >= epochs {config.epochs}: the "
            f"whole run is linear warm-up and the lr never reaches {config.lr:g}; set "
            f"warmup_epochs below epochs")
    graphs_before = compiled_graphs()
    trainer = Trainer.build(model, config, run, device, steps)
    result = FitResult(precision=DTYPE_NAMES[trainer.amp_dtype], data_path=batches.path)
    start_epoch = 0
    checkpoint_path = work_dir / "checkpoint.pt"
    preds: dict[str, list] = {"val": [], "test": []}
    if resume and checkpoint_path.is_file():
        start_epoch, preds = _resume(checkpoint_path, trainer, config, result)
        log(f"resuming after epoch {start_epoch} from {checkpoint_path}")
    if start_epoch == 0:
        tic = time.perf_counter()
        _init_from_features(model, data, config, run, device, trainer.amp_dtype, log)
        result.train_s += time.perf_counter() - tic
    label_range = float(np.ptp(data.train_labels)) if len(data.train_labels) else 1.0
    # packed once: every epoch's evaluation cuts the same crops from the same copy
    packed = {part: eval_batches(cache, eval_crop(config), config.test_crops, run.seed, device,
                                 config.batch_size, run.workers)
              for part, cache in (("val", data.val), ("test", data.test))}
    for epoch in range(start_epoch, config.epochs):
        trainer.enter_stage(epoch)
        last_good = checkpoint_path if checkpoint_path.is_file() else "none (first epoch)"
        tic = time.perf_counter()
        train_terms = train_epoch(trainer, batches, epoch, steps, config, run, label_range,
                                  f"the last good checkpoint is {last_good}")
        result.train_s += time.perf_counter() - tic
        tic = time.perf_counter()
        scores = _evaluate(model, data, config, run, device, trainer.amp_dtype, packed)
        result.eval_s += time.perf_counter() - tic
        entry = {"epoch": epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"],
                 "train": train_terms,
                 "val": all_metrics(data.to_unit(scores["val"]), data.val_units),
                 "test": all_metrics(data.to_unit(scores["test"]), data.test_units),
                 "time_s": round(time.perf_counter() - tic, 3)}
        result.history.append(entry)
        for part in preds:
            preds[part].append(scores[part])
        log(f"epoch {epoch + 1}: loss {entry['train'].get('loss', float('nan')):.4g}  "
            f"val srcc {entry['val']['srcc']:.4f}  test srcc {entry['test']['srcc']:.4f}")
        # best_val.pt is always the epoch the record's val rule reports (last, without val)
        if select_epochs(result.history)["val"]["epoch"] == epoch + 1:
            save_checkpoint(work_dir / "best_val.pt", _weights(model, config, epoch + 1))
        save_checkpoint(checkpoint_path, {
            **_weights(model, config, epoch + 1), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
            "train_state": model.train_state(), "rng": torch.get_rng_state(),
            "history": result.history, "preds": {k: [torch.tensor(v) for v in preds[k]] for k in preds},
            "train_s": result.train_s, "eval_s": result.eval_s})
    result.compiled_graphs = compiled_graphs() - graphs_before
    result.predictions = {k: np.stack(v) if v else np.zeros((0, 0)) for k, v in preds.items()}
    result.selection = select_epochs(result.history, type(model).paper_selection)
    return result


def steps_per_epoch(crops: int, config: Any, run: RunConfig) -> int:
    """Full batches of an epoch's ``crops`` training crops, capped by the run."""
    steps = crops // config.batch_size
    if steps == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {crops} training "
                         f"crops: lower batch_size")
    return min(steps, run.max_steps_per_epoch) if run.max_steps_per_epoch else steps


def _resume(path: Path, trainer: Trainer, config: Any,
            result: FitResult) -> tuple[int, dict[str, list]]:
    """Load a checkpoint's training state into the trainer (in the recipe stage its last
    epoch ran in), its model and ``result``: the finished epochs and their predictions."""
    model = trainer.model
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a bench checkpoint")
    if state.get("model") != model.name or state.get("config") != _weights(model, config, 0)["config"]:
        raise CheckpointError(f"{path} belongs to model {state.get('model')!r} with another "
                              f"config; cannot resume {model.name} from it")
    if any(key not in state for key in RESUME_KEYS):
        raise CheckpointError(f"{path} holds weights only, no training state to resume from: "
                              f"rerun with --force to start over")
    model.load_state_dict(state["state_dict"])
    # the history counts the finished epochs whatever numbering the checkpoint used
    finished = len(state["history"])
    trainer.enter_stage(finished - 1)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    model.load_train_state(state.get("train_state", {}))
    torch.set_rng_state(state["rng"])
    result.history = state["history"]
    result.train_s, result.eval_s = state["train_s"], state["eval_s"]
    preds = {k: [np.asarray(v, dtype=np.float64) for v in state["preds"][k]] for k in ("val", "test")}
    return finished, preds


def train_epoch(trainer: Trainer, batches, epoch: int, steps: int, config: Any,
                run: RunConfig, label_range: float, on_bad: str = "") -> dict[str, float]:
    """``steps`` updates on epoch ``epoch``'s batches (:func:`benchmark.batches.training_batches`):
    the mean of each loss term. The device is read every ``run.sync_every`` steps and at the
    end; a non-finite loss found there names its own step (``on_bad`` completes the message)."""
    loader = batches.epoch(epoch)
    trainer.model.train()
    tally, shown = LossTally(trainer.device), 0
    bar = _progress(run.progress)(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}")
    for step_in_epoch, batch in enumerate(loader):
        if step_in_epoch >= steps:
            break
        ctx = TrainContext(epoch, epoch * steps + step_in_epoch, steps, label_range,
                           trainer.device)
        tally.add(trainer.step(trainer.to_device(batch), ctx), step_in_epoch)
        if (step_in_epoch + 1) % run.sync_every == 0 and step_in_epoch + 1 < steps:
            means = _checked(tally, epoch, on_bad)
            bar.set_postfix(loss=f"{means['loss']:.4g}")
            bar.update(step_in_epoch + 1 - shown)
            shown = step_in_epoch + 1
    means = _checked(tally, epoch, on_bad)
    bar.close()
    return means


def _checked(tally: LossTally, epoch: int, on_bad: str) -> dict[str, float]:
    bad, value, means = tally.read()
    if bad is not None:
        raise NonFiniteLossError(f"non-finite loss ({value}) at epoch {epoch + 1}, step "
                                 f"{bad + 1}; {on_bad}")
    return means


def _weights(model: IQAModel, config: Any, epoch: int) -> dict:
    from benchmark.models import config_to_dict

    return {"model": model.name, "config": config_to_dict(config), "epoch": epoch,
            "state_dict": model.state_dict()}


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    return lambda **kwargs: tqdm(disable=not enabled, leave=False, **kwargs)

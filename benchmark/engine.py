"""Training and evaluation of one model on one split: the engine behind ``bench run``.

The engine owns the optimiser, schedule, precision, checkpoints and the three selection
rules; models own only their forward pass and (optionally) their training objective.
A checkpoint is written at every epoch end; ``resume`` restarts from the last one and,
because every random draw is derived from (seed, epoch, sample), ends with the same
metrics as an uninterrupted run on the CPU.

Epochs are numbered from 1 wherever a person reads them: the history, the selection rules,
checkpoints, logs and records. Model hooks (``on_epoch_start``, ``optimizer_stage``,
``group_lr_factor``, ``TrainContext.epoch``) take the 0-based loop index.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmark.checkpoints import RESUME_KEYS, CheckpointError, load_checkpoint, save_checkpoint
from benchmark.data import ImageCache, EvalCrops, TrainCrops, collate
from benchmark.metrics import all_metrics
from benchmark.models import ConfigError, IQAModel, TrainContext, eval_crop
from benchmark.records import select_epochs

__all__ = ["RunConfig", "SplitData", "CheckpointError", "NonFiniteLossError", "fit", "predict",
           "extract", "resolve_device", "build_optimizer",
           "lr_factor", "save_checkpoint", "load_checkpoint"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunConfig:
    """How a run executes. Only ``seed`` and ``amp`` change results; the rest is plumbing."""

    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (resolved and recorded by the runner)
    # auto: the model's original precision (the runner makes it off for fp32 originals), else
    # bf16 where supported, fp16+scaler on older GPUs, off on CPU | bf16 | fp16 | off
    amp: str = "auto"
    compile: bool = False
    channels_last: bool = True
    workers: int = 0
    #: CPU threads (torch.set_num_threads); 0 = torch's default. Recorded as the count used:
    #: on a CPU it moves a result in its last bits, and a noisy recipe by more (README)
    threads: int = 0
    cache: str = "memory"  # memory | disk
    progress: bool = True
    max_steps_per_epoch: int = 0  # 0 = full epochs; profiling and smoke tests cap it

    RESULT_FIELDS = ("seed", "amp", "compile")

    def __post_init__(self) -> None:
        """Checked when built, before any data is read; whether CUDA is there is checked
        where the run starts (:func:`resolve_device`), since sweeps plan on login nodes."""
        _parse_device(self.device)
        for key, value, allowed in (("amp", self.amp, ("auto", "bf16", "fp16", "off")),
                                    ("cache", self.cache, ("memory", "disk"))):
            if value not in allowed:
                raise ConfigError(f"{key} {value!r} is not one of {', '.join(allowed)}")
        for key in ("workers", "threads", "max_steps_per_epoch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be 0 or more, got {getattr(self, key)}")


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


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if amp in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"unknown amp mode {amp!r} (auto, bf16, fp16, off)")


_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def lr_factor(step: int, steps_per_epoch: int, config: Any) -> float:
    """Multiplier of the base lr at a global step: linear warm-up, then step, cosine over the
    run, periodic cosine or constant.

    With DEIQT's recipe this is timm's StepLRScheduler as the official code uses it: warm-up
    from ``warmup_lr`` over ``warmup_epochs``, then ×gamma every ``step_epochs`` counted from 0.
    """
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        start = config.warmup_lr / config.lr
        return start + (1.0 - start) * step / warmup
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        period = max(1, int(round(config.step_epochs * steps_per_epoch)))
        return config.gamma ** (step // period)
    if config.schedule == "cosine":
        total = max(1, config.epochs * steps_per_epoch - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / total)))
    if config.schedule == "cosine_periodic":
        # torch's CosineAnnealingLR stepped every batch past T_max: down to 0, back up, repeat
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, config.cycle_steps)))
    raise ValueError(f"unknown schedule {config.schedule!r} (step, cosine, cosine_periodic, "
                     f"constant)")


def _loader(dataset, batch_size: int, workers: int, shuffle_seed: int | None, drop_last: bool):
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle_seed is not None, generator=generator,
        num_workers=workers, collate_fn=collate, drop_last=drop_last,
        pin_memory=False, persistent_workers=False)


def _group_schedules(model: IQAModel, optimizer, steps: int, config: Any,
                     offset: int = 0) -> list[Callable]:
    """One lr multiplier per parameter group: the recipe's schedule times the model's own
    per-part factor (HyperIQA's hyper-network decay, DBCNN's stage switch). ``offset`` is the
    global step at which ``optimizer`` took over (a stage's fresh optimiser counts from 0)."""
    part_factor = getattr(model, "group_lr_factor", None)

    def schedule(part: str) -> Callable[[int], float]:
        if part_factor is None:
            return lambda step: lr_factor(step + offset, steps, config)
        return lambda step: (lr_factor(step + offset, steps, config)
                             * part_factor(part, (step + offset) // steps))

    return [schedule(group.get("part", "")) for group in optimizer.param_groups]


def _to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True).float().div_(255.0)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.no_grad()
def predict(model: IQAModel, cache: ImageCache, crop: int, n_crops: int, seed: int,
            device: torch.device, batch_size: int = 64, workers: int = 0,
            amp_dtype: torch.dtype | None = None, channels_last: bool = False,
            fn: str = "forward") -> np.ndarray:
    """Per-image outputs averaged over ``n_crops`` seeded crops: scores (N,) or features (N, D).
    ``crop`` 0 takes whole images, one per batch when their sizes differ."""
    model.eval()
    outputs: list[torch.Tensor] = []
    head = model if fn == "forward" else getattr(model, fn)
    if crop <= 0 and len({cache[i].shape for i in range(len(cache))}) > 1:
        batch_size = n_crops
    for batch in _loader(EvalCrops(cache, crop, n_crops, seed), batch_size, workers, None, False):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = head(_to_input(batch["image"], device, channels_last))
        outputs.append(out.float().cpu())
    if not outputs:
        return np.zeros((0,))
    stacked = torch.cat(outputs)
    per_image = stacked.view(len(cache), n_crops, *stacked.shape[1:]).mean(1)
    return per_image.numpy().astype(np.float64)


def extract(model: IQAModel, paths: list[Path], crop: int, n_crops: int, device: torch.device,
            fn: str = "forward", seed: int = 0, resize_hw: tuple[int, int] | None = None,
            batch_size: int = 32) -> np.ndarray:
    """:func:`predict` on image files: scores or ``features()`` averaged over seeded crops."""
    from benchmark.data import DecodeSpec

    if resize_hw is None:
        resize_hw = getattr(getattr(model, "config", None), "resize_hw", None)
    cache = ImageCache(list(paths), DecodeSpec(resize_hw, crop))
    return predict(model, cache, crop, n_crops, seed, device, batch_size, fn=fn)


def _evaluate(model, data: SplitData, config, run: RunConfig, device, amp_dtype) -> dict:
    scores = {}
    for part, cache in (("val", data.val), ("test", data.test)):
        scores[part] = predict(model, cache, eval_crop(config), config.test_crops, run.seed, device,
                               config.batch_size, run.workers, amp_dtype, run.channels_last)
    return scores


def build_optimizer(groups: list[dict], config: Any,
                    name: str | None = None) -> torch.optim.Optimizer:
    """The optimiser ``name`` (default: the config's) over the model's groups. A group's
    ``weight_decay`` is decoupled under AdamW and an L2 term in the gradient under Adam and
    SGD, as the originals using those optimisers have it."""
    name = name or config.optimizer
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    raise ValueError(f"unknown optimizer {name!r}")


def _stage_optimizer(model: IQAModel, config: Any, steps: int, epoch: int):
    """A fresh optimiser and schedule for the optimiser stage ``epoch`` belongs to, as the
    originals that construct a new optimiser per stage do; returns (name, optimizer, scheduler)."""
    name = model.optimizer_stage(epoch)
    first = epoch
    while first > 0 and model.optimizer_stage(first - 1) == name:
        first -= 1
    optimizer = build_optimizer(model.param_groups(), config, name)
    schedules = _group_schedules(model, optimizer, steps, config, offset=first * steps)
    return name, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)


def _init_from_features(model: IQAModel, data: SplitData, config, run: RunConfig, device,
                        amp_dtype, log: Callable[[str], None]) -> None:
    # only models that override the hook pay for the extra pass over the training images
    if type(model).init_from_features is IQAModel.init_from_features:
        return
    features = predict(model, data.train, config.img_size, config.test_crops, run.seed, device,
                       config.batch_size, run.workers, amp_dtype, run.channels_last, fn="features")
    message = model.init_from_features(features, np.asarray(data.train_labels, dtype=np.float64))
    if message:
        log(message)


def fit(model: IQAModel, data: SplitData, config: Any, run: RunConfig, work_dir: Path,
        resume: bool = False, log: Callable[[str], None] = print) -> FitResult:
    """Train with the engine's loop, evaluating val and test at every epoch end."""
    device = resolve_device(run.device)
    amp_dtype = _amp_dtype(run.amp, device)
    torch.manual_seed(run.seed)
    model.to(device)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    views = ("image", *model.extra_crops())
    train_set = TrainCrops(data.train, data.train_labels, data.train_units, config.img_size,
                           config.train_crops, run.seed, config.hflip, extra_crops=views[1:])
    steps = len(train_set) // config.batch_size
    if steps == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_set)} training "
                         f"crops: lower batch_size")
    if run.max_steps_per_epoch:
        steps = min(steps, run.max_steps_per_epoch)
    if 0 < config.epochs <= config.warmup_epochs:
        # a warning, not a refusal: short runs at a low lr are legitimate probes
        log(f"warning: warmup_epochs {config.warmup_epochs:g} >= epochs {config.epochs}: the "
            f"whole run is linear warm-up and the lr never reaches {config.lr:g}; set "
            f"warmup_epochs below epochs")
    # built before on_epoch_start(0), so a model that freezes parts there still lists them
    optimizer_name, optimizer, scheduler = _stage_optimizer(model, config, steps, 0)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step_fn = torch.compile(model) if run.compile else model
    result, start_epoch = FitResult(precision=_DTYPE_NAMES[amp_dtype]), 0
    checkpoint_path = work_dir / "checkpoint.pt"
    preds: dict[str, list] = {"val": [], "test": []}
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if not isinstance(state, dict):
            raise CheckpointError(f"{checkpoint_path} is not a bench checkpoint")
        if state.get("model") != model.name or state.get("config") != _weights(model, config, 0)["config"]:
            raise CheckpointError(f"{checkpoint_path} belongs to model {state.get('model')!r} with "
                                  f"another config; cannot resume {model.name} from it")
        if any(key not in state for key in RESUME_KEYS):
            raise CheckpointError(f"{checkpoint_path} holds weights only, no training state to "
                                  f"resume from: rerun with --force to start over")
        model.load_state_dict(state["state_dict"])
        # the history counts the finished epochs whatever numbering the checkpoint used
        start_epoch = len(state["history"])
        if model.optimizer_stage(start_epoch - 1) != optimizer_name:
            optimizer_name, optimizer, scheduler = _stage_optimizer(model, config, steps,
                                                                    start_epoch - 1)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        model.load_train_state(state.get("train_state", {}))
        torch.set_rng_state(state["rng"])
        result.history = state["history"]
        preds = {k: [np.asarray(v, dtype=np.float64) for v in state["preds"][k]] for k in preds}
        result.train_s, result.eval_s = state["train_s"], state["eval_s"]
        log(f"resuming after epoch {start_epoch} from {checkpoint_path}")
    if start_epoch == 0:
        tic = time.perf_counter()
        _init_from_features(model, data, config, run, device, amp_dtype, log)
        result.train_s += time.perf_counter() - tic
    label_range = float(np.ptp(data.train_labels)) if len(data.train_labels) else 1.0
    progress = _progress(run.progress)
    for epoch in range(start_epoch, config.epochs):
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch)
        if model.optimizer_stage(epoch) != optimizer_name:
            optimizer_name, optimizer, scheduler = _stage_optimizer(model, config, steps, epoch)
        train_set.set_epoch(epoch)
        loader = _loader(train_set, config.batch_size, run.workers, run.seed * 100003 + epoch, True)
        model.train()
        tic, sums = time.perf_counter(), {}
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}")
        for step_in_epoch, batch in enumerate(loader):
            if step_in_epoch >= steps:
                break
            batch.update({view: _to_input(batch[view], device, run.channels_last) for view in views})
            batch = {k: v.to(device) for k, v in batch.items()}
            ctx = TrainContext(epoch, epoch * steps + step_in_epoch, steps, label_range, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                terms = step_fn.loss(batch, ctx) if run.compile else model.loss(batch, ctx)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step_in_epoch + 1}; "
                    f"the last good checkpoint is {checkpoint_path if checkpoint_path.is_file() else 'none (first epoch)'}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for key, value in terms.items():  # a term absent from a step is not a zero there
                total, seen = sums.get(key, (0.0, 0))
                sums[key] = (total + float(value.detach()), seen + 1)
            bar.set_postfix(loss=f"{sums['loss'][0] / sums['loss'][1]:.4g}")
            bar.update(1)
        bar.close()
        result.train_s += time.perf_counter() - tic
        tic = time.perf_counter()
        scores = _evaluate(model, data, config, run, device, amp_dtype)
        result.eval_s += time.perf_counter() - tic
        entry = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                 "train": {k: total / seen for k, (total, seen) in sums.items()},
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
            **_weights(model, config, epoch + 1), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "train_state": model.train_state(), "rng": torch.get_rng_state(),
            "history": result.history, "preds": {k: [torch.tensor(v) for v in preds[k]] for k in preds},
            "train_s": result.train_s, "eval_s": result.eval_s})
    result.predictions = {k: np.stack(v) if v else np.zeros((0, 0)) for k, v in preds.items()}
    result.selection = select_epochs(result.history, type(model).paper_selection)
    return result


def _weights(model: IQAModel, config: Any, epoch: int) -> dict:
    from benchmark.models import config_to_dict

    return {"model": model.name, "config": config_to_dict(config), "epoch": epoch,
            "state_dict": model.state_dict()}


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    return lambda **kwargs: tqdm(disable=not enabled, leave=False, **kwargs)

"""One optimisation step and the per-epoch loss tally, shared by ``engine.fit`` and
``bench profile`` so the figure a user reads is the step the runs take.

Nothing here waits for the device: the loss terms are summed where they were computed and
a non-finite loss is remembered there too (:class:`LossTally`); the engine reads both back
every ``RunConfig.sync_every`` steps and at the epoch's end, in one transfer each time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from benchmark.models import IQAModel, TrainContext
from benchmark.recipe import Recipe, Stage

__all__ = ["Trainer", "LossTally", "amp_dtype", "DTYPE_NAMES", "to_input", "build_optimizer",
           "stage_groups", "stage_optimizer", "lr_factor", "compiled_graphs"]


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if amp in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"unknown amp mode {amp!r} (auto, bf16, fp16, off)")


DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


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


def _schedule(steps: int, config: Any, offset: int = 0) -> Callable[[int], float]:
    """The recipe's lr multiplier for an optimiser that took over at global step ``offset``
    (a stage's fresh optimiser counts its own steps from 0)."""
    return lambda step: lr_factor(step + offset, steps, config)


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True).float().div_(255.0)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


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


def stage_groups(model: IQAModel, stage: Stage,
                 thawed: list[torch.nn.Parameter]) -> tuple[list[dict], list[torch.nn.Parameter]]:
    """The optimiser groups of ``stage`` and the parameters it freezes. ``thawed`` (what the
    previous stage froze) trains again first, so :meth:`IQAModel.param_groups` lists it."""
    for parameter in thawed:
        parameter.requires_grad_(True)
    groups, frozen = [], []
    for group in model.param_groups():
        part = group.get("part", "")
        if part in stage.frozen:
            frozen += group["params"]
        else:
            groups.append({**group, "lr": stage.lr.get(part, group["lr"])})
    for parameter in frozen:
        parameter.requires_grad_(False)
    return groups, frozen


def stage_optimizer(model: IQAModel, config: Any, recipe: Recipe, steps: int, epoch: int,
                    thawed: list[torch.nn.Parameter]):
    """A fresh optimiser and schedule for the recipe stage ``epoch`` belongs to, as the
    originals that construct a new optimiser per stage do; returns (stage index, optimizer,
    scheduler, the parameters the stage froze)."""
    index, first = recipe.stage_of(epoch)
    stage = recipe.stages[index]
    groups, frozen = stage_groups(model, stage, thawed)
    optimizer = build_optimizer(groups, config, stage.optimizer)
    schedule = _schedule(steps, config, offset=first * steps)
    return index, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), frozen


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@dataclass
class Trainer:
    """What a training step needs. ``optimizer``, ``scheduler``, ``stage`` and ``frozen``
    are replaced at each new stage of ``recipe`` (:meth:`enter_stage`); ``loss_fn`` is the
    model's objective, compiled when the run asks for it (compiling the module would leave
    ``model.loss`` uncompiled)."""

    model: IQAModel
    loss_fn: Callable[[dict, TrainContext], dict]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    clip_grad: float
    views: tuple[str, ...]
    device: torch.device
    channels_last: bool
    recipe: Recipe
    config: Any
    steps: int
    stage: int
    frozen: list[torch.nn.Parameter]

    @classmethod
    def build(cls, model: IQAModel, config: Any, run: Any, device: torch.device,
              steps: int) -> "Trainer":
        """The trainer of a run, in its recipe's first stage."""
        recipe = model.recipe(config)
        stage, optimizer, scheduler, frozen = stage_optimizer(model, config, recipe, steps, 0, [])
        dtype = amp_dtype(run.amp, device)
        loss_fn = torch.compile(model.loss) if run.compile else model.loss
        return cls(model, loss_fn, optimizer, scheduler,
                   torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
                   dtype, config.clip_grad, ("image", *model.extra_crops()), device,
                   run.channels_last, recipe, config, steps, stage, frozen)

    def enter_stage(self, epoch: int) -> None:
        """Build the optimiser of the stage ``epoch`` belongs to, unless it is the current."""
        if self.recipe.stage_of(epoch)[0] != self.stage:
            self.stage, self.optimizer, self.scheduler, self.frozen = stage_optimizer(
                self.model, self.config, self.recipe, self.steps, epoch, self.frozen)

    def to_device(self, batch: dict) -> dict:
        on_device = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        on_device.update({view: to_input(batch[view], self.device, self.channels_last)
                          for view in self.views})
        return on_device

    def step(self, batch: dict, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """One update on a batch already on the device; the loss terms, detached, on it."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            terms = self.loss_fn(batch, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        if self.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {key: value.detach() for key, value in terms.items()}


class LossTally:
    """Sums of the loss terms and the first non-finite loss of an epoch, kept on the device.
    A term absent from a step is not a zero there: each term is averaged over its own steps."""

    def __init__(self, device: torch.device):
        # float64, as the host-side sums were: long epochs of small terms keep their digits
        self._zero = torch.zeros((), dtype=torch.float64, device=device)
        self._first_bad = self._zero - 1.0  # step index of the first non-finite loss, or -1
        self._bad_value = self._zero.clone()
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, terms: dict[str, torch.Tensor], step: int) -> None:
        loss = terms["loss"].double()
        new = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(new, float(step), self._first_bad)
        self._bad_value = torch.where(new, loss, self._bad_value)
        for key, value in terms.items():
            self._sums[key] = self._sums.get(key, self._zero) + value.double()
            self._counts[key] = self._counts.get(key, 0) + 1

    def read(self) -> tuple[int | None, float, dict[str, float]]:
        """(first bad step or None, its loss, the mean of each term): one device sync."""
        values = torch.stack([self._first_bad, self._bad_value, *self._sums.values()]).tolist()
        means = {key: total / self._counts[key] for key, total in zip(self._sums, values[2:])}
        return (None if values[0] < 0 else int(values[0])), values[1], means

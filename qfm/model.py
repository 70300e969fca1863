"""QFM-IQM as reconstructed: Quality-aware Feature Matching on a DEIQT student.

Paper: "Adaptive Feature Selection for No-Reference Image Quality Assessment by Mitigating
Semantic Noise Sensitivity", Li et al., ICML 2024 (arXiv 2312.06158). No code is public and the
method section could not be read, so this is the reconstruction of method.md §3, not a
reproduction: a DEIQT student with a channel gate before its decoder; a temporary memory of
(feature, label, image id) from the student and a frozen DEIQT teacher; semantic noisy matching
(same quality within τ·R, another image, farthest in feature space); the matched feature added
to the anchor's decoder input, whose label the decoder must still predict; feature distillation.
Inference is the gated student alone. ``adv_mode=sam_line`` is NOT FROM THE PAPER (§3.4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.deiqt import DEIQT, backbone_tokens, build_backbone
from benchmark.models import (ConfigError, TrainContext, config_from_dict, config_to_dict,
                              masked_mean, regression_loss)
from qfm.config import QFMConfig
from qfm.gate import ChannelGate
from qfm.matching import Entries, Memory, match
from qfm.perturb import gaussian_noise, perturb, sam_directions, worst_direction
from qfm.presets import GRID_IDS, preset_overrides
from qfm.teacher import (MissingTeacherError, deiqt_config, ema_update, freeze,
                         load_deiqt_teacher)

__all__ = ["QFM", "QFMConfig", "MissingTeacherError"]

_SAM_GRID = (-1.0, -0.5, 0.5, 1.0)


class QFM(DEIQT):
    """A DEIQT student with a channel gate; :meth:`loss` is the QFM-IQM objective."""

    name = "qfm"
    label = "QFM-IQM"
    Config = QFMConfig
    #: the EMA teacher: the paper's frozen DEIQT teacher would need a deiqt run first
    tiny_config = {**DEIQT.tiny_config, "teacher": "ema"}
    paper = "QFM-IQM as reconstructed (Li et al., ICML 2024, arXiv 2312.06158; no public code)"

    def __init__(self, config: QFMConfig):
        super().__init__(config)
        dim, gated = config.decoder_dim, config.gate != "none"
        form = (config.gate, config.gate_init, config.gate_static_gain)
        self.gate = ChannelGate(dim, *form) if gated and config.gate_target in ("cls", "both") \
            else None
        self.patch_gate = ChannelGate(dim, *form) \
            if gated and config.gate_target in ("patch", "both") else None
        # frozen helpers (teacher, ImageNet encoder) held outside the module tree: no gradient,
        # no optimiser group, no saved weights
        self._aux: dict[str, nn.Module] = {}
        self._memory = Memory(config.memory_batches)
        self._imagenet_keys: dict[int, torch.Tensor] = {}

    # -- configuration and prerequisites
    @classmethod
    def resolve_config(cls, values: dict[str, Any]) -> QFMConfig:
        """Expand ``values["preset"]`` (default "full") into overrides; explicit keys win."""
        explicit = {k: v for k, v in values.items() if v is not None}
        preset = GRID_IDS.get(explicit.get("preset", QFMConfig.preset),
                              explicit.get("preset", QFMConfig.preset))
        return config_from_dict(QFMConfig, {**preset_overrides(preset), **explicit,
                                            "preset": preset})

    @classmethod
    def prerequisites(cls, config: QFMConfig) -> list[str]:
        return ["deiqt"] if config.teacher == "deiqt_frozen" and config.uses_teacher() else []

    @classmethod
    def prerequisite_config(cls, config: QFMConfig, needed: str) -> dict[str, Any]:
        """The teacher is a DEIQT of the student's own recipe (attach_teacher checks the keys
        that must agree)."""
        return config_to_dict(deiqt_config(config)) if needed == "deiqt" else {}

    def attach_prerequisites(self, checkpoints: dict[str, Path]) -> None:
        if not self.prerequisites(self.config):
            return
        if "deiqt" not in checkpoints:
            raise MissingTeacherError("no deiqt checkpoint was given")
        self.attach_teacher(load_deiqt_teacher(checkpoints["deiqt"]))

    def attach_teacher(self, teacher: DEIQT) -> None:
        """Use ``teacher`` (frozen here) for distillation and memory; it must match the student."""
        for key in ("backbone", "img_size", "decoder_dim", "label_scale"):
            if getattr(teacher.config, key) != getattr(self.config, key):
                raise ConfigError(f"the teacher's {key} is {getattr(teacher.config, key)!r}, the "
                                  f"student's {getattr(self.config, key)!r}; they must agree")
        self._aux["teacher"] = freeze(teacher).to(self.input_mean.device)

    def _apply(self, fn, recurse=True):  # .to()/.cuda()/.half() reach the frozen helpers too
        super()._apply(fn, recurse)
        for module in getattr(self, "_aux", {}).values():
            module._apply(fn, recurse)
        return self

    # -- inference: the gated student
    def gated(self, cls: torch.Tensor, patches: torch.Tensor,
              gate_from: tuple[torch.Tensor, torch.Tensor] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(G(c)⊙c, G_p(mean P)⊙P, gates); the gates read ``gate_from`` if given (gate_input)."""
        source_cls, source_patches = gate_from if gate_from is not None else (cls, patches)
        gates = []
        if self.gate is not None:
            gates.append(self.gate(source_cls))
            cls = gates[-1] * cls
        if self.patch_gate is not None:
            gates.append(self.patch_gate(source_patches.mean(dim=1)))
            patches = gates[-1].unsqueeze(1) * patches
        return cls, patches, gates

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls, patches, _ = self.gated(tokens[:, 0], tokens[:, 1:])
        return self.decode(cls, patches, pre_logits=pre_logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cls, patches, _ = self.gated(*self.forward_tokens(images))
        return self.decode(cls, patches)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The gated decoder query G(c)⊙c (B, D)."""
        return self.gated(*self.forward_tokens(images))[0]

    # -- training objective (method.md §3.2)
    def loss(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        cfg = self.config
        labels = batch["label"].float().view(-1)
        ids = batch["index"].view(-1).to(labels.device)
        if cfg.teacher == "ema" and self.training and "teacher" in self._aux:
            ema_update(self._aux["teacher"], self, cfg.ema_momentum)
        cls, patches = self.forward_tokens(batch["image"])
        teacher = self._teacher_outputs(batch) if cfg.uses_teacher() else None
        gated_cls, gated_patches, gates = self.gated(cls, patches)
        q = self.decode(gated_cls, gated_patches)
        scale = self._label_unit(ctx)
        zero = q.new_zeros((), dtype=torch.float32)
        terms = {"reg": regression_loss(q / scale, labels / scale, cfg.loss), "adv": zero,
                 "kd": zero, "sens": zero, "gate": zero}
        with torch.no_grad():  # how much the score depends on the (perturbed) CLS path at all
            without_cls = self.decode(torch.zeros_like(gated_cls), gated_patches)
        stats: dict[str, torch.Tensor] = {
            "cls_reliance": (q.detach().float() - without_cls.float()).abs().mean()
            / max(float(ctx.label_range), 1e-12)}
        if cfg.kd_loss != "none":
            terms["kd"] = self._distillation(cls, patches, q / scale, teacher, scale)
        if cfg.adv_mode != "none":
            terms["adv"], terms["sens"], matching = self._adversarial(
                batch["image"], cls, patches, q, labels, ids, teacher, ctx, scale)
            stats.update(matching)
        if gates:
            gate = torch.cat(gates, dim=1).float()
            terms["gate"] = gate.mean()
            stats["gate_mean"] = gate.mean()
            stats["gate_low"] = (gate.mean(dim=0) < 0.5).float().mean()
        total = (terms["reg"] + cfg.lambda_adv * terms["adv"] + cfg.lambda_kd * terms["kd"]
                 + cfg.lambda_sens * terms["sens"] + cfg.lambda_gate * terms["gate"])
        return {"loss": total, **terms,
                **{f"stat_{k}": v.detach().float() for k, v in stats.items()}}

    def extra_crops(self) -> tuple[str, ...]:
        return ("teacher_image",) if self.config.teacher_input == "new_crop" else ()

    def _teacher_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        cfg = self.config
        if "teacher" not in self._aux:
            if cfg.teacher != "ema":
                raise MissingTeacherError(detail="no teacher was attached")
            self._attach_ema_teacher()
        key = "teacher_image" if cfg.teacher_input == "new_crop" else "image"
        if key not in batch:
            raise ConfigError("teacher_input=new_crop needs the loader to supply "
                              "batch['teacher_image'], a second independent crop")
        teacher = self._aux["teacher"]
        images = batch[key]
        if teacher.input_mean.device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            cls, patches = teacher.forward_tokens(images)
            score = teacher.decode(cls, patches) if cfg.kd_loss == "score" else None
        return {"cls": cls, "patches": patches, "score": score}

    def _attach_ema_teacher(self) -> None:
        teacher = DEIQT(deiqt_config(self.config, pretrained="false"))
        own = self.state_dict()
        teacher.load_state_dict({key: own[key] for key in teacher.state_dict()})
        self.attach_teacher(teacher)

    def _label_unit(self, ctx: TrainContext) -> float:
        """What label-space losses are divided by: R under loss_scale=label_range, else 1."""
        if self.config.loss_scale == "label_range" and ctx.label_range > 0:
            return float(ctx.label_range)
        return 1.0

    def _distillation(self, cls, patches, q, teacher, scale: float) -> torch.Tensor:
        """L_kd; ``q`` is the student's score already divided by ``scale``."""
        kind = self.config.kd_loss
        if kind == "cos_cls":
            return (1.0 - F.cosine_similarity(cls.float(), teacher["cls"].float(), dim=1)).mean()
        if kind == "score":
            return regression_loss(q, teacher["score"] / scale, "smoothl1")
        kd = F.mse_loss(cls.float(), teacher["cls"].float())
        if kind == "mse_cls_patch":
            kd = kd + F.mse_loss(patches.float(), teacher["patches"].float())
        return kd

    def _keys(self, images, cls, ids, teacher) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Match-space vectors of this batch: (student/anchor keys, teacher-entry keys)."""
        space = self.config.match_space
        if space == "teacher_cls":
            return teacher["cls"].float(), teacher["cls"].float()
        if space == "frozen_imagenet_cls":
            keys = self._frozen_imagenet_keys(images, ids)
            return keys, keys
        own = self.config.teacher_key == "own" and teacher is not None
        return cls.detach().float(), teacher["cls"].float() if own else cls.detach().float()

    @torch.no_grad()
    def _frozen_imagenet_keys(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The fixed pretrained backbone's CLS, computed from the first crop seen of each image."""
        if "imagenet" not in self._aux:
            self._aux["imagenet"] = freeze(build_backbone(self.config)).to(images.device)
        id_list = ids.tolist()
        first = {image: row for row, image in reversed(list(enumerate(id_list)))}
        new = [(image, row) for image, row in first.items() if image not in self._imagenet_keys]
        if new:
            rows = torch.tensor([row for _, row in new], device=images.device)
            cls, _ = backbone_tokens(self._aux["imagenet"], self.normalize(images[rows]))
            for (image, _), key in zip(new, cls.float()):
                self._imagenet_keys[image] = key
        return torch.stack([self._imagenet_keys[image] for image in id_list]).to(images.device)

    def _entries(self, cls, patches, labels, ids, teacher, keys) -> list[Entries]:
        cfg = self.config
        with_patches = cfg.perturb_target != "cls"
        student_keys, teacher_keys = keys
        entries = []
        if "student" in cfg.memory_sources:
            features = cls if cfg.noise_grad else cls.detach()
            entries.append(Entries(features, student_keys, labels, ids,
                                   torch.zeros_like(ids, dtype=torch.bool),
                                   patches.detach() if with_patches else None))
        if "teacher" in cfg.memory_sources:
            entries.append(Entries(teacher["cls"].to(cls.dtype), teacher_keys, labels, ids,
                                   torch.ones_like(ids, dtype=torch.bool),
                                   teacher["patches"].to(patches.dtype) if with_patches else None))
        return entries

    def _adversarial(self, images, cls, patches, q, labels, ids, teacher, ctx, scale: float):
        """(L_adv or L_sam, L_sens, statistics) over the perturbed anchors: those with a
        partner, each kept with probability perturb_prob."""
        cfg = self.config
        if cfg.adv_mode == "gaussian":
            valid, stats = torch.ones_like(labels, dtype=torch.bool), {}
            noise = (gaussian_noise(cls.detach()), gaussian_noise(patches.detach()), None)
        else:
            valid, noise, stats = self._partners(images, cls, patches, labels, ids, teacher, ctx)
        # an unperturbed anchor's noisy pass is its clean pass: counting it would add L_reg twice.
        # Every anchor takes the noisy pass and the unperturbed ones are masked out of the
        # means: selecting the perturbed rows would read the mask on the host every step.
        perturbed = valid & (torch.rand(valid.shape, device=valid.device) < cfg.perturb_prob)
        stats["perturbed"] = perturbed.float().mean()
        noise_cls, noise_patches, sam_partners = noise
        gate_from = (cls, patches) if cfg.gate_input == "clean" else None
        if cfg.adv_mode == "sam_line":
            partners, partner_valid = sam_partners
            noisy_cls = self._sam_point(cls, patches, labels / scale, partners, partner_valid,
                                        scale, gate_from)
            noisy_patches = patches
        else:
            noisy_cls, noisy_patches = self._noisy(cls, patches, noise_cls, noise_patches)
        q_noisy = self.decode(*self.gated(noisy_cls, noisy_patches, gate_from)[:2])
        adversarial = masked_mean(
            regression_loss(q_noisy / scale, labels / scale, cfg.loss, reduction="none"),
            perturbed)
        sensitivity = masked_mean((q_noisy.float() - q.detach().float()).abs().view(-1),
                                  perturbed) / scale
        return adversarial, sensitivity, stats

    def _partners(self, images, cls, patches, labels, ids, teacher, ctx):
        """Semantic noisy matching against the memory: (valid (B,), (noise CLS, noise patches,
        (all sam_dirs partners, their validity)), statistics)."""
        cfg = self.config
        keys = self._keys(images, cls, ids, teacher)
        current = self._entries(cls, patches, labels, ids, teacher, keys)
        memory = self._memory.gather(current)
        if self.training:
            self._memory.push(current)
        features, bank = memory.features, memory.patches
        if cfg.noise_center == "memory_mean":  # keep what sets the partner apart from the memory
            features = features - features.mean(dim=0, keepdim=True)
            bank = None if bank is None else bank - bank.mean(dim=0, keepdim=True)
        control = cfg.adv_mode == "random_partner"  # C2: any other image, at random
        found = match(keys[0], labels, ids, memory,
                      float("inf") if control else cfg.tau * float(ctx.label_range),
                      metric=cfg.match_metric, mode="random" if control else cfg.match_select,
                      fallback=cfg.match_fallback, exclude_same_image=cfg.exclude_same_image,
                      count=cfg.sam_dirs if cfg.adv_mode == "sam_line" else 1,
                      topm=cfg.match_topm, temperature=cfg.match_temperature)
        valid, partner = found.valid[:, 0], found.index[:, 0]
        stats = {"fallback": found.fallback.float().mean(), "matched": valid.float().mean(),
                 "memory_size": labels.new_tensor(float(len(memory)))}
        # over the matched anchors (a mean over none counts as 0), never reading `valid`
        stats["match_dy"] = masked_mean((labels - memory.labels[partner]).abs(), valid)
        stats["match_cosdist"] = 1.0 - masked_mean(
            F.cosine_similarity(keys[0], memory.keys[partner], dim=1), valid)
        stats["partner_from_teacher"] = masked_mean(memory.teacher[partner].float(), valid)
        noise = (features[partner], None if bank is None else bank[partner],
                 (features[found.index], found.valid))
        return valid, noise, stats

    def _noisy(self, cls, patches, noise_cls, noise_patches):
        """Add the noise to the CLS and/or the patch tokens of the perturbed anchors."""
        cfg = self.config
        if cfg.perturb_target in ("cls", "both"):
            cls = perturb(cls, noise_cls.to(cls.dtype), cfg.perturb_form, cfg.alpha)
        if cfg.perturb_target in ("patch", "both"):
            patches = perturb(patches, noise_patches.to(patches.dtype), cfg.perturb_form,
                              cfg.alpha)
        return cls, patches

    def _sam_point(self, cls, patches, labels, partners, partner_valid, scale: float,
                   gate_from=None) -> torch.Tensor:
        """c + sg(δ*), δ* the worst first-order (or grid) step of radius ρ‖c‖ along the
        direction(s) to the matched partner(s), with the outer pass's gate input and label
        unit (``labels`` already divided by ``scale``). NOT FROM THE PAPER (method.md §3.4)."""
        cfg = self.config
        anchor, fixed_patches = cls.detach().float(), patches.detach()
        if gate_from is not None:
            gate_from = tuple(part.detach() for part in gate_from)
        directions = sam_directions(anchor, partners.detach().float(), partner_valid, cfg.sam_dir)
        radius = cfg.rho * anchor.norm(dim=1, keepdim=True)

        def inner_loss(point: torch.Tensor, reduction: str) -> torch.Tensor:
            score = self.decode(*self.gated(point, fixed_patches, gate_from)[:2]).float()
            return F.smooth_l1_loss(score / scale, labels, reduction=reduction)

        if cfg.sam_inner == "grid":
            with torch.no_grad():
                losses = torch.stack([inner_loss(anchor + e * radius * directions[:, 0], "none")
                                      for e in _SAM_GRID])
                steps = torch.tensor(_SAM_GRID, device=anchor.device)[losses.argmax(dim=0)]
            delta = steps[:, None] * radius * directions[:, 0]
        else:
            with torch.enable_grad():  # one decoder forward/backward on a detached copy of c
                start = anchor.clone().requires_grad_(True)
                (gradient,) = torch.autograd.grad(inner_loss(start, "sum"), start)
            delta = radius * worst_direction(gradient, directions)
        return cls + delta.to(cls.dtype)

    # -- checkpointed training state: memory FIFO, EMA teacher, frozen ImageNet keys
    def train_state(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(self._memory.state())
        if self.config.teacher == "ema" and "teacher" in self._aux:
            state.update({f"ema.{k}": v for k, v in self._aux["teacher"].state_dict().items()})
        if self._imagenet_keys:
            state["imagenet.ids"] = torch.tensor(list(self._imagenet_keys))
            state["imagenet.keys"] = torch.stack(list(self._imagenet_keys.values()))
        return state

    def load_train_state(self, state: dict[str, Any]) -> None:
        self._memory.load_state(state)
        ema = {key[4:]: value for key, value in state.items() if key.startswith("ema.")}
        if ema:
            self._attach_ema_teacher()
            self._aux["teacher"].load_state_dict(ema)
        if "imagenet.ids" in state:
            self._imagenet_keys = dict(zip(state["imagenet.ids"].tolist(), state["imagenet.keys"]))

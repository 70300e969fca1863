"""QFM-IQM's configuration: DEIQT's recipe plus every option of method.md §3.3.

Option names and defaults are the document's; the defaults are the full model (grid row A5).
``adv_mode=sam_line`` and its rho/sam_* settings are NOT FROM THE PAPER (method.md §3.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from baselines.deiqt import DEIQTConfig
from benchmark.models import ConfigError
from qfm.gate import GateForm, GateInit
from qfm.matching import Fallback, Metric, SelectMode
from qfm.perturb import PerturbForm

__all__ = ["QFMConfig"]

_MEMORY_MODES = ("matched", "random_partner", "sam_line")


@dataclass(frozen=True)
class QFMConfig(DEIQTConfig):
    """DEIQT's recipe plus the options of method.md §3.3 (defaults = the full model, A5)."""

    preset: str = "full"  # a qfm.presets name; expanded by QFM.resolve_config, explicit keys win
    # teacher and distillation
    teacher: Literal["deiqt_frozen", "ema", "none"] = "deiqt_frozen"
    #: new_crop: the loader's batch["teacher_image"]
    teacher_input: Literal["same_crop", "new_crop"] = "same_crop"
    ema_momentum: float = 0.999  # teacher=ema, per step
    kd_loss: Literal["mse_cls", "mse_cls_patch", "cos_cls", "score", "none"] = "mse_cls"
    lambda_kd: float = 1.0
    # memory and matching
    memory_sources: Literal["student+teacher", "student", "teacher"] = "student+teacher"
    memory_batches: int = 4  # K previous batches kept besides the current one
    match_space: Literal["student_cls", "teacher_cls", "frozen_imagenet_cls"] = "student_cls"
    # (frozen_imagenet_cls caches one key per image in a dict, so it reads the batch's ids
    # on the host every step: the one QFM-IQM option that does)
    # shared: teacher entries are keyed in the match space like every other entry (the
    # student's CLS of the same sample under student_cls); own: by the teacher's CLS, which
    # mixes two networks' spaces under student_cls (kept to measure what that did)
    teacher_key: Literal["shared", "own"] = "shared"
    match_metric: Metric = "cosine"
    tau: float = 0.05  # label tolerance as a fraction of the training label range R
    exclude_same_image: bool = True
    match_select: SelectMode = "farthest"
    match_topm: int = 4
    match_temperature: float = 0.1
    match_fallback: Fallback = "nearest_label"
    # perturbation; sam_line is NOT FROM THE PAPER (method.md §3.4)
    adv_mode: Literal["matched", "sam_line", "gaussian", "random_partner", "none"] = "matched"
    perturb_target: Literal["cls", "patch", "both"] = "cls"
    perturb_form: PerturbForm = "add_normmatched"
    alpha: float = 1.0
    perturb_prob: float = 1.0
    noise_grad: bool = False  # False: stop-gradient through the matched noise
    #: memory_mean: n − the mean of the searched memory
    noise_center: Literal["none", "memory_mean"] = "none"
    # gate
    gate: GateForm | Literal["none"] = "se_mlp"
    gate_init: GateInit = "sigmoid_bias3"  # sigmoid_bias3: g ≈ 0.95; 2sigmoid_zero: g = 1
    gate_input: Literal["self", "clean"] = "self"  # clean: G(c) gates both c and c̃
    gate_target: Literal["cls", "patch", "both"] = "cls"
    gate_static_gain: float = 100.0  # gate=static: logit = start + gain·w (see qfm.gate)
    # loss weights; label_range: the label-space terms (reg, adv, sens, kd=score) are taken on
    # labels and predictions divided by the training label range R, so a weight means the
    # same on a 0–1 and a 0–100 dataset; raw: on the labels as given (DEIQT's loss exactly)
    loss_scale: Literal["label_range", "raw"] = "label_range"
    lambda_adv: float = 1.0  # also weighs L_sam under sam_line
    lambda_sens: float = 0.0
    lambda_gate: float = 0.0
    # sam_line (NOT FROM THE PAPER): worst case on the line(s) through the matched noise
    rho: float = 0.5
    sam_dir: Literal["noise", "diff"] = "noise"
    sam_inner: Literal["first_order", "grid"] = "first_order"
    sam_dirs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher == "none" and self.uses_teacher():
            raise ConfigError("teacher=none, but kd_loss, memory_sources or match_space needs a "
                              "teacher (set kd_loss=none, memory_sources=student, "
                              "match_space=student_cls)")
        if self.adv_mode == "sam_line" and self.perturb_target != "cls":
            raise ConfigError("adv_mode=sam_line perturbs the CLS only; set perturb_target=cls")
        if self.sam_dirs < 1 or (self.sam_dirs > 1 and (self.sam_inner == "grid" or
                                                       self.match_select != "farthest")):
            raise ConfigError("sam_dirs > 1 needs sam_inner=first_order and match_select=farthest")
        if self.noise_center != "none" and not self.uses_memory():
            raise ConfigError("noise_center=memory_mean centres memory features; it needs "
                              "adv_mode matched, random_partner or sam_line")
        if self.tau < 0 or self.memory_batches < 0 or not 0 <= self.perturb_prob <= 1 \
                or not 0 <= self.ema_momentum <= 1:
            raise ConfigError("tau and memory_batches must be >= 0, perturb_prob and "
                              "ema_momentum within [0, 1]")

    def uses_memory(self) -> bool:
        return self.adv_mode in _MEMORY_MODES

    def uses_teacher(self) -> bool:
        return self.kd_loss != "none" or (self.uses_memory() and (
            "teacher" in self.memory_sources or self.match_space == "teacher_cls"))

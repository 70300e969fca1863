"""The channel gate G between the backbone output and the decoder (method.md §3.2 step 7).

The gate is inferred from the paper's title ("adaptive feature selection") and one secondary
summary's "channel-wise gating"; its form and initialisation are ours.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

__all__ = ["ChannelGate", "GateForm", "GateInit", "GATE_FORMS", "GATE_INITS"]

GateForm = Literal["se_mlp", "static"]
GateInit = Literal["sigmoid_bias3", "2sigmoid_zero"]
GATE_FORMS, GATE_INITS = get_args(GateForm), get_args(GateInit)


class ChannelGate(nn.Module):
    """Per-channel weights g(z) for a (B, D) input.

    ``se_mlp``: g = σ(W₂·GELU(W₁·LN(z)) + b₂), hidden D/4 (74,976 parameters at D = 384).
    ``static``: g = σ(b + k·w), one learned vector w (zero at start) with gain k, independent of
    the input. Adam moves a parameter by about lr per step whatever its gradient's size, and
    DEIQT's schedule sums to Σ lr ≈ 0.05 over a run, so σ(w) alone could not leave its start;
    the gain (``static_gain``, default 100) lets the logit travel ≈ k·Σ lr ≈ 5.
    Init ``sigmoid_bias3``: W₂ = 0, b₂ = 3 (b = 3), so g ≈ 0.953 and the model starts ≈ DEIQT;
    ``2sigmoid_zero``: g = 2σ(·) with W₂ = 0, b₂ = 0 (b = 0), the exact identity at start.
    """

    def __init__(self, dim: int, form: str = "se_mlp", init: str = "sigmoid_bias3",
                 static_gain: float = 100.0):
        super().__init__()
        if form not in GATE_FORMS:
            raise ValueError(f"unknown gate {form!r} ({', '.join(GATE_FORMS)})")
        if init not in GATE_INITS:
            raise ValueError(f"unknown gate_init {init!r} ({', '.join(GATE_INITS)})")
        self.form, self.scale = form, 2.0 if init == "2sigmoid_zero" else 1.0
        start = 0.0 if init == "2sigmoid_zero" else 3.0
        if form == "static":
            self.start, self.gain = start, static_gain
            self.weight = nn.Parameter(torch.zeros(dim))
            return
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim // 4)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim // 4, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, start)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.form == "static":
            logit = (self.start + self.gain * self.weight).expand(z.shape[0], -1)
        else:
            logit = self.fc2(self.act(self.fc1(self.norm(z))))
        return self.scale * torch.sigmoid(logit)

"""Adding semantic noise to an anchor's decoder input (method.md §3.2 step 6 and §3.4).

All functions work row-wise on (B, D) CLS vectors or (B, N, D) patch tokens; norms are taken
over everything but the batch axis (the Frobenius norm for patch tokens).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

__all__ = ["PerturbForm", "PERTURB_FORMS", "perturb", "gaussian_noise", "sam_directions",
           "worst_direction"]

PerturbForm = Literal["add_normmatched", "add_raw", "interp"]
PERTURB_FORMS = get_args(PerturbForm)
#: a direction whose part outside the earlier ones is below this share of its norm adds nothing
_DEPENDENT = 1e-5


def _row_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def perturb(x: torch.Tensor, noise: torch.Tensor, form: str = "add_normmatched",
            alpha: float = 1.0) -> torch.Tensor:
    """add_normmatched: x + α‖x‖·n/‖n‖; add_raw: x + α·n; interp: (1 − α)·x + α·n."""
    if form == "add_normmatched":
        return x + alpha * _row_norm(x) / _row_norm(noise).clamp_min(1e-12) * noise
    if form == "add_raw":
        return x + alpha * noise
    if form == "interp":
        return (1.0 - alpha) * x + alpha * noise
    raise ValueError(f"unknown perturb_form {form!r} ({', '.join(PERTURB_FORMS)})")


def gaussian_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Isotropic noise with each row's norm equal to that row of ``x`` (control C1)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return noise * _row_norm(x) / _row_norm(noise).clamp_min(1e-12)


def sam_directions(anchor: torch.Tensor, partners: torch.Tensor, valid: torch.Tensor,
                   mode: str = "noise") -> torch.Tensor:
    """Unit directions (B, m, D) toward m partners (B, m, D); zero where ``valid`` is False.

    noise: u = n/‖n‖; diff: u = (n − c)/‖n − c‖.
    """
    if mode == "noise":
        direction = partners
    elif mode == "diff":
        direction = partners - anchor.unsqueeze(1)
    else:
        raise ValueError(f"unknown sam_dir {mode!r} (noise, diff)")
    unit = direction / direction.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return unit * valid.unsqueeze(2).to(unit.dtype)


def worst_direction(gradient: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The unit vector in span(directions) that raises the loss most to first order, (B, D).

    It is Π_U∇/‖Π_U∇‖ with Π_U the projection onto the span of the m directions, taken through
    an orthonormal basis (a QR factorisation by modified Gram–Schmidt, each step done twice).
    A zero (invalid) or dependent direction adds no basis vector. Unlike the pseudo-inverse of
    the Gram matrix, whose conditioning is the square of the directions', nearly parallel
    partners keep their whole span in fp32. For m = 1 this is sign(⟨∇, u⟩)·u.
    """
    with torch.autocast(gradient.device.type, enabled=False):
        columns = directions.float().unbind(1)  # m × (B, D)
        basis: list[torch.Tensor] = []
        for column in columns:
            residual = column
            for _ in range(2):  # "twice is enough" re-orthogonalisation
                for unit in basis:
                    residual = residual - (residual * unit).sum(1, keepdim=True) * unit
            norm = residual.norm(dim=1, keepdim=True)
            keep = norm > _DEPENDENT * column.norm(dim=1, keepdim=True).clamp_min(1e-30)
            basis.append(torch.where(keep, residual / norm.clamp_min(1e-30), 0.0))
        grad = gradient.float()
        projected = sum((grad * unit).sum(1, keepdim=True) * unit for unit in basis)
    return projected / projected.norm(dim=1, keepdim=True).clamp_min(1e-12)

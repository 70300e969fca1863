"""Adding semantic noise to an anchor's decoder input (method.md §3.2 step 6 and §3.4).

All functions work row-wise on (B, D) CLS vectors or (B, N, D) patch tokens; norms are taken
over everything but the batch axis (the Frobenius norm for patch tokens).
"""

from __future__ import annotations

import torch

__all__ = ["PERTURB_FORMS", "perturb", "gaussian_noise", "sam_directions", "worst_direction"]

PERTURB_FORMS = ("add_normmatched", "add_raw", "interp")


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

    It is Π_U∇/‖Π_U∇‖ with Π_U the projection onto the span of the m directions; the
    pseudo-inverse of the Gram matrix stands in for a QR basis so that zero (invalid) directions
    drop out. For m = 1 this is sign(⟨∇, u⟩)·u.
    """
    with torch.autocast(gradient.device.type, enabled=False):  # pinv has no half kernels
        basis = directions.float().transpose(1, 2)  # (B, D, m)
        gram = basis.transpose(1, 2) @ basis
        coefficients = torch.linalg.pinv(gram) @ (basis.transpose(1, 2)
                                                  @ gradient.float().unsqueeze(2))
        projected = (basis @ coefficients).squeeze(2)
    return projected / projected.norm(dim=1, keepdim=True).clamp_min(1e-12)

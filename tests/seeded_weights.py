"""The seeded weight fill of the golden-output tests (pyiqa's ports, the official DEIQT).

The rule is part of the stored fixtures' meaning: changing it changes the expected numbers.
"""

from __future__ import annotations

import torch


def fill_seeded(module: torch.nn.Module, seed: int, gain: float = 1.0) -> None:
    """Seeded weights that keep activations O(1) through deep stacks, in state-dict order:
    parameters with two or more axes N(0, gain/fan_in) (``gain=2`` for plain ReLU stacks such
    as VGG, whose signal the default halves at every layer), 1-D weights (norm scales) 1 + N(0, 0.1²),
    other 1-D parameters N(0, 0.1²); BatchNorm running means N(0, 0.1²) and variances
    U(0.5, 1.5). Other buffers (fixed filters, masks, indices) keep their computed values."""
    generator = torch.Generator().manual_seed(seed)
    parameters = {name for name, _ in module.named_parameters()}
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                continue
            if name not in parameters and not name.endswith("running_mean"):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if tensor.ndim >= 2:
                tensor.copy_(noise * gain ** 0.5 / tensor[0].numel() ** 0.5)
            elif name.endswith("weight"):
                tensor.copy_(1 + 0.1 * noise)
            else:
                tensor.copy_(0.1 * noise)

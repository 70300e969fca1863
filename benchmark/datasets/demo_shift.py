"""Demo-shift: the demo's photographs seen closer and distorted at other levels, a second
synthetic set for the demo's cross-dataset stage.

Models trained on ``demo`` are scored on all of it (``suites.demo.cross``), as a model trained
on KonIQ is scored on LIVEC. What shifts: each photograph is viewed at twice the demo's zoom
(the central half of its shorter side, resized to 96x96: finer texture, other framing), the
noise fields are drawn from another seed, and every distortion runs at four levels that lie
between the demo's (geometric means of neighbouring demo levels; pixelation at integer blocks
3, 4, 5 and 7). What does not: the same 19 scenes, the same five distortion types and the same
SSIM pseudo-MOS (its mean over photographs at each (distortion, level)). So a score here
measures robustness to a change of scale and of distortion strength, not to unseen content,
and is a pipeline check, not an image-quality result. Generation, determinism and licences
are the demo's (:mod:`benchmark.datasets.demo`).
"""

from __future__ import annotations

from benchmark.datasets.demo import (
    DISTORTIONS,
    REFERENCES,
    SEED,
    Demo,
    Distortion,
)

__all__ = ["DemoShift", "SHIFTED_DISTORTIONS"]

_BETWEEN = {
    "blur": (0.77, 1.26, 2.0, 3.16),  # Pillow GaussianBlur radius
    "noise": (8.5, 15.5, 25.3, 40.0),  # sigma, 8-bit units
    "jpeg": (49, 25, 12, 6),  # Pillow quality
    "contrast": (0.64, 0.47, 0.33, 0.22),  # ImageEnhance factor
    "pixelate": (3, 4, 5, 7),  # block size in pixels (integers only)
}
SHIFTED_DISTORTIONS = tuple(Distortion(d.name, d.apply, _BETWEEN[d.name]) for d in DISTORTIONS)


class DemoShift(Demo):
    """The demo's scenes at twice the zoom and in-between levels; see the module docstring."""

    name = "demo-shift"
    title = "Demo-shift (the demo's photographs at 2x zoom, in-between levels, SSIM pseudo-MOS)"
    label = "Demo-shift"
    expected_images = len(REFERENCES) * len(SHIFTED_DISTORTIONS) * 4
    zoom = 2.0
    seed = SEED + 1
    view = "the central half of each, centre-cropped to a square"
    distortions = SHIFTED_DISTORTIONS

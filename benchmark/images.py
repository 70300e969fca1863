"""Reading the images a user supplied: a broken or oversized file is one line naming it.

Pillow refuses images whose header claims more pixels than ``Image.MAX_IMAGE_PIXELS``
(a decompression bomb: a few bytes that expand to gigabytes). ``bench`` sets that limit
once per process (:func:`set_pixel_limit`, from ``bench --max-pixels`` or
``$BENCH_MAX_PIXELS``), so every decode — prepare, verify, training, ``bench score`` — honours
the same limit, which a user with genuinely huge images can raise.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from benchmark.errors import DatasetError

__all__ = ["ImageError", "read_image", "set_pixel_limit"]


class ImageError(DatasetError):
    """An image that does not decode or exceeds the pixel limit; names the file."""


def set_pixel_limit(max_pixels: int) -> None:
    """Refuse images of more than ``max_pixels`` pixels in this process (Pillow only warns
    between one and two times its limit; here that is refused too)."""
    Image.MAX_IMAGE_PIXELS = int(max_pixels)
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def read_image(path: Path) -> Image.Image:
    """The fully decoded image at ``path`` (truncated data fails here, not later)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageError(
            f"{path}: {pixels}, over the limit of {Image.MAX_IMAGE_PIXELS:,} (a decompression "
            f"bomb?); if it is genuine, raise the limit with bench --max-pixels N or "
            f"$BENCH_MAX_PIXELS") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: cannot decode image ({error})") from None

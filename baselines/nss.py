"""Natural-scene-statistics features of BRISQUE (Mittal, Moorthy, Bovik, IEEE TIP 2012).

Per scale (the image, then the image halved by antialiased bicubic resampling):

- the MSCN coefficients ``(I − μ) / (σ + 1)`` with μ, σ the local mean and standard deviation
  under a 7×7 Gaussian window of σ = 7/6 (the image on the 0–255 grey scale);
- a generalised Gaussian fit of the MSCN coefficients: (shape, variance);
- asymmetric generalised Gaussian fits of the products of neighbouring MSCN coefficients in four
  orientations (horizontal, vertical, main diagonal, anti-diagonal): (shape, mean, left variance,
  right variance) each;

giving 2 × (2 + 4 × 4) = 36 features in the order of the paper's Table I.

Both fits use the paper's moment matching: the shape is the point of the grid 0.200, 0.201, …,
10.000 whose moment ratio lies nearest the sample's.

Choices where the paper leaves the detail open (the authors' MATLAB release differs on the first
two; neither changes the features of an image's interior):

- the local statistics mirror the image at its border (scipy's ``reflect``) instead of padding
  with zeros, so the border does not add a frame of spurious large coefficients;
- the neighbour products pair only pixels that are neighbours (no wrap-around at the border);
- grey is ITU-R BT.601 luma computed in floating point (no rounding to uint8).

Degenerate input: a sample whose mean square is below ``DEGENERATE_POWER`` (e.g. the MSCN
coefficients of a constant image, which are zero up to rounding) has no defined shape; its fit is
that of the limit of Gaussian noise whose variance goes to zero: shape 2, mean 0, all variances 0.
Features are therefore always finite.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from scipy import ndimage, special

__all__ = [
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "DEGENERATE_POWER",
    "FeatureCache",
    "grey",
    "mscn",
    "fit_ggd",
    "fit_aggd",
    "pair_products",
    "halve",
    "brisque_features",
    "feature_matrix",
]

#: bumped whenever the features of an image change, so cached vectors are never reused wrongly
FEATURE_VERSION = "1"
WINDOW_SIZE = 7
WINDOW_SIGMA = 7 / 6
STABILITY = 1.0  # the C of the MSCN denominator, on the 0–255 scale
DEGENERATE_POWER = 1e-12
#: neighbour offsets (row, column) of the four orientations, in the paper's order
ORIENTATIONS = {"h": (0, 1), "v": (1, 0), "d1": (1, 1), "d2": (1, -1)}
MIN_SIDE = 16

_SHAPE_GRID = np.arange(200, 10001) / 1000.0
# Γ(1/γ)Γ(3/γ)/Γ(2/γ)² = E[x²]/E[|x|]² of a zero-mean GGD of shape γ; strictly decreasing in γ
_GGD_RATIO = np.exp(special.gammaln(1 / _SHAPE_GRID) + special.gammaln(3 / _SHAPE_GRID)
                    - 2 * special.gammaln(2 / _SHAPE_GRID))
_AGGD_RATIO = 1.0 / _GGD_RATIO  # the AGGD fit matches E[|x|]²/E[x²] instead


def _names() -> tuple[str, ...]:
    names = []
    for scale in (1, 2):
        names += [f"s{scale}_mscn_shape", f"s{scale}_mscn_var"]
        for key in ORIENTATIONS:
            names += [f"s{scale}_{key}_{part}" for part in ("shape", "mean", "lvar", "rvar")]
    return tuple(names)


FEATURE_NAMES = _names()
NUM_FEATURES = len(FEATURE_NAMES)


def _window() -> np.ndarray:
    offsets = np.arange(WINDOW_SIZE) - WINDOW_SIZE // 2
    weights = np.exp(-offsets**2 / (2 * WINDOW_SIGMA**2))
    return weights / weights.sum()  # separable: the 2-D window is the outer product


_WINDOW_1D = _window()


def grey(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 HxWx3 (or HxW) image, float64 on the 0–255 scale."""
    array = np.asarray(image)
    if array.ndim == 2:
        result = array.astype(np.float64)
    elif array.ndim == 3 and array.shape[2] in (1, 3):
        rgb = array.astype(np.float64)
        result = rgb[..., 0] if array.shape[2] == 1 else rgb @ np.array([0.2989, 0.5870, 0.1140])
    else:
        raise ValueError(f"expected an HxWx3 or HxW image, got shape {array.shape}")
    if min(result.shape) < MIN_SIDE:
        raise ValueError(f"image of shape {array.shape} is too small for BRISQUE "
                         f"(each side needs at least {MIN_SIDE} pixels)")
    return result


def _smooth(array: np.ndarray) -> np.ndarray:
    rows = ndimage.correlate1d(array, _WINDOW_1D, axis=0, mode="reflect")
    return ndimage.correlate1d(rows, _WINDOW_1D, axis=1, mode="reflect")


def mscn(luma: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a 0–255 grey image."""
    mu = _smooth(luma)
    # |·|: rounding can make E[x²] − μ² slightly negative in flat regions
    sigma = np.sqrt(np.abs(_smooth(luma * luma) - mu * mu))
    return (luma - mu) / (sigma + STABILITY)


def fit_ggd(values: np.ndarray) -> tuple[float, float]:
    """(shape, variance) of a zero-mean generalised Gaussian, by moment matching."""
    values = np.asarray(values, dtype=np.float64).ravel()
    power = float(np.einsum("i,i->", values, values)) / values.size
    if power < DEGENERATE_POWER:
        return 2.0, 0.0
    ratio = power / (float(np.abs(values).sum()) / values.size) ** 2
    return float(_SHAPE_GRID[np.argmin(np.abs(_GGD_RATIO - ratio))]), power


def fit_aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """(shape, mean, left variance, right variance) of an asymmetric generalised Gaussian."""
    values = np.asarray(values, dtype=np.float64).ravel()
    total = float(np.einsum("i,i->", values, values))
    power = total / values.size
    if power < DEGENERATE_POWER:
        return 2.0, 0.0, 0.0, 0.0
    # einsum, not `@`: a threaded BLAS dot is ~8x slower here on a busy machine; sums over each
    # side without boolean indexing, which would copy the array twice
    negative = np.minimum(values, 0.0)
    left_sum = float(np.einsum("i,i->", negative, negative))
    n_left, n_right = int(np.count_nonzero(negative)), int(np.count_nonzero(values > 0))
    left_var = left_sum / n_left if n_left else 0.0
    right_var = max(total - left_sum, 0.0) / n_right if n_right else 0.0
    abs_mean = (float(values.sum()) - 2.0 * float(negative.sum())) / values.size
    left, right = np.sqrt(left_var), np.sqrt(right_var)
    r_hat = abs_mean**2 / power
    # the paper's correction r̂·(γ̂³+1)(γ̂+1)/(γ̂²+1)² with γ̂ = left/right, multiplied out so that
    # a side without samples (std 0) needs no division by zero
    r_norm = r_hat * (left**3 + right**3) * (left + right) / (left_var + right_var) ** 2
    shape = float(_SHAPE_GRID[np.argmin((_AGGD_RATIO - r_norm) ** 2)])
    log_gamma = special.gammaln(np.array([1 / shape, 2 / shape, 3 / shape]))
    mean = (right - left) * np.exp(log_gamma[1] - 0.5 * (log_gamma[0] + log_gamma[2]))
    return shape, float(mean), left_var, right_var


def pair_products(coefficients: np.ndarray) -> dict[str, np.ndarray]:
    """Products of each coefficient with its neighbour in each orientation (no wrap-around)."""
    c = coefficients
    return {
        "h": c[:, :-1] * c[:, 1:],
        "v": c[:-1, :] * c[1:, :],
        "d1": c[:-1, :-1] * c[1:, 1:],
        "d2": c[:-1, 1:] * c[1:, :-1],
    }


def halve(luma: np.ndarray) -> np.ndarray:
    """Half-size image by antialiased bicubic resampling (as MATLAB's imresize(·, 0.5))."""
    height, width = luma.shape
    size = (-(-width // 2), -(-height // 2))  # PIL takes (width, height); ceil as imresize
    image = Image.fromarray(luma.astype(np.float32))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)


def _scale_features(luma: np.ndarray) -> list[float]:
    coefficients = mscn(luma)
    features = list(fit_ggd(coefficients))
    for product in pair_products(coefficients).values():
        features += fit_aggd(product)
    return features


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of one uint8 HxWx3 image, in :data:`FEATURE_NAMES` order."""
    luma = grey(image)
    return np.array(_scale_features(luma) + _scale_features(halve(luma)), dtype=np.float64)


class FeatureCache:
    """Feature vectors keyed by image content, so each image is analysed once per process.

    The ten splits of a dataset see the same images; only the SVR fits differ. The key is the
    SHA-256 of the array's shape, dtype and bytes plus :data:`FEATURE_VERSION`. At most
    ``max_entries`` vectors are kept (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self._store: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image: np.ndarray) -> str:
        array = np.ascontiguousarray(image)
        digest = hashlib.sha256(f"{FEATURE_VERSION}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.data)
        return digest.hexdigest()

    def features(self, images: list, workers: int = 1) -> np.ndarray:
        """(N, 36) features; the images not yet cached are analysed by ``workers`` threads."""
        keys = [self.key(image) for image in images]
        missing = {key: image for key, image in zip(keys, images) if key not in self._store}
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        # numpy, scipy.ndimage and Pillow release the GIL in the heavy loops, so threads scale
        with ThreadPoolExecutor(max(1, min(workers, len(missing) or 1))) as pool:
            for key, vector in zip(missing, pool.map(brisque_features, missing.values())):
                vector.setflags(write=False)
                self._store[key] = vector
        rows = []
        for key in keys:
            self._store.move_to_end(key)
            rows.append(self._store[key])
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, NUM_FEATURES))

    def __len__(self) -> int:
        return len(self._store)


#: the process-wide cache: a memo of a pure function, shared by every BRISQUE instance
DEFAULT_CACHE = FeatureCache()


def feature_matrix(images: list, cache: FeatureCache | None = DEFAULT_CACHE,
                   workers: int = 1) -> np.ndarray:
    """(N, 36) features of uint8 HxWx3 images; ``cache=None`` analyses every image afresh."""
    return (cache if cache is not None else FeatureCache()).features(images, workers)

"""BRISQUE: 36 natural-scene-statistics features + an RBF support-vector regressor.

Paper: A. Mittal, A. K. Moorthy, A. C. Bovik, "No-Reference Image Quality Assessment in the
Spatial Domain", IEEE Transactions on Image Processing 21(12), 2012.
Features: :mod:`baselines.nss` (own numpy/scipy implementation; its docstring lists where it
departs from the authors' MATLAB release). No pretrained weights: the regressor is fitted on each
split's training images.

Regressor, as the paper's libsvm setup: ε-SVR with an RBF kernel on features scaled to [−1, 1]
per dimension with the training set's minimum and maximum (libsvm's ``svm-scale``). C and γ come
from a grid searched on the split's validation images by SRCC (5-fold cross-validation on the
training images when there are fewer than 3 validation images). Two choices of ours:

- the labels are standardised with the training mean and standard deviation before the fit (and
  predictions mapped back), so the grid and ε mean the same on every dataset's scale;
- the fitted regressor is kept as tensors (support vectors, dual coefficients, intercept, γ, the
  feature scaling, the label standardisation) and prediction evaluates the RBF expansion itself,
  so a checkpoint loads with ``torch.load(weights_only=True)`` and predicts exactly as fitted.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import cdist
from sklearn.model_selection import KFold
from sklearn.svm import SVR

from baselines.nss import NUM_FEATURES, feature_matrix
from benchmark.metrics import srcc
from benchmark.models import FitModel, InputConfig, LabelScale

__all__ = ["BRISQUE", "BRISQUEConfig"]

#: buffers whose length depends on the fit; resized to the incoming shape on load
_FITTED = ("support_vectors", "dual_coef")
#: every buffer of the fitted regressor (what a checkpoint holds)
_STATE = ("support_vectors", "dual_coef", "intercept", "gamma", "feature_scale", "feature_offset",
          "label_mean", "label_std")
_MIN_VAL_IMAGES = 3
_CV_FOLDS = 5
_PREDICT_CHUNK = 2048


@dataclass(frozen=True)
class BRISQUEConfig(InputConfig):
    """No backbone and no SGD (so none of its settings): one pass over whole images, then
    the SVR grid."""

    backbone: str = "none"
    pretrained: str = "false"
    img_size: int = 0  # whole images: BRISQUE is defined on the full frame, never on crops
    batch_size: int = 32  # images per forward() call in `bench score`
    train_crops: int = 1
    test_crops: int = 1
    hflip: bool = False
    label_scale: LabelScale = "raw"
    # libsvm grid.py's log2 steps of 2, over a narrower range (63 fits instead of 110)
    svr_c: tuple[float, ...] = tuple(2.0**k for k in range(-3, 14, 2))
    svr_gamma: tuple[float, ...] = tuple(2.0**k for k in range(-11, 2, 2))
    svr_epsilon: float = 0.1  # in units of the training labels' standard deviation
    scale_features: bool = True  # svm-scale to [−1, 1]
    workers: int = 2  # threads for images not yet in the feature cache and for the grid
    cv_seed: int = 0  # the cross-validation folds when there is no validation slice


class BRISQUE(FitModel):
    name = "brisque"
    label = "BRISQUE"
    Config = BRISQUEConfig
    tiny_config = {"svr_c": (1.0, 16.0), "svr_gamma": (0.05, 0.5), "workers": 1}
    paper = "Mittal, Moorthy, Bovik, IEEE TIP 2012 (BRISQUE features + RBF ε-SVR)"

    def __init__(self, config: BRISQUEConfig | None = None):
        super().__init__(config or BRISQUEConfig())
        double = torch.float64
        self.register_buffer("support_vectors", torch.zeros(0, NUM_FEATURES, dtype=double))
        self.register_buffer("dual_coef", torch.zeros(0, dtype=double))
        self.register_buffer("intercept", torch.zeros((), dtype=double))
        self.register_buffer("gamma", torch.zeros((), dtype=double))
        self.register_buffer("feature_scale", torch.ones(NUM_FEATURES, dtype=double))
        self.register_buffer("feature_offset", torch.zeros(NUM_FEATURES, dtype=double))
        self.register_buffer("label_mean", torch.zeros((), dtype=double))
        self.register_buffer("label_std", torch.zeros((), dtype=double))  # 0 = not fitted

    # -- fitting
    def fit(self, train_images: list, train_labels, val_images: list, val_labels) -> dict:
        config: BRISQUEConfig = self.config  # type: ignore[assignment]
        started = time.perf_counter()
        train_x = feature_matrix(train_images, workers=config.workers)
        val_x = feature_matrix(val_images, workers=config.workers)
        feature_seconds = time.perf_counter() - started
        train_y = np.asarray(train_labels, dtype=np.float64).ravel()
        val_y = np.asarray(val_labels, dtype=np.float64).ravel()
        if len(train_y) != len(train_x) or len(val_y) != len(val_x):
            raise ValueError(f"BRISQUE.fit: {len(train_x)} training images with {len(train_y)} "
                             f"labels, {len(val_x)} validation images with {len(val_y)} labels")
        if len(train_y) < 2:
            raise ValueError(f"BRISQUE.fit needs at least 2 training images, got {len(train_y)}")

        scale, offset = _svm_scale(train_x) if config.scale_features else (
            np.ones(NUM_FEATURES), np.zeros(NUM_FEATURES))
        label_mean = float(train_y.mean())
        label_std = float(train_y.std()) or 1.0  # constant labels: any scale fits them
        target = (train_y - label_mean) / label_std
        train_s, val_s = train_x * scale + offset, val_x * scale + offset

        started = time.perf_counter()
        epsilon = config.svr_epsilon
        if len(val_y) >= _MIN_VAL_IMAGES:
            selection = "val"
            (svr, c_value, gamma), best_srcc = self._search(
                lambda c, g: [(_fit_svr(train_s, target, c, g, epsilon), val_s, val_y)])
        else:
            selection = f"cv{_CV_FOLDS}"
            folds = list(KFold(min(_CV_FOLDS, len(train_y)), shuffle=True,
                               random_state=config.cv_seed).split(train_s))
            (_, c_value, gamma), best_srcc = self._search(lambda c, g: [
                (_fit_svr(train_s[a], target[a], c, g, epsilon), train_s[b], train_y[b])
                for a, b in folds])
            svr = _fit_svr(train_s, target, c_value, gamma, epsilon)
        svr_seconds = time.perf_counter() - started

        self._store(svr, gamma, scale, offset, label_mean, label_std)
        return {
            "selection": selection,
            "svr_c": c_value,
            "svr_gamma": gamma,
            "svr_epsilon": config.svr_epsilon,
            # None (JSON null) when every grid point predicted a constant
            "val_srcc": best_srcc if np.isfinite(best_srcc) else None,
            "grid_size": len(config.svr_c) * len(config.svr_gamma),
            "n_support_vectors": int(len(svr.support_)),
            "n_train": int(len(train_y)),
            "n_val": int(len(val_y)),
            "feature_seconds": round(feature_seconds, 3),
            "svr_seconds": round(svr_seconds, 3),
        }

    def _search(self, fits) -> tuple[tuple, float]:
        """Best (svr, C, γ) over the grid by mean SRCC of ``fits(C, γ)``'s (svr, x, y) triples.

        Grid points are fitted on ``workers`` threads (libsvm trains without the GIL). Ties go
        to the earlier grid point (smaller C, then smaller γ: the smoother model); a NaN SRCC
        (constant predictions) never wins.
        """
        config: BRISQUEConfig = self.config  # type: ignore[assignment]
        points = [(float(c), float(g)) for c in config.svr_c for g in config.svr_gamma]

        def evaluate(point: tuple[float, float]) -> tuple[SVR, float]:
            trials = fits(*point)
            score = float(np.mean([srcc(svr.predict(x), y) for svr, x, y in trials]))
            return trials[0][0], (score if np.isfinite(score) else -np.inf)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # metrics warn on constant predictions
            with ThreadPoolExecutor(max(1, config.workers)) as pool:
                results = list(pool.map(evaluate, points))
        best = int(np.argmax([score for _, score in results]))  # the first of equal maxima
        return (results[best][0], *points[best]), results[best][1]

    def _store(self, svr: SVR, gamma: float, scale: np.ndarray, offset: np.ndarray,
               label_mean: float, label_std: float) -> None:
        double = torch.float64
        self.support_vectors = torch.tensor(svr.support_vectors_, dtype=double)
        self.dual_coef = torch.tensor(svr.dual_coef_.ravel(), dtype=double)
        self.intercept = torch.tensor(float(svr.intercept_[0]), dtype=double)
        self.gamma = torch.tensor(gamma, dtype=double)
        self.feature_scale = torch.tensor(scale, dtype=double)
        self.feature_offset = torch.tensor(offset, dtype=double)
        self.label_mean = torch.tensor(label_mean, dtype=double)
        self.label_std = torch.tensor(label_std, dtype=double)

    # -- prediction
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Scores on the label scale for (N, 36) raw feature vectors."""
        if float(self.label_std) == 0.0:
            raise RuntimeError("BRISQUE has not been fitted (call fit() or load a checkpoint)")
        state = {name: buffer.detach().cpu().double().numpy()
                 for name, buffer in self.named_buffers() if name in _STATE}
        scaled = np.asarray(features, dtype=np.float64) * state["feature_scale"] \
            + state["feature_offset"]
        out = np.empty(len(scaled))
        for start in range(0, len(scaled), _PREDICT_CHUNK):
            chunk = scaled[start:start + _PREDICT_CHUNK]
            kernel = np.exp(-state["gamma"] * cdist(chunk, state["support_vectors"], "sqeuclidean"))
            out[start:start + len(chunk)] = kernel @ state["dual_coef"] + state["intercept"]
        return out * state["label_std"] + state["label_mean"]

    def predict(self, images: list) -> np.ndarray:
        config: BRISQUEConfig = self.config  # type: ignore[assignment]
        return self.predict_features(feature_matrix(images, workers=config.workers))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.predict(_to_uint8(images))
        return torch.as_tensor(scores, dtype=torch.float32, device=images.device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        config: BRISQUEConfig = self.config  # type: ignore[assignment]
        matrix = feature_matrix(_to_uint8(images), workers=config.workers)
        return torch.as_tensor(matrix, dtype=torch.float32, device=images.device)

    # -- checkpoints: the fitted buffers change length, so take the incoming shapes on load
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        for name in _FITTED:
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor):
                setattr(self, name, torch.empty(incoming.shape, dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _svm_scale(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (scale, offset) mapping the training range onto [−1, 1].

    A feature constant over the training set maps to 0 (libsvm's svm-scale drops it).
    """
    low, high = features.min(axis=0), features.max(axis=0)
    span = high - low
    scale = np.divide(2.0, span, out=np.zeros_like(span), where=span > 0)
    offset = np.where(span > 0, -1.0 - low * scale, 0.0)
    return scale, offset


def _fit_svr(x: np.ndarray, y: np.ndarray, c_value: float, gamma: float, epsilon: float) -> SVR:
    return SVR(kernel="rbf", C=c_value, gamma=gamma, epsilon=epsilon, cache_size=500).fit(x, y)


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] → uint8 HxWx3 arrays, as the images were decoded."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    array = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return list(array.permute(0, 2, 3, 1).cpu().numpy())

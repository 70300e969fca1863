"""Feature distance vs quality gap: the statistics of docs/method.md §5 as pure functions.

Inputs are per-image features (N × D), labels (N,) and, for synthetic sets, content groups
(N,). Labels are rescaled to ŷ ∈ [0, 1] over the images analysed; the gap of a pair is
Δ = |ŷ_i − ŷ_j| and its distance is the cosine distance of the L2-normalised features
(or, as a check, the L2 distance of the raw features).

A *relation* restricts the universe of pairs: ``all`` pairs, ``same`` (same content group:
one reference under different distortions) or ``cross`` (different groups). Under a
relation, nearest neighbours are searched only among the images it allows, the random
baseline is taken over all pairs it allows, and the rank correlation uses its pairs.

The bootstrap over images reuses one pair sample: resampling images with multiplicities
m gives each pair (i, j) the weight m_i·m_j, and Spearman's ρ of the resample is the
weighted rank correlation under those weights. The orderings are computed once, so 200
resamples of 10⁶ pairs take seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "KS", "THETAS", "RELATIONS", "normalise_labels", "neighbours", "knn_gaps", "gap_share",
    "random_gap_share", "random_mean_gap", "sample_pairs", "pair_distances", "spearman",
    "weighted_spearman", "rank_correlation", "knn_regression_srcc", "percentile_bins",
    "analyse",
]

KS = (1, 5)
THETAS = (0.1, 0.2, 0.3)
RELATIONS = ("all", "same", "cross")
MAX_PAIRS = 1_000_000
CLOSEST = 0.01


def normalise_labels(labels) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    span = np.ptp(labels)
    if span == 0:
        raise ValueError("all labels are equal: quality gaps are undefined")
    return (labels - labels.min()) / span


def _prepare(features, metric: str) -> np.ndarray:
    # double precision: 1 − cos loses the order of near-duplicate pairs in float32, and
    # those closest pairs are what the analysis is about
    features = np.asarray(features, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("a feature vector is all zeros: its cosine distance is undefined")
        return features / norms
    if metric == "l2":
        return features
    raise ValueError(f"distance must be 'cosine' or 'l2', not {metric!r}")


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1.0 - a @ b.T
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _allowed(groups: np.ndarray | None, rows: np.ndarray, relation: str) -> np.ndarray | None:
    """Mask (len(rows) × N) of the partners a relation allows, or None for all."""
    if relation == "all":
        return None
    if groups is None:
        raise ValueError(f"relation {relation!r} needs content groups")
    same = groups[rows][:, None] == groups[None, :]
    if relation == "same":
        return same
    if relation == "cross":
        return ~same
    raise ValueError(f"relation must be one of {RELATIONS}, not {relation!r}")


def neighbours(features, k: int = max(KS), metric: str = "cosine", groups=None,
               relation: str = "all", block: int = 1024) -> np.ndarray:
    """(N, k) indices of each image's nearest others, closest first; −1 where none is left."""
    prepared = _prepare(features, metric)
    groups = None if groups is None else np.asarray(groups)
    n = len(prepared)
    out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        dist = _distances(prepared[rows], prepared, metric)
        dist[np.arange(len(rows)), rows] = np.inf
        mask = _allowed(groups, rows, relation)
        if mask is not None:
            dist[~mask] = np.inf
        take = min(k, n)
        part = np.argpartition(dist, take - 1, axis=1)[:, :take]
        part_dist = np.take_along_axis(dist, part, axis=1)
        order = np.lexsort((part, part_dist), axis=1)  # by distance, then index: deterministic
        chosen = np.take_along_axis(part, order, axis=1)
        chosen[np.take_along_axis(part_dist, order, axis=1) == np.inf] = -1
        out[rows, :take] = chosen
    return out


def knn_gaps(y_hat: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Δ to each neighbour, NaN where the neighbour is missing."""
    gaps = np.abs(y_hat[:, None] - y_hat[np.maximum(nbrs, 0)])
    gaps[nbrs < 0] = np.nan
    return gaps


def gap_share(gaps: np.ndarray, theta: float) -> float:
    """S_k(θ): the share of neighbour pairs whose gap exceeds θ."""
    valid = gaps[np.isfinite(gaps)]
    return float(np.mean(valid > theta)) if valid.size else float("nan")


def _pair_counts(y_sorted: np.ndarray, theta: float) -> tuple[int, int]:
    """(pairs with gap > θ, all pairs) among sorted labels."""
    n = len(y_sorted)
    above = n - np.searchsorted(y_sorted, y_sorted + theta, side="right")
    return int(above.sum()), n * (n - 1) // 2


def _by_relation(y_hat: np.ndarray, groups, relation: str, count) -> tuple[float, float]:
    """(numerator, number of pairs) of a pair sum under a relation, from per-set sums."""
    whole = count(np.sort(y_hat))
    if relation == "all":
        return whole
    if groups is None:
        raise ValueError(f"relation {relation!r} needs content groups")
    groups = np.asarray(groups)
    same = [count(np.sort(y_hat[groups == g])) for g in np.unique(groups)]
    same_sum, same_pairs = sum(s[0] for s in same), sum(s[1] for s in same)
    if relation == "same":
        return same_sum, same_pairs
    if relation == "cross":
        return whole[0] - same_sum, whole[1] - same_pairs
    raise ValueError(f"relation must be one of {RELATIONS}, not {relation!r}")


def random_gap_share(y_hat, theta: float, groups=None, relation: str = "all") -> float:
    """S_rand(θ): the share of all pairs (of a relation) whose gap exceeds θ, exactly."""
    above, pairs = _by_relation(np.asarray(y_hat, float), groups, relation,
                                lambda y: _pair_counts(y, theta))
    return above / pairs if pairs else float("nan")


def random_mean_gap(y_hat, groups=None, relation: str = "all") -> float:
    """The mean Δ over all pairs (of a relation), exactly: Σ_k y_(k)(2k − n + 1) over pairs."""
    def total(y_sorted: np.ndarray) -> tuple[float, int]:
        n = len(y_sorted)
        return float(np.dot(y_sorted, 2 * np.arange(n) - n + 1)), n * (n - 1) // 2

    gap_sum, pairs = _by_relation(np.asarray(y_hat, float), groups, relation, total)
    return gap_sum / pairs if pairs else float("nan")


def sample_pairs(n: int, rng: np.random.Generator, max_pairs: int = MAX_PAIRS, groups=None,
                 relation: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j of a relation: all of them, or ``max_pairs`` drawn at random."""
    groups = None if groups is None else np.asarray(groups)
    if relation == "same":
        if groups is None:
            raise ValueError("relation 'same' needs content groups")
        parts = []
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            a, b = np.triu_indices(len(members), 1)
            parts.append((members[a], members[b]))
        i = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        j = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        if len(i) > max_pairs:
            keep = np.sort(rng.choice(len(i), max_pairs, replace=False))
            i, j = i[keep], j[keep]
        return i, j
    if relation not in ("all", "cross"):
        raise ValueError(f"relation must be one of {RELATIONS}, not {relation!r}")
    if relation == "cross" and groups is None:
        raise ValueError("relation 'cross' needs content groups")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, 1)
        if relation == "cross":
            keep = groups[i] != groups[j]
            i, j = i[keep], j[keep]
        return i, j
    found_i, found_j, count = [], [], 0
    while count < max_pairs:  # rejection sampling: pairs of one image, or of one group for cross
        a, b = rng.integers(0, n, size=(2, 2 * max_pairs))
        keep = a != b if relation == "all" else groups[a] != groups[b]
        a, b = a[keep], b[keep]
        found_i.append(np.minimum(a, b))
        found_j.append(np.maximum(a, b))
        count += len(a)
    i, j = np.concatenate(found_i)[:max_pairs], np.concatenate(found_j)[:max_pairs]
    order = np.lexsort((j, i))  # row-major order makes the feature gathers cache-friendly
    return i[order], j[order]


def pair_distances(features, i: np.ndarray, j: np.ndarray, metric: str = "cosine",
                   chunk: int = 4096) -> np.ndarray:
    prepared = _prepare(features, metric)
    out = np.empty(len(i))
    for start in range(0, len(i), chunk):
        # np.take over small chunks: fancy indexing into large temporaries is several times slower
        a = np.take(prepared, i[start:start + chunk], axis=0)
        b = np.take(prepared, j[start:start + chunk], axis=0)
        if metric == "cosine":
            out[start:start + chunk] = 1.0 - np.einsum("nd,nd->n", a, b)
        else:
            out[start:start + chunk] = np.linalg.norm(a - b, axis=1)
    return out


def spearman(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


class _RankOrder:
    """The sort order and tie blocks of one variable, for mid-ranks under any weights."""

    def __init__(self, values: np.ndarray, presorted: bool = False):
        self.order = None if presorted else np.argsort(values, kind="stable")
        ordered = values if presorted else values[self.order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.sizes = np.diff(np.r_[self.starts, len(values)])

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """Mid-ranks of the data expanded by ``weights`` (average rank within ties)."""
        w = weights if self.order is None else weights[self.order]
        totals = np.add.reduceat(w, self.starts)
        before = np.cumsum(totals) - totals
        in_order = np.repeat(before + (totals + 1.0) / 2.0, self.sizes)
        if self.order is None:
            return in_order
        ranks = np.empty(len(w))
        ranks[self.order] = in_order
        return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    if total <= 0:
        return float("nan")
    wx, wy = w * x, w * y
    mean_x, mean_y = wx.sum() / total, wy.sum() / total
    # ranks have variance ~n²/12 against a squared mean ~n²/4: no harmful cancellation
    var_x, var_y = wx @ x / total - mean_x ** 2, wy @ y / total - mean_y ** 2
    covariance = wx @ y / total - mean_x * mean_y
    return float(covariance / np.sqrt(var_x * var_y)) if var_x > 0 and var_y > 0 else float("nan")


def weighted_spearman(x, y, weights) -> float:
    """Spearman's ρ of the data in which pair p appears ``weights[p]`` times."""
    x, y, w = np.asarray(x, float), np.asarray(y, float), np.asarray(weights, float)
    return _weighted_pearson(_RankOrder(x).ranks(w), _RankOrder(y).ranks(w), w)


def rank_correlation(d: np.ndarray, gaps: np.ndarray, i: np.ndarray, j: np.ndarray, n: int,
                     rng: np.random.Generator, n_boot: int = 200, fraction: float = CLOSEST,
                     level: float = 0.95) -> dict[str, float]:
    """ρ(d, Δ) over the pairs and over the ``fraction`` closest, each with a bootstrap CI
    over images (weights m_i·m_j; pairs of an image with its own copy do not exist)."""
    order = np.argsort(d, kind="stable")  # work in distance order: d's ranks need no scatter
    d, gaps, i, j = d[order], gaps[order], i[order], j[order]
    d_rank, g_rank = _RankOrder(d, presorted=True), _RankOrder(gaps)

    def both(w: np.ndarray) -> tuple[float, float, int]:
        rho = _weighted_pearson(d_rank.ranks(w), g_rank.ranks(w), w)
        # the closest pairs holding `fraction` of the weight, at least 3
        keep = max(int(np.searchsorted(np.cumsum(w), fraction * w.sum(), side="right")), 3)
        return rho, weighted_spearman(d[:keep], gaps[:keep], w[:keep]), keep

    rho, rho_closest, n_closest = both(np.ones(len(d)))
    draws = np.array([both(_resample_weights(rng, n, i, j))[:2] for _ in range(n_boot)])
    tail = (1.0 - level) / 2.0 * 100.0
    bounds = (np.nanpercentile(draws, [tail, 100.0 - tail], axis=0) if n_boot
              else np.full((2, 2), np.nan))
    return {"rho": rho, "rho_lo": float(bounds[0, 0]), "rho_hi": float(bounds[1, 0]),
            "rho_closest": rho_closest, "rho_closest_lo": float(bounds[0, 1]),
            "rho_closest_hi": float(bounds[1, 1]), "n_pairs": int(len(d)),
            "n_closest": n_closest}


def _resample_weights(rng: np.random.Generator, n: int, i: np.ndarray, j: np.ndarray):
    counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
    return counts[i] * counts[j]


def knn_regression_srcc(labels, nbrs: np.ndarray, k: int = 5) -> float:
    """SRCC(y_i, mean label of i's k nearest others): leave-one-out kNN regression."""
    labels = np.asarray(labels, float)
    chosen = nbrs[:, :k]
    values = np.where(chosen >= 0, labels[np.maximum(chosen, 0)], np.nan)
    has = np.isfinite(values).any(axis=1)
    if has.sum() < 3:
        return float("nan")
    estimate = np.nanmean(values[has], axis=1)
    return spearman(labels[has], estimate)


def percentile_bins(d: np.ndarray, gaps: np.ndarray, n_bins: int = 20) -> dict[str, np.ndarray]:
    """Percentile rank of each pair's distance, and the median and 90th percentile of Δ in
    ``n_bins`` equal bins of it (the curves of the hexbin plot)."""
    percentile = (stats.rankdata(d) - 0.5) / len(d) * 100.0
    edges = np.linspace(0.0, 100.0, n_bins + 1)
    which = np.clip(np.digitize(percentile, edges) - 1, 0, n_bins - 1)
    median = np.array([np.median(gaps[which == b]) if np.any(which == b) else np.nan
                       for b in range(n_bins)])
    p90 = np.array([np.percentile(gaps[which == b], 90) if np.any(which == b) else np.nan
                    for b in range(n_bins)])
    return {"percentile": percentile, "centres": (edges[:-1] + edges[1:]) / 2,
            "median": median, "p90": p90}


def analyse(features, labels, groups=None, relation: str = "all", metric: str = "cosine",
            ks: tuple[int, ...] = KS, thetas: tuple[float, ...] = THETAS,
            max_pairs: int = MAX_PAIRS, n_boot: int = 200, seed: int = 0,
            keep_pairs: bool = False) -> dict[str, Any]:
    """Every statistic of one (features, labels) set under one relation, as one CSV row.

    With ``keep_pairs`` the result also carries the pair sample (``_d``, ``_gaps``) and the
    1-NN gaps (``_knn1``) for the plots; those keys start with an underscore.
    """
    y_hat = normalise_labels(labels)
    groups = None if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    nbrs = neighbours(features, max(*ks, 5), metric, groups, relation)  # 5: kNN regression
    gaps = knn_gaps(y_hat, nbrs)
    row: dict[str, Any] = {"relation": relation, "distance": metric, "n_images": len(y_hat)}
    mean_random = random_mean_gap(y_hat, groups, relation)
    for theta in thetas:
        row[f"Srand_{theta:g}"] = random_gap_share(y_hat, theta, groups, relation)
    for k in ks:
        for theta in thetas:
            share = gap_share(gaps[:, :k], theta)
            row[f"S{k}_{theta:g}"] = share
            baseline = row[f"Srand_{theta:g}"]
            row[f"R{k}_{theta:g}"] = share / baseline if baseline > 0 else float("nan")
        mean_knn = np.nanmean(gaps[:, :k]) if np.isfinite(gaps[:, :k]).any() else float("nan")
        row[f"gap_ratio_{k}"] = float(mean_knn / mean_random) if mean_random > 0 else float("nan")
    i, j = sample_pairs(len(y_hat), rng, max_pairs, groups, relation)
    d = pair_distances(features, i, j, metric)
    pair_gaps = np.abs(y_hat[i] - y_hat[j])
    row.update(rank_correlation(d, pair_gaps, i, j, len(y_hat), rng, n_boot))
    row["knn_srcc"] = knn_regression_srcc(labels, nbrs, 5)
    if keep_pairs:
        row.update({"_d": d, "_gaps": pair_gaps, "_knn1": gaps[:, 0]})
    return row

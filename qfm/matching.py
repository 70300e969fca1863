"""Temporary memory and semantic noisy matching (method.md §3.2 steps 4–5, QFM-IQM as reconstructed).

The memory holds (feature, match key, label, image id[, patch tokens]) entries of the current
batch and a FIFO of the last K batches, all detached. Matching pairs every anchor with an entry
whose label lies within the tolerance and whose image differs, choosing the semantically farthest
one (or another rule); everything here is a pure function of tensors so it can be tested on
hand-built memories.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = ["Entries", "Memory", "Match", "SelectMode", "Fallback", "Metric", "distances",
           "admissible", "select", "best_with_random_ties", "nearest_label", "match"]

SelectMode = Literal["farthest", "random", "topm_random", "softmax"]
Fallback = Literal["nearest_label", "skip"]
Metric = Literal["cosine", "l2"]
SELECT_MODES, FALLBACKS, METRICS = get_args(SelectMode), get_args(Fallback), get_args(Metric)


@dataclass(frozen=True)
class Entries:
    """M memory entries: the noise vectors, the vectors compared in match space, labels, ids."""

    features: torch.Tensor  # (M, D): what is added to an anchor
    keys: torch.Tensor  # (M, Dk): where distances are measured (match_space)
    labels: torch.Tensor  # (M,)
    ids: torch.Tensor  # (M,) image ids; crops of one image share one
    teacher: torch.Tensor  # (M,) bool: the entry's feature came from the teacher
    patches: torch.Tensor | None = None  # (M, N, D), kept only when patches are perturbed

    def __len__(self) -> int:
        return self.labels.shape[0]

    def detach(self) -> Entries:
        return Entries(**{f.name: None if getattr(self, f.name) is None
                          else getattr(self, f.name).detach() for f in fields(self)})

    def to(self, device: torch.device) -> Entries:
        return Entries(**{f.name: None if getattr(self, f.name) is None
                          else getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list[Entries]) -> Entries:
        has_patches = all(p.patches is not None for p in parts)
        return Entries(
            features=torch.cat([p.features for p in parts]),
            keys=torch.cat([p.keys for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            ids=torch.cat([p.ids for p in parts]),
            teacher=torch.cat([p.teacher for p in parts]),
            patches=torch.cat([p.patches for p in parts]) if has_patches else None,
        )


class Memory:
    """FIFO of the entries of the last ``batches`` training steps (not a module: no parameters)."""

    def __init__(self, batches: int):
        self.batches = batches
        self.queue: list[Entries] = []

    def gather(self, current: list[Entries]) -> Entries:
        """The current step's entries followed by the stored ones (M ≤ sources·B·(K+1))."""
        device = current[0].labels.device
        return Entries.cat(current + [e.to(device) for e in self.queue])

    def push(self, current: list[Entries]) -> None:
        if self.batches <= 0:
            return
        self.queue.insert(0, Entries.cat(current).detach())
        del self.queue[self.batches:]

    def state(self) -> dict[str, torch.Tensor]:
        return {f"memory.{i}.{f.name}": getattr(e, f.name) for i, e in enumerate(self.queue)
                for f in fields(e) if getattr(e, f.name) is not None}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        count = len({key.split(".")[1] for key in state if key.startswith("memory.")})
        self.queue = [Entries(**{f.name: state.get(f"memory.{i}.{f.name}") for f in fields(Entries)})
                      for i in range(count)][: self.batches]


def distances(anchors: torch.Tensor, keys: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """(B, M) distances in fp32 (also under autocast): 1 − cosine similarity, or Euclidean."""
    anchors, keys = anchors.float(), keys.float()
    with torch.autocast(anchors.device.type, enabled=False):
        if metric == "cosine":
            return 1.0 - F.normalize(anchors, dim=1) @ F.normalize(keys, dim=1).T
        if metric == "l2":
            return torch.cdist(anchors, keys)
    raise ValueError(f"unknown match_metric {metric!r} ({', '.join(METRICS)})")


def admissible(labels: torch.Tensor, ids: torch.Tensor, memory_labels: torch.Tensor,
               memory_ids: torch.Tensor, tolerance: float,
               exclude_same_image: bool = True) -> torch.Tensor:
    """(B, M) bool: label within ``tolerance`` and (optionally) another image."""
    close = (labels.float()[:, None] - memory_labels.float()[None, :]).abs() <= tolerance
    if exclude_same_image:
        close &= ids[:, None] != memory_ids[None, :]
    return close


def select(distance: torch.Tensor, allowed: torch.Tensor, mode: str = "farthest", count: int = 1,
           topm: int = 4, temperature: float = 0.1,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``count`` admissible entries per anchor: (index (B, count), valid (B, count)).

    farthest: the largest distances; random: uniform among the admissible; topm_random: uniform
    among the ``topm`` farthest; softmax: sampled with probabilities softmax(distance/temperature).
    """
    if count > 1 and mode != "farthest":
        raise ValueError("several partners per anchor are only defined for match_select=farthest")
    if mode == "farthest":
        score = distance
    elif mode in ("random", "topm_random"):
        score = torch.rand(distance.shape, generator=generator, device=distance.device)
        if mode == "topm_random":
            k = min(topm, distance.shape[1])
            top = distance.masked_fill(~allowed, float("-inf")).topk(k, dim=1).indices
            near_top = torch.zeros_like(allowed).scatter_(1, top, True)
            allowed = allowed & near_top
    elif mode == "softmax":
        # Gumbel-max: argmax(d/T + Gumbel) samples from softmax(d/T) over the admissible set
        uniform = torch.rand(distance.shape, generator=generator, device=distance.device)
        score = distance / temperature - torch.log(-torch.log(uniform.clamp_min(1e-20)))
    else:
        raise ValueError(f"unknown match_select {mode!r} ({', '.join(SELECT_MODES)})")
    masked = score.masked_fill(~allowed, float("-inf"))
    if count == 1:
        index = best_with_random_ties(masked, generator)
    else:
        index = masked.topk(min(count, distance.shape[1]), dim=1).indices
    return index, allowed.gather(1, index)


def best_with_random_ties(score: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1) column of each row's largest score, drawn uniformly among equal ones.

    The student's and the teacher's entry of one crop share a key in one match space, so they
    tie exactly; taking the first would never pick the teacher's feature."""
    best = score.max(dim=1, keepdim=True).values
    ties = (score == best) & torch.isfinite(best)
    draw = torch.rand(score.shape, generator=generator, device=score.device)
    return draw.masked_fill(~ties, -1.0).argmax(dim=1, keepdim=True)


def nearest_label(labels: torch.Tensor, ids: torch.Tensor, memory_labels: torch.Tensor,
                  memory_ids: torch.Tensor, exclude_same_image: bool = True,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fallback partner: the entry of another image with the closest label (ties drawn
    uniformly); (index, found)."""
    gap = (labels.float()[:, None] - memory_labels.float()[None, :]).abs()
    if exclude_same_image:
        gap = gap.masked_fill(ids[:, None] == memory_ids[None, :], float("inf"))
    index = best_with_random_ties(-gap, generator).squeeze(1)
    return index, torch.isfinite(gap.gather(1, index[:, None]).squeeze(1))


@dataclass(frozen=True)
class Match:
    index: torch.Tensor  # (B, count) memory rows
    valid: torch.Tensor  # (B, count) bool; column 0 says whether the anchor has a partner at all
    fallback: torch.Tensor  # (B,) bool: column 0 came from the fallback rule


def match(anchor_keys: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, memory: Entries,
          tolerance: float, *, metric: str = "cosine", mode: str = "farthest",
          fallback: str = "nearest_label", exclude_same_image: bool = True, count: int = 1,
          topm: int = 4, temperature: float = 0.1,
          generator: torch.Generator | None = None) -> Match:
    """Semantic noisy matching of B anchors against a memory (method.md §3.2 step 5)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown match_fallback {fallback!r} ({', '.join(FALLBACKS)})")
    distance = distances(anchor_keys, memory.keys, metric)
    allowed = admissible(labels, ids, memory.labels, memory.ids, tolerance, exclude_same_image)
    index, valid = select(distance, allowed, mode, count, topm, temperature, generator)
    missing = ~valid[:, 0]
    if fallback == "nearest_label":
        near, found = nearest_label(labels, ids, memory.labels, memory.ids, exclude_same_image,
                                    generator)
        index[:, 0] = torch.where(missing, near, index[:, 0])
        valid[:, 0] = valid[:, 0] | (missing & found)
        used = missing & found
    else:
        used = torch.zeros_like(missing)
    return Match(index=index, valid=valid, fallback=used)

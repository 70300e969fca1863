"""Released weight files that models fetch on first use, pinned by sha256.

A model names a :class:`WeightFile` (URL, sha256, file name) and calls :func:`fetch_weights`,
which returns the file in the weights cache (``$BENCH_CACHE/weights``, default
``~/.cache/iqa-bench/weights``), downloading it there first if needed. A cached file is
checked against its hash on every use and removed when it does not match; a file whose hash
is not yet known is never downloaded, only used when the user has put it there. With
``HF_HUB_OFFLINE`` set (the project's offline switch, as for timm's hub weights) nothing is
downloaded: the error says which URL to fetch and where to put the file.

The cache only holds files; reading them safely (``torch.load(..., weights_only=True)``, no
code unpickled) is the loading model's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchmark.datasets.base import DatasetError
from benchmark.datasets.download import download, verify_sha256
from benchmark.models import ConfigError

__all__ = ["WeightFile", "weights_cache", "fetch_weights"]


@dataclass(frozen=True)
class WeightFile:
    """One released file: where it is published and the hash it must have."""

    name: str  # file name in the cache
    url: str  # pinned to a commit or release, so the hash stays valid
    sha256: str  # "" only while unknown: such a file is never downloaded, only used if present
    what: str  # for messages: whose weights these are

    @property
    def cached_name(self) -> str:
        """The cache file name, carrying the hash prefix so two releases never collide."""
        if not self.sha256:
            return self.name
        stem, dot, suffix = self.name.rpartition(".")
        return f"{stem}-{self.sha256[:8]}{dot}{suffix}" if dot else f"{self.name}-{self.sha256[:8]}"


def weights_cache() -> Path:
    """The folder cached weight files live in (read at call time, never at import)."""
    root = os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "iqa-bench"
    return Path(root) / "weights"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def fetch_weights(file: WeightFile) -> Path:
    """The verified local copy of ``file``, downloaded into the cache on first use."""
    dest = weights_cache() / file.cached_name
    if not file.sha256:  # never download what cannot be verified; a copy the user placed is theirs
        if dest.is_file():
            return dest
        raise ConfigError(f"{file.what} has no pinned sha256, so it is not downloaded "
                          f"automatically: download {file.url} to {dest}")
    where = f"download {file.url} to {dest} (sha256 {file.sha256})"
    if dest.is_file():
        try:
            verify_sha256(dest, file.sha256)
        except DatasetError as error:
            raise ConfigError(f"{file.what}: {error}; {where}") from None
        return dest
    if _offline():
        raise ConfigError(f"{file.what} is not cached and HF_HUB_OFFLINE is set: {where}")
    try:
        return download(file.url, dest, sha256=file.sha256, progress=False)
    except DatasetError as error:  # unreachable host, HTTP error, hash mismatch
        raise ConfigError(f"could not fetch {file.what} ({error}); {where}") from None

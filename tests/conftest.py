"""Shared fixtures: the generated demo dataset, prepared once, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark.datasets.prepare import prepare
from benchmark.registry import dataset_registry
from benchmark.splits import SplitProtocol


def pytest_configure(config) -> None:
    """CI passes $BENCH_SHARED_DATA relative to the checkout (../shared/data); tests link its
    files from temporary folders, where a relative path would dangle, so make it absolute."""
    value = os.environ.get("BENCH_SHARED_DATA", "")
    if value:
        os.environ["BENCH_SHARED_DATA"] = str(Path(value).resolve())


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo dataset, generated and prepared with three split seeds."""
    root = tmp_path_factory.mktemp("demo")
    dataset = dataset_registry().get("demo")()
    dataset.generate(root)
    prepare(dataset, root, SplitProtocol(seeds=(0, 1, 2)))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder named by $BENCH_SHARED_DATA; tests needing it skip without it."""
    value = os.environ.get("BENCH_SHARED_DATA", "")
    if not value or not Path(value).is_dir():
        pytest.skip("BENCH_SHARED_DATA is not set to an existing folder")
    return Path(value)


def link_dataset(source: Path, target: Path) -> Path:
    """A writable dataset root whose entries link to the read-only originals."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        (target / entry.name).symlink_to(entry.resolve())
    return target

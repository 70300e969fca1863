"""Shared fixtures: the generated demo dataset, prepared once, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark.datasets.prepare import prepare
from benchmark.registry import dataset_registry
from benchmark.datasets.splits import SplitProtocol


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread adds a synchronisation
    per small op and waits for a free core (about 15x slower); tests opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; a module-scoped fixture that
    trains asks for it too, so a reference run and the runs compared with it share the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


#: a probe that trains two epochs on the tiny set in about a second on two cores
TINY_PROBE = {"backbone": "test_resnet", "img_size": 16, "epochs": 2, "batch_size": 6,
              "train_crops": 1, "test_crops": 1, "lr": 1e-3, "warmup_epochs": 0.0,
              "head_init": "random"}


def write_tiny_set(root: Path, n_groups: int = 12) -> Path:
    """A generic dataset of 2·n_groups random 16x16 PNGs, two per content group, with
    labels.csv and generic.yaml: the smallest set a run, a split check and a decode check
    need (the demo set's 475 images make each run several seconds)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["file,mos,ref"]
    for index in range(2 * n_groups):
        name = f"images/g{index // 2:02d}_{index % 2}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name)
        rows.append(f"{name},{rng.uniform(1, 5):.3f},g{index // 2:02d}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "generic.yaml").write_text("image: file\nscore: mos\ngroup: ref\nkind: synthetic\n")
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """The tiny generic set, prepared with split seeds 0 and 1; copy it before changing it."""
    root = write_tiny_set(tmp_path_factory.mktemp("tiny"))
    prepare(dataset_registry().get("generic")(), root, SplitProtocol(seeds=(0, 1)))
    return root


def write_tiny_params(folder: Path, tiny_root: Path, results: Path, **suite) -> Path:
    """A params.yaml whose active suite runs the tiny probe on both tiny splits; ``suite``
    replaces keys of that suite (``models={"probe": {"lr": -1}}``)."""
    import yaml

    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "generic").symlink_to(tiny_root)
    tiny = {"datasets": ["generic"], "splits": [0, 1], "expect_splits": 2, "run": {"device": "cpu"},
            "teacher": None, "models": {"probe": dict(TINY_PROBE)}, "students": {}, "cross": [],
            "test_datasets": [], **suite}
    params = {"paths": {"data": str(folder / "data"), "results": str(results),
                        "pipeline": str(results / "dvc"), "report": str(results)},
              "protocol": {"seeds": "0-1", "rounding": "round", "val_fraction": 0.1,
                           "min_val_groups": 1},
              "models": {"probe": {}}, "suites": {"tiny": tiny}}
    text = yaml.safe_dump(params, sort_keys=False).replace("  tiny:\n", "  tiny: &tiny\n")
    path = folder / "params.yaml"
    path.write_text(text + "suite: *tiny\n")
    return path


def bomb_png(path: Path, side: int = 200_000) -> None:
    """A PNG of a few bytes whose header claims side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))

"""The generated demo set: byte-identical regeneration, exact counts, a learnable signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from benchmark.datasets.base import DatasetError
from benchmark.datasets.demo import (
    DISTORTIONS,
    LABEL_FILE,
    REFERENCES,
    SIZE,
    Demo,
    ssim_score,
)
from benchmark.datasets.prepare import prepare
from benchmark.registry import dataset_registry
from benchmark.datasets.splits import SplitProtocol

N_REFS, N_TYPES, N_LEVELS = 19, 5, 5
N_IMAGES = N_REFS * N_TYPES * N_LEVELS  # 475


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo")
    Demo().generate(path)
    return path


@pytest.fixture(scope="module")
def table(root):
    return Demo().parse(root)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_registered_under_its_name():
    cls = dataset_registry().get("demo")
    assert cls is Demo
    assert (cls.kind, cls.generated, cls.sources) == ("synthetic", True, ())
    assert (cls.expected_images, cls.expected_groups) == (N_IMAGES, N_REFS)
    assert cls.score_range == (0.0, 100.0) and cls.higher_is_better


def test_generation_is_byte_identical(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    Demo().generate(first)
    Demo().generate(second)
    hashes = _hashes(first)
    assert len(hashes) == N_IMAGES + N_REFS + 2  # + label file + README
    assert hashes == _hashes(second)
    Demo().generate(first)  # regenerating over an existing set changes nothing either
    assert _hashes(first) == hashes


def test_files_and_counts(root, table):
    assert len(table) == N_IMAGES
    assert table["group"].nunique() == N_REFS
    assert sorted(table["group"].unique()) == sorted(REFERENCES)
    assert table.groupby("distortion").size().to_dict() == {
        d.name: N_REFS * N_LEVELS for d in DISTORTIONS
    }
    levels = table.groupby(["group", "distortion"])["level"].apply(sorted)
    assert len(levels) == N_REFS * N_TYPES
    assert all(found == [1.0, 2.0, 3.0, 4.0, 5.0] for found in levels)
    assert not table["image"].str.startswith("reference/").any()  # references are not rated
    for image in table["image"]:
        with Image.open(root / image) as opened:
            assert (opened.mode, opened.size) == ("RGB", (SIZE, SIZE))
    assert len(list((root / "reference").glob("*.png"))) == N_REFS
    assert "not human opinion" in (root / "README.txt").read_text().lower()


def test_scores_in_range_and_monotone_in_level(table):
    assert table["score"].between(0, 100).all()
    assert table["score_unit"].between(0, 1).all()
    for (ref, kind), rows in table.groupby(["group", "distortion"]):
        scores = rows.sort_values("level")["score"].to_numpy()
        assert (np.diff(scores) < 0).all(), f"{ref}/{kind} not falling with level: {scores}"


def test_signal_spread_within_each_type(table):
    for kind, rows in table.groupby("distortion"):
        rho = spearmanr(rows["level"], rows["score"])[0]
        means = rows.groupby("level")["score"].mean()
        assert rho < -0.6, f"{kind}: SRCC(level, pseudo-MOS) only {rho:.3f}"
        assert means[1.0] - means[5.0] > 25, f"{kind}: level means {means.round(1).tolist()}"


def test_labels_match_the_stored_images(root, table):
    labels = pd.read_csv(root / LABEL_FILE)
    references = {ref: Image.open(root / "reference" / f"{ref}.png") for ref in REFERENCES}
    for image, ref, ssim in labels[["image", "ref", "ssim"]].itertuples(index=False):
        with Image.open(root / image) as distorted:
            assert ssim_score(references[ref], distorted) == pytest.approx(ssim, abs=1e-3)
    # the label is the condition's mean SSIM score: one value per (distortion, level)
    condition = labels.groupby(["distortion", "level"])
    assert (condition["pseudo_mos"].nunique() == 1).all()
    assert np.allclose(condition["pseudo_mos"].first(), condition["ssim"].mean(), atol=1e-3)
    assert table["score"].to_numpy() == pytest.approx(labels["pseudo_mos"].to_numpy())


def test_prepare_gives_group_disjoint_splits_of_exact_size(root, table, tmp_path):
    prepared = prepare(Demo(), root, SplitProtocol())
    assert prepared.meta["n_images"] == N_IMAGES
    split_file = json.loads(prepared.split_path.read_text())
    assert len(split_file["splits"]) == 10
    group_of = dict(zip(table["image"], table["group"]))
    for split in split_file["splits"]:
        # 19 refs: round(0.8*19)=15 train+val, of them round(0.1*15)=2 raised to the protocol's
        # min_val_groups=3 for validation, 4 test
        sizes = {part: len(split[part]) for part in ("train", "val", "test")}
        assert sizes == {"train": 300, "val": 75, "test": 100}
        groups = {part: {group_of[i] for i in split[part]} for part in ("train", "val", "test")}
        assert not groups["train"] & groups["val"]
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]
        assert set(split["train"] + split["val"] + split["test"]) == set(table["image"])


def _laplacian_variance(path: Path) -> float:
    luma = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    lap = luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1] - 4 * luma[1:-1, 1:-1]
    return float(lap.var())


def test_a_no_reference_sharpness_statistic_tracks_blur_labels(root, table):
    blurred = table[table["distortion"] == "blur"]
    sharpness = [_laplacian_variance(root / image) for image in blurred["image"]]
    assert spearmanr(sharpness, blurred["score"])[0] > 0.5


def test_parse_rejects_bad_label_files(tmp_path, root):
    with pytest.raises(DatasetError, match=LABEL_FILE):
        Demo().parse(tmp_path)
    lines = (root / LABEL_FILE).read_text().splitlines()
    (tmp_path / LABEL_FILE).write_text("\n".join(line.rsplit(",", 1)[0] for line in lines))
    with pytest.raises(DatasetError, match="pseudo_mos"):
        Demo().parse(tmp_path)
    lines[3] = lines[3].rsplit(",", 1)[0] + ",high"
    (tmp_path / LABEL_FILE).write_text("\n".join(lines))
    with pytest.raises(DatasetError, match="non-numeric pseudo_mos"):
        Demo().parse(tmp_path)


def test_parse_finds_a_set_in_a_wrapping_folder(tmp_path, root, table):
    inner = tmp_path / "demo-v1"
    inner.mkdir()
    (inner / LABEL_FILE).write_text((root / LABEL_FILE).read_text())
    nested = Demo().parse(tmp_path)
    assert nested["image"].iloc[0] == "demo-v1/" + table["image"].iloc[0]


def test_the_run_log_names_only_the_demo_recipe_settings_in_force(demo_root, tmp_path):
    from benchmark.runner import _recipe_notes, plan_run

    plan = plan_run("probe", "demo", 0, demo_root, {"epochs": 2}, results=tmp_path)
    line = _recipe_notes(plan)[0]
    assert line.startswith("demo recipe (probe): ") and "lr=0.003" in line
    assert " epochs=" not in line  # overridden: the run trains 2 epochs, not the recipe's 4
    assert plan.config.epochs == 2


def test_demo_shift_is_the_demo_seen_closer_at_in_between_levels(root, tmp_path):
    from benchmark.datasets.demo_shift import DemoShift

    assert dataset_registry().get("demo-shift") is DemoShift
    first, second = tmp_path / "a", tmp_path / "b"
    DemoShift().generate(first)
    DemoShift().generate(second)
    assert _hashes(first) == _hashes(second)
    shifted = DemoShift().parse(first)
    assert len(shifted) == DemoShift.expected_images == N_REFS * N_TYPES * 4
    assert sorted(shifted["group"].unique()) == sorted(REFERENCES)
    # every level lies strictly between two of the demo's, or is a demo pixel block
    for distortion in DISTORTIONS:
        shift = next(d for d in DemoShift.distortions if d.name == distortion.name)
        low, high = sorted(distortion.levels)[0], sorted(distortion.levels)[-1]
        assert all(low <= level <= high for level in shift.levels), distortion.name
        if distortion.name != "pixelate":
            assert not set(shift.levels) & set(distortion.levels), distortion.name
    for (ref, kind), rows in shifted.groupby(["group", "distortion"]):
        scores = rows.sort_values("level")["score"].to_numpy()
        assert (np.diff(scores) < 0).all(), f"{ref}/{kind}: {scores}"
    # the same scene, another view: the references differ from the demo's
    for ref in ("astronaut", "coffee"):
        demo = np.asarray(Image.open(root / "reference" / f"{ref}.png"), dtype=float)
        shift = np.asarray(Image.open(first / "reference" / f"{ref}.png"), dtype=float)
        assert demo.shape == shift.shape and np.abs(demo - shift).mean() > 10
    assert "demo-shift" in (first / "README.txt").read_text()

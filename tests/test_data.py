"""Decoded-image cache and crop datasets."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import loader
from benchmark.loader import DecodeSpec, ImageCache, EvalCrops, TrainCrops


@pytest.fixture(scope="module")
def images(demo_root):
    return sorted((demo_root / "distorted").glob("*.png"))[:6]


def test_disk_cache_matches_memory_and_is_reused(images, tmp_path, monkeypatch):
    spec = DecodeSpec(min_side=112)  # 96-px images reflect-padded to 112
    memory = ImageCache(images, spec)
    disk = ImageCache(images, spec, mode="disk", cache_dir=tmp_path)
    assert all(np.array_equal(memory[i], disk[i]) for i in range(len(images)))
    assert memory[0].shape == (112, 112, 3) and memory[0].dtype == np.uint8

    def no_decoding(*_):
        raise AssertionError("a cached image set was decoded again")

    monkeypatch.setattr(loader, "decode_image", no_decoding)
    again = ImageCache(images, spec, mode="disk", cache_dir=tmp_path)
    assert np.array_equal(again[5], memory[5])


def test_resize_takes_height_then_width(images):
    cache = ImageCache(images[:1], DecodeSpec(resize_hw=(40, 60)))
    assert cache[0].shape == (40, 60, 3)


def test_crops_are_seeded_per_epoch_and_identical_at_every_evaluation(images):
    cache = ImageCache(images, DecodeSpec())
    labels = np.arange(len(images), dtype=float)
    train = TrainCrops(cache, labels, labels / 10, crop=32, n_crops=3, seed=1)
    assert len(train) == 18 and train[0, 7]["index"] == 1  # repetition: sample 7 is image 1
    first = train[0, 7]["image"]
    assert np.array_equal(first, train[0, 7]["image"])
    assert not np.array_equal(first, train[1, 7]["image"])
    test = EvalCrops(cache, crop=32, n_crops=4, seed=1)
    assert [test[i]["index"] for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.array_equal(test[5]["image"], EvalCrops(cache, 32, 4, seed=1)[5]["image"])
    assert not np.array_equal(test[4]["image"], test[5]["image"])


def test_an_extra_crop_is_independent_and_leaves_the_main_crop_unchanged(images):
    cache = ImageCache(images, DecodeSpec())
    labels = np.arange(len(images), dtype=float)
    plain = TrainCrops(cache, labels, labels, crop=32, n_crops=2, seed=3)
    paired = TrainCrops(cache, labels, labels, crop=32, n_crops=2, seed=3,
                        extra_crops=("teacher_image",))
    for sample in range(len(plain)):
        assert np.array_equal(plain[0, sample]["image"], paired[0, sample]["image"])
        assert not np.array_equal(paired[0, sample]["image"], paired[0, sample]["teacher_image"])
    batch = loader.collate([paired[0, 0], paired[0, 1]])
    assert batch["teacher_image"].shape == batch["image"].shape == (2, 3, 32, 32)
    assert "teacher_image" not in loader.collate([plain[0, 0], plain[0, 1]])

"""The two sources of training batches cut the same crops, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import batches as batches_module
from benchmark.batches import DeviceBatches, LoaderBatches, training_batches
from benchmark.loader import ImageArrays, TrainCrops
from benchmark.engine import RunConfig
from benchmark.models import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: (height, width): decoded sizes differ, as in authentic sets without a resize
SHAPES = [(40, 40), (37, 52), (64, 33), (32, 32), (45, 61), (33, 90), (50, 47)]


def _train_set(extra=("teacher_image",)) -> TrainCrops:
    rng = np.random.default_rng(0)
    cache = ImageArrays([rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES])
    labels = np.linspace(1.0, 5.0, len(SHAPES))
    return TrainCrops(cache, labels, labels / 5, crop=32, n_crops=3, seed=4,
                      extra_crops=extra)


def _epochs(source, epochs=(0, 1)) -> list[dict]:
    return [{key: value.clone() for key, value in batch.items()}
            for epoch in epochs for batch in source.epoch(epoch)]


@pytest.mark.parametrize("workers", [0, 2])
def test_the_device_path_cuts_the_loaders_batches_bit_for_bit(workers):
    train_set = _train_set()
    loader = _epochs(LoaderBatches(train_set, 4, workers, 9, False))
    device = _epochs(DeviceBatches(train_set, 4, 9, torch.device("cpu")))
    assert len(loader) == len(device) == 2 * (len(train_set) // 4)
    for ours, theirs in zip(device, loader):
        assert ours.keys() == theirs.keys() == {"image", "teacher_image", "label", "unit", "index"}
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype, key
            assert torch.equal(ours[key], theirs[key]), key
    # the epochs differ, and flips happened: a broken epoch or flip could not pass above
    assert not torch.equal(device[0]["image"], device[len(device) // 2]["image"])
    flips = [views[0][2] for e in (0, 1) for _, views in
             (train_set.draws(e, s) for s in range(len(train_set)))]
    assert 0 < sum(flips) < len(flips)


def test_a_flip_is_the_mirror_of_the_same_crop():
    train_set = _train_set(extra=())
    images = DeviceBatches(train_set, 4, 9, torch.device("cpu")).images
    index, top, left = torch.tensor([1, 5]), torch.tensor([3, 1]), torch.tensor([17, 50])
    plain = images.crops(index, top, left, torch.tensor([False, False]), 32)
    flipped = images.crops(index, top, left, torch.tensor([True, True]), 32)
    assert torch.equal(flipped, plain.flip(-1))
    expected = torch.from_numpy(train_set.cache[5][1:33, 50:82].transpose(2, 0, 1).copy())
    assert torch.equal(plain[1], expected)


def test_the_device_path_is_chosen_or_refused_by_its_budget(monkeypatch):
    train_set, cpu, lines = _train_set(), torch.device("cpu"), []
    need = sum(h * w * 3 for h, w in SHAPES)
    assert training_batches(train_set, 4, RunConfig(), cpu, lines.append).path == "loader"
    assert lines == []  # auto keeps the loader on a CPU without a word
    chosen = training_batches(train_set, 4, RunConfig(data_on_device="on"), cpu, lines.append)
    assert chosen.path == "device" and lines[-1].startswith("data on cpu: 0.00 GiB")
    monkeypatch.setattr(batches_module, "_free_bytes", lambda _: int(need / 0.4) - 10)
    with pytest.raises(ConfigError, match=r"decoded training images take 0\.00 GiB, over the "
                                          r"budget .* use auto or off"):
        training_batches(train_set, 4, RunConfig(data_on_device="on"), cpu, lines.append)
    monkeypatch.setattr(batches_module, "_free_bytes", lambda _: int(need / 0.4) + 10)
    assert training_batches(train_set, 4, RunConfig(data_on_device="on"), cpu).path == "device"
    off = RunConfig(data_on_device="off")
    assert training_batches(train_set, 4, off, cpu, lines.append).path == "loader"
    with pytest.raises(ConfigError, match="data_on_device 'gpu' is not one of auto, on, off"):
        RunConfig(data_on_device="gpu")


def test_a_run_on_the_device_path_records_it_and_matches_the_loader(tiny_root, tmp_path):
    from conftest import TINY_PROBE

    from benchmark.runner import run_one

    small = {**TINY_PROBE, "epochs": 2}
    records = {mode: run_one("probe", "generic", 0, tiny_root, small,
                             RunConfig(progress=False, data_on_device=mode), tmp_path / mode,
                             log=lambda _: None)
               for mode in ("on", "off")}
    assert records["on"]["data_path"] == "device" and records["off"]["data_path"] == "loader"
    assert records["on"]["config_hash"] == records["off"]["config_hash"]
    assert records["on"]["history"] != [] and all(
        ours[part] == theirs[part] for ours, theirs in
        zip(records["on"]["history"], records["off"]["history"]) for part in ("train", "val", "test"))


def test_batched_evaluation_gives_the_per_crop_loaders_scores():
    from benchmark.loader import EvalCrops, collate
    from benchmark.engine import predict
    from benchmark.runner import resolve_config

    torch.manual_seed(0)
    cls, config = resolve_config("probe", "demo", {"backbone": "test_resnet",
                                                   "pretrained": "false", "img_size": 32})
    model = cls(config).eval()
    cache = _train_set().cache
    crops = EvalCrops(cache, 32, 5, seed=2)
    with torch.no_grad():  # one crop at a time, stacked: the loader's way
        images = collate([crops[i] for i in range(len(crops))])["image"]
        expected = model(images.float() / 255).view(len(cache), 5).mean(1).double().numpy()
    got = predict(model, cache, 32, 5, 2, torch.device("cpu"), batch_size=4)
    assert got.shape == (len(SHAPES),) and np.ptp(got) > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_evaluation_images_are_packed_once_per_run(demo_root, tmp_path, monkeypatch):
    """Every epoch's evaluation cuts its crops from the copy packed before the first."""
    from benchmark import batches
    from benchmark.engine import RunConfig
    from benchmark.runner import run_one

    packed = []
    original = batches.PackedImages.__init__

    def counting(self, arrays, device):
        packed.append(len(arrays))
        original(self, arrays, device)

    monkeypatch.setattr(batches.PackedImages, "__init__", counting)
    recipe = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "epochs": 3,
              "batch_size": 32, "train_crops": 1, "test_crops": 2, "warmup_epochs": 0,
              "head_init": "random"}
    record = run_one("probe", "demo", 0, demo_root, recipe, RunConfig(progress=False),
                     tmp_path, log=lambda _: None)
    assert len(record["history"]) == 3
    # the validation and test images once each, for three evaluations; the training images
    # never (the CPU loader crops them, and a random head asks for no features pass)
    data = record["data"]
    assert packed == [data["n_val"], data["n_test"]]

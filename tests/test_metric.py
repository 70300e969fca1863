"""A trained run as a metric: the Python API, ``bench score`` on files and folders, and both
agreeing with each other and with the run's own test predictions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark import load_metric
from benchmark.cli import main
from benchmark.engine import RunConfig
from benchmark.metric import collect_images, list_images
from benchmark.runner import run_one

# two random 32-pixel crops of the 96-pixel demo images: the crops' seeds matter
TINY = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "epochs": 1,
        "train_crops": 1, "test_crops": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def run(demo_root, tmp_path_factory):
    """A tiny probe run on the demo (unit labels: scores must come back in MOS 0-100)."""
    results = tmp_path_factory.mktemp("results")
    record = run_one("probe", "demo", 0, demo_root, TINY,
                     RunConfig(progress=False, max_steps_per_epoch=1), results, log=lambda _: None)
    predictions = pd.read_csv(f"{record['_dir']}/predictions.csv")
    return record, predictions.query("part == 'test'").reset_index(drop=True)


@pytest.fixture()
def folder(run, demo_root, tmp_path):
    """Five test images, two of them in a subfolder, plus files that are not images."""
    _, test = run
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    names = []
    for number, image in enumerate(test["image"][:5]):
        target = root / ("sub" if number >= 3 else "") / (demo_root / image).name
        shutil.copy(demo_root / image, target)
        names.append(image)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    return root, names


def _bench(*args):
    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_metric_scores_as_the_run_did_on_the_mos_scale(run, demo_root):
    record, test = run
    metric = load_metric(record["_dir"])
    assert metric.trained.rule == "val"
    assert metric.trained.epoch == record["metrics"]["val"]["epoch"]
    assert metric.name == f"probe/demo/split0-{record['config_hash'][:10]}"
    assert metric.higher_is_better is True and metric.score_range == (0.0, 100.0)
    assert metric.scale.describe() == "MOS 0\u2013100, higher is better"
    scores = metric([demo_root / image for image in test["image"]])
    a, b = metric.scale.unit_map
    assert a == pytest.approx(0.01) and b == pytest.approx(0.0, abs=1e-12)
    # the run's test predictions, its two seeded crops averaged (float32 noise only)
    np.testing.assert_allclose(a * scores + b, test["pred_unit_val"], rtol=0, atol=1e-6)
    # one path: a float; alone in its batch, so equal to float32 noise (the CPU's convolution
    # kernels depend on the batch size), not to the last digit
    one = metric(demo_root / test["image"][3])
    assert isinstance(one, float) and one == pytest.approx(scores[3], rel=1e-6)


def test_the_api_and_bench_score_give_the_same_digits(run, folder, tmp_path):
    record, _ = run
    root, _ = folder
    metric = load_metric(record["_dir"])
    expected = metric(root)
    result = _bench(root, "--checkpoint", record["_dir"], "--json", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [row["score"] for row in payload["scores"]] == expected.tolist()
    assert [row["image"] for row in payload["scores"]] == [str(p) for p in list_images(root)]
    assert payload["scale"] == {"score_type": "MOS", "higher_is_better": True,
                                "score_range": [0.0, 100.0]}
    assert "scale: MOS 0\u2013100, higher is better" in result.stderr.splitlines()
    written = pd.read_csv(tmp_path / "s.csv")
    assert written["score"].tolist() == expected.tolist()
    text = _bench(root, "--checkpoint", record["_dir"])
    lines = [line.split("\t") for line in text.stdout.splitlines()]
    assert [float(value) for _, value in lines] == [round(v, 6) for v in expected]


def test_folder_scoring_names_the_corrupt_file_and_scores_the_rest(run, folder, tmp_path):
    record, _ = run
    root, _ = folder
    good = load_metric(record["_dir"])(root)
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "scores.json"
    result = _bench(root, "--checkpoint", record["_dir"], "--out", out)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"{root / 'sub' / 'broken.png'}: cannot decode")
    assert result.stderr.splitlines()[-1] == \
        "Error: 1 of 6 input(s) could not be scored (listed above)"
    scored = [float(line.split("\t")[1]) for line in result.stdout.splitlines()]
    assert scored == [round(v, 6) for v in good]
    written = json.loads(out.read_text())
    assert [row["score"] for row in written["scores"]] == good.tolist()
    assert written["failed"][0]["image"] == str(root / "sub" / "broken.png")
    with pytest.raises(ValueError, match="broken.png: cannot decode"):
        load_metric(record["_dir"])(root)


def test_in_memory_images_are_keyed_by_their_pixels(run, demo_root):
    record, test = run
    metric = load_metric(record["_dir"])
    pictures = [Image.open(demo_root / image) for image in test["image"][:3]]
    tensor = torch.stack([torch.from_numpy(np.array(p.convert("RGB"))).permute(2, 0, 1)
                          for p in pictures]).float() / 255
    batch = metric(tensor)
    assert batch.shape == (3,)
    # an 8-bit tensor scores as its image, wherever it sits in a batch; float32 results move
    # in their last bits with the batch a convolution sees
    singles = [metric(p) for p in pictures]
    np.testing.assert_allclose(batch, singles, rtol=1e-6)
    np.testing.assert_allclose(metric(tensor.flip(0)), batch[::-1], rtol=1e-6)
    assert metric(tensor[1]) == singles[1]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        metric(tensor * 2)
    with pytest.raises(ValueError, match="Bx3xHxW"):
        metric(tensor[:, :1])
    with pytest.raises(TypeError, match="not int"):
        metric(3)


def test_runs_recorded_before_their_label_scale_still_score_in_mos(run, tmp_path):
    record, _ = run
    old = tmp_path / "old"
    shutil.copytree(record["_dir"], old)
    stored = json.loads((old / "record.json").read_text())
    del stored["labels"]
    (old / "record.json").write_text(json.dumps(stored))
    legacy, current = load_metric(old).scale, load_metric(record["_dir"]).scale
    assert legacy.score_type == current.score_type == "MOS"
    assert legacy.score_range == current.score_range == (0.0, 100.0)
    np.testing.assert_allclose(legacy.unit_map, current.unit_map, rtol=1e-9, atol=1e-12)
    bare = tmp_path / "elsewhere" / "weights.pt"
    bare.parent.mkdir()
    shutil.copy(old / "best_val.pt", bare)
    unit = load_metric(bare)  # no record: the unit outputs of a unit-label model, said so
    assert unit.scale.describe() == "unit 0\u20131, higher is better" and unit.trained.rule is None


def test_collect_images_expands_folders_once_and_names_what_is_missing(folder, tmp_path):
    root, _ = folder
    images = list_images(root)
    assert images == sorted(images) and sum(p.parent.name == "sub" for p in images) == 2
    assert len(images) == 5 and all(p.suffix == ".png" for p in images)  # not .txt, not hidden
    empty = tmp_path / "empty"
    empty.mkdir()
    paths, failed = collect_images([images[0], root, tmp_path / "gone.jpg", empty])
    assert paths == images  # images[0] once
    assert [reason.split(": ")[1] for _, reason in failed] == ["no such file or folder",
                                                                "no images (.bmp, .gif, .jpeg, "
                                                                ".jpg, .pgm, .png, .ppm, .tif, "
                                                                ".tiff, .webp)"]


def test_score_refuses_an_output_it_cannot_write_before_scoring(run, folder, tmp_path):
    record, _ = run
    root, _ = folder
    result = _bench(root, "--checkpoint", record["_dir"], "--out", tmp_path / "s.txt")
    assert result.exit_code == 1 and "must end in .csv or .json" in result.output
    assert not (tmp_path / "s.txt").exists() and result.stdout.count("\t") == 0

"""pyiqa checkpoints through a model's key map: ``pyiqa:MODEL:FILE`` in load_metric and
``bench score``.

The real key maps (HyperIQA, DBCNN, MUSIQ, MANIQA, TReS) and their golden outputs against
pyiqa's own networks are tested with the maps; here the probe gets a stand-in map (pyiqa
names are ours behind a ``net_`` prefix), so the loading path is tested on its own: the file
as pyiqa saves it, ``weights_only``, ``module.`` prefixes, strict loading, the protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmark import load_metric
from benchmark.cli import main
from benchmark.loader import ImageArrays
from benchmark.engine import CheckpointError, predict
from benchmark.models import config_from_dict, get_model_class

ARCH = {"backbone": "test_resnet", "img_size": 32, "test_crops": 2, "batch_size": 4}


@pytest.fixture
def seeded(monkeypatch, tmp_path):
    """A seeded probe saved as pyiqa saves a network, and the probe class given a key map."""
    cls = get_model_class("probe")
    monkeypatch.setattr(cls, "pyiqa_key_map", staticmethod(
        lambda state: {key.removeprefix("net_"): value for key, value in state.items()}),
        raising=False)
    torch.manual_seed(3)
    model = cls(config_from_dict(cls.Config, {**ARCH, "pretrained": "false"})).eval()
    with torch.no_grad():
        model.head.bias += 0.5  # unlike any fresh model
    params = {f"module.net_{key}": value for key, value in model.state_dict().items()}
    path = tmp_path / "PROBE_demo.pth"
    torch.save({"params": params}, path)
    return model, path


def _pictures(n: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 48, 40), generator=generator).float() / 255


def test_a_pyiqa_checkpoint_scores_like_the_network_it_holds(seeded):
    model, path = seeded
    metric = load_metric(f"pyiqa:probe:{path}", overrides=ARCH)
    images = _pictures()
    arrays = [np.ascontiguousarray((x * 255).round().byte().permute(1, 2, 0).numpy())
              for x in images]
    expected = predict(model, ImageArrays(arrays), 32, 2, 0, torch.device("cpu"), 4,
                       channels_last=True)
    assert metric(images).tolist() == expected.tolist()
    assert metric.trained.source == "pyiqa" and metric.name == "pyiqa:probe:PROBE_demo.pth"
    assert metric.higher_is_better is None and metric.score_range is None
    bare = path.with_name("bare.pth")  # some released files are the state dict itself
    torch.save(torch.load(path, weights_only=True)["params"], bare)
    assert load_metric(f"pyiqa:probe:{bare}", overrides=ARCH)(images).tolist() == expected.tolist()


def test_pyiqa_checkpoints_that_do_not_fit_are_refused_in_one_line(seeded, tmp_path):
    _, path = seeded
    def variant(name: str, change) -> str:
        params = torch.load(path, weights_only=True)["params"]
        change(params)
        torch.save({"params": params}, tmp_path / name)
        return f"pyiqa:probe:{tmp_path / name}"

    other = variant("other.pth", lambda p: p.update({"module.net_extra.weight": p.pop(
        "module.net_head.bias")}))
    with pytest.raises(CheckpointError, match=r"other.pth does not fit our probe with this "
                                              r"config \(1 missing key\(s\), first head.bias; "
                                              r"1 unexpected key\(s\), first extra.weight\)"):
        load_metric(other, overrides=ARCH)
    narrow = variant("narrow.pth",
                     lambda p: p.update({"module.net_head.weight": torch.zeros(1, 3)}))
    with pytest.raises(CheckpointError, match=r"narrow.pth does not fit our probe with this "
                                              r"config \(size mismatch for head.weight"):
        load_metric(narrow, overrides=ARCH)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "where": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="not a checkpoint that loads with weights_only"):
        load_metric(f"pyiqa:probe:{unsafe}", overrides=ARCH)
    with pytest.raises(CheckpointError, match=r"brisque has no pyiqa key map; pyiqa checkpoints "
                                              r"load into: .*probe"):
        load_metric(f"pyiqa:brisque:{path}")
    with pytest.raises(CheckpointError, match="given as pyiqa:MODEL:FILE"):
        load_metric(f"pyiqa:{path.name}")
    with pytest.raises(FileNotFoundError, match="no pyiqa checkpoint at"):
        load_metric("pyiqa:probe:missing.pth")


def test_bench_score_takes_a_pyiqa_checkpoint_and_its_architecture(seeded, tmp_path):
    _, path = seeded
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray((_pictures(1)[0] * 255).round().byte().permute(1, 2, 0).numpy()).save(image)
    sets = [word for key, value in ARCH.items() for word in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(main, ["score", str(image), "--checkpoint",
                                       f"pyiqa:probe:{path}", *sets])
    assert result.exit_code == 0, result.output
    value = float(result.stdout.split("\t")[1])
    assert value == round(load_metric(f"pyiqa:probe:{path}", overrides=ARCH)(image), 6)
    assert result.stderr.splitlines()[:2] == [
        f"probe: pyiqa checkpoint {path} through its key map",
        "scale: pyiqa output: the training dataset's scale and direction are unknown "
        "(no run record)"]
    refused = CliRunner().invoke(main, ["score", str(image), "--checkpoint", str(path),
                                        "--set", "img_size=32"])
    assert refused.exit_code == 1 and "overrides apply to pyiqa checkpoints only" in refused.output


@torch.no_grad()
def test_a_file_saved_as_pyiqa_saves_hyperiqa_gives_pyiqas_outputs(tmp_path, monkeypatch):
    """With the real key map: pyiqa's HyperNet (a small ResNet, seeded weights) saved as pyiqa
    saves it, loaded by our path, scores the same images alike (float64)."""
    hypernet = pytest.importorskip("pyiqa.archs.hypernet_arch",
                                   reason="pyiqa is not installed: pip install --no-deps "
                                          "pyiqa==0.1.16")
    seeded = pytest.importorskip("seeded_weights", reason="needs the key maps' golden helpers")
    if getattr(get_model_class("hyperiqa"), "pyiqa_key_map", None) is None:
        pytest.skip("hyperiqa has no pyiqa key map")
    import timm

    from benchmark.pyiqa_weights import load_pyiqa_model

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, *args, **kwargs: create(
        name, *args, **{**kwargs, "pretrained": False}))
    theirs = hypernet.HyperNet(base_model_name="resnet14t", pretrained=False).eval()
    seeded.fill_seeded(theirs, 0)
    path = tmp_path / "HyperIQA_seeded.pth"
    torch.save({"params": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, path)
    ours = load_pyiqa_model("hyperiqa", path, {"backbone": "resnet14t"}).double()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x[1] = x[1] ** 4
    expected = theirs.double().forward_patch(x).reshape(-1)
    assert abs(float(expected[0] - expected[1])) > 1e-3  # the images score apart
    torch.testing.assert_close(ours(x).reshape(-1), expected, rtol=0, atol=1e-5)


#: 475 demo images: whole batches of them, not ARCH's four
DEMO_ARCH = {**ARCH, "batch_size": 64}


def _sets() -> list[str]:
    return [word for key, value in DEMO_ARCH.items() for word in ("--set", f"{key}={value}")]


def _cross(results: Path, root: Path, *words: str):
    return CliRunner().invoke(main, ["cross", "--train", "demo", "--test", "demo", "--root-test",
                                     str(root), "--results", str(results), "--device", "cpu",
                                     *_sets(), *words])


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_cross_scores_a_pyiqa_release_as_bench_score_does(seeded, demo_root, tmp_path):
    """bench cross --checkpoint pyiqa:MODEL:FILE: bench score's numbers against the test
    set's labels, one record keyed by the file's sha256, a labelled row of the cross table."""
    import hashlib
    import json

    import pandas as pd

    from benchmark.datasets.prepare import load_prepared
    from benchmark.metrics import all_metrics
    from benchmark.report.cross import cross_summary
    from benchmark.report.published import load_published
    from benchmark.report.tables import cross_table

    _, path = seeded
    results = tmp_path / "results"
    outcome = _cross(results, demo_root, "--checkpoint", f"pyiqa:probe:{path}")
    assert outcome.exit_code == 0, outcome.output
    (record_path,) = (results / "cross" / "pyiqa-probe" / "demo__demo").glob("split0-*.json")
    record = json.loads(record_path.read_text())

    prepared = load_prepared(demo_root, "demo")
    images = [str(prepared.image_path(image)) for image in prepared.table["image"]]
    scores = tmp_path / "scores.csv"
    scored = CliRunner().invoke(main, ["score", *images, "--checkpoint", f"pyiqa:probe:{path}",
                                       *_sets(), "--quiet", "--out", str(scores)])
    assert scored.exit_code == 0, scored.output
    by_score = pd.read_csv(scores)
    assert by_score["image"].tolist() == images
    expected = all_metrics(by_score["score"].to_numpy(float),
                           prepared.table["score_unit"].to_numpy(float))
    for name in ("srcc", "krcc", "plcc", "plcc_l5"):
        assert abs(record["metrics"][name] - expected[name]) < 1e-9, name
    per_image = pd.read_csv(record_path.with_suffix(".csv"))
    assert per_image["pred"].to_numpy() == pytest.approx(by_score["score"].to_numpy(), rel=1e-7)
    assert np.isfinite(record["metrics"]["srcc"]) and np.ptp(by_score["score"]) > 0
    assert np.isnan(record["metrics"]["rmse"])  # its scale is unknown: no unit map
    assert (record["release"], record["rule"], record["model"]) == ("pyiqa", "release", "probe")
    assert record["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["data"]["n_images"] == len(images) == 475

    summary = cross_summary(results, expected={"*": 10})
    row = summary[summary["metric"] == "srcc"].iloc[0]
    # one released model completes its cell, whatever number of splits our runs expect
    assert (row["model"], row["dataset"], row["n"], row["expected"], bool(row["complete"])) == (
        "pyiqa:probe", "demo->demo", 1, 1, True)
    table = cross_table(summary, load_published())
    line = next(text for text in table.splitlines() if text.startswith("Probe (pyiqa release)"))
    assert line.split(" & ")[2].strip(" \\") == f"{record['metrics']['srcc']:.3f}"
    assert "not trained here" in table

    written = record_path.stat().st_mtime_ns
    again = _cross(results, demo_root, "--checkpoint", f"pyiqa:probe:{path}")
    assert again.exit_code == 0 and "already done" in again.output
    assert record_path.stat().st_mtime_ns == written
    forced = _cross(results, demo_root, "--checkpoint", f"pyiqa:probe:{path}", "--force")
    assert forced.exit_code == 0 and record_path.stat().st_mtime_ns != written


def test_bench_cross_refuses_bad_release_input_in_one_line(seeded, demo_root, tmp_path):
    _, path = seeded
    results = tmp_path / "results"
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    refusals = {
        (f"pyiqa:probe:{tmp_path / 'missing.pth'}",): "no pyiqa checkpoint at",
        (f"pyiqa:probe:{text}",): "not a checkpoint that loads with weights_only=True",
        (f"pyiqa:nosuchmodel:{path}",): "nosuchmodel",
        (f"pyiqa:{path}",): "given as pyiqa:MODEL:FILE",
        (str(path),): "a released checkpoint is given as pyiqa:MODEL:FILE",
        (f"pyiqa:probe:{path}", "--model", "probe"): "--model select runs",
    }
    for words, message in refusals.items():
        outcome = _cross(results, demo_root, "--checkpoint", *words)
        assert outcome.exit_code == 1, (words, outcome.output)
        assert len(outcome.output.strip().splitlines()) == 1 and message in outcome.output, \
            (words, outcome.output)
    assert not results.exists()

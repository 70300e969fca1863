"""Parsers of the authentic datasets (CLIVE, KonIQ-10k, SPAQ, FLIVE) and the generic CSV set.

CLIVE, KonIQ and SPAQ are read from the real label files in $BENCH_SHARED_DATA when it is
there (skipped otherwise); FLIVE, the error paths and Generic use small files written here in
the original formats (MAT v5 cells, CSV with CRLF, xlsx).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from click.testing import CliRunner

from benchmark.datasets.base import DatasetError
from benchmark.datasets.flive import Flive
from benchmark.datasets.generic import Generic
from benchmark.datasets.koniq import Koniq
from benchmark.datasets.livec import TRAINING_IMAGES, Livec
from benchmark.datasets.prepare import load_prepared, prepare
from benchmark.datasets.spaq import Spaq
from benchmark.registry import dataset_registry
from benchmark.datasets.splits import SplitProtocol, load_split_file


def shared(name: str) -> Path:
    base = os.environ.get("BENCH_SHARED_DATA")
    root = Path(base or "") / name
    if not base or not root.is_dir():
        pytest.skip(f"needs $BENCH_SHARED_DATA/{name}")
    return root


def livec_mirror(tmp_path: Path) -> Path:
    """The shared CLIVE copy seen through links, so prepare writes bench/ here, not there."""
    source = shared("livec") / "ChallengeDB_release"
    release = tmp_path / "livec" / "ChallengeDB_release"
    (release / "Data").mkdir(parents=True)
    for mat in (source / "Data").iterdir():
        (release / "Data" / mat.name).symlink_to(mat)
    (release / "Images").symlink_to(source / "Images", target_is_directory=True)
    return tmp_path / "livec"


# --- registry -------------------------------------------------------------------------------

@pytest.mark.parametrize("alias, name", [
    ("livec", "livec"), ("clive", "livec"), ("LIVEChallenge", "livec"), ("koniq10k", "koniq"),
    ("spaq", "spaq"), ("livefb", "flive"), ("paq2piq", "flive"), ("generic", "generic"),
])
def test_names_and_aliases_resolve(alias, name):
    registry = dataset_registry()
    assert registry.canonical(alias) == name
    assert registry.get(name).name == name


def test_declarations():
    expected = {"livec": (1162, False), "koniq": (10073, True), "spaq": (11125, False),
                "flive": (39810, True)}
    for name, (images, official) in expected.items():
        cls = dataset_registry().get(name)
        assert (cls.kind, cls.expected_images, cls.expected_groups) == ("authentic", images, images)
        assert cls.has_official_split is official and cls.higher_is_better
        assert cls.sources and cls.layout and cls.citation and cls.license
        manual = [s for s in cls.sources if s.access == "manual"]
        assert name == "koniq" or manual, f"{name}: forms and Box shares are manual"


# --- CLIVE ----------------------------------------------------------------------------------

@pytest.mark.realdata
def test_livec_real_labels():
    table = Livec().parse(shared("livec"))
    assert len(table) == 1162 and table["image"].is_unique
    assert table["image"].iloc[0] == "ChallengeDB_release/Images/100.bmp"
    assert int(table["image"].str.endswith(".JPG").sum()) == 627
    assert int(table["image"].str.endswith(".bmp").sum()) == 535
    assert not table["image"].str.contains("trainingImages").any()
    assert round(table["score"].min(), 2) == 3.42 and round(table["score"].max(), 2) == 92.43
    assert round(table["score"].mean(), 2) == 55.40
    assert round(table["score_std"].min(), 2) == 6.76
    assert round(table["score_std"].max(), 2) == 28.59
    assert (table["group"] == table["image"]).all() and (table["official_split"] == "").all()


@pytest.mark.realdata
def test_livec_training_images_on_request():
    table = Livec(include_training="true").parse(shared("livec"))
    assert len(table) == 1169
    assert table["image"].head(7).tolist() == [
        f"ChallengeDB_release/Images/trainingImages/{name}" for name in TRAINING_IMAGES]
    assert round(table["score"].iloc[0], 4) == 63.9634


@pytest.mark.realdata
def test_livec_partial_copy_needs_allow_missing(tmp_path):
    root = livec_mirror(tmp_path)
    with pytest.raises(DatasetError, match=r"742 of 1162 listed images are missing .* first "
                                           r"ChallengeDB_release/Images/100\.bmp"):
        prepare(Livec(), root, SplitProtocol(seeds=(0,)))
    assert not (root / "bench" / "meta.json").exists()
    prepared = prepare(Livec(), root, SplitProtocol(seeds=(0, 1)), allow_missing=True)
    assert len(prepared.table) == 420
    meta = load_prepared(root, "livec").meta
    assert (meta["n_listed"], meta["n_images"], meta["n_missing"]) == (1162, 420, 742)
    assert meta["partial"] and meta["first_missing"] == "ChallengeDB_release/Images/100.bmp"
    split = load_split_file(root / "bench" / "splits.json")["splits"][0]
    # 420 images: round(0.8*420) = 336 train+val, round(0.1*336) = 34 val
    assert [len(split[p]) for p in ("train", "val", "test")] == [302, 34, 84]


def write_livec(root: Path, names: list[str], mos: list[float], std=None) -> None:
    data = root / "ChallengeDB_release" / "Data"
    data.mkdir(parents=True, exist_ok=True)
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = name
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": cells})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    std = mos if std is None else std
    scipy.io.savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.array([std])})


def test_livec_fixture_and_errors(tmp_path):
    names = list(TRAINING_IMAGES) + ["3.bmp", "4.JPG", "5.bmp"]
    write_livec(tmp_path, names, [50.0] * 7 + [10.0, 55.5, 90.0])
    table = Livec().parse(tmp_path)
    assert table["image"].tolist() == [f"ChallengeDB_release/Images/{n}" for n in names[7:]]
    assert table["score"].tolist() == [10.0, 55.5, 90.0]
    assert table["score_unit"].tolist() == [0.1, 0.555, 0.9]
    write_livec(tmp_path, names, [50.0] * 9)
    with pytest.raises(DatasetError, match="AllMOS_release.mat has 9 values for 10 names"):
        Livec().parse(tmp_path)
    write_livec(tmp_path, names[7:], [1.0, 2.0, 3.0])
    with pytest.raises(DatasetError, match="does not start with t1.bmp..t7.bmp"):
        Livec().parse(tmp_path)
    (tmp_path / "ChallengeDB_release" / "Data" / "AllStdDev_release.mat").unlink()
    with pytest.raises(DatasetError, match="label file Data/AllStdDev_release.mat not found"):
        Livec().parse(tmp_path)
    (tmp_path / "ChallengeDB_release" / "Data" / "AllMOS_release.mat").write_bytes(b"not a mat")
    with pytest.raises(DatasetError, match="AllMOS_release.mat"):
        Livec().parse(tmp_path)
    with pytest.raises(DatasetError, match="include_training must be true or false"):
        Livec(include_training="maybe")


# --- KonIQ-10k ------------------------------------------------------------------------------

@pytest.mark.realdata
def test_koniq_real_labels():
    koniq = Koniq()
    table = koniq.parse(shared("koniq10k"))
    assert len(table) == 10073 and table["image"].is_unique
    assert table["official_split"].value_counts().to_dict() == {
        "train": 7058, "test": 2015, "val": 1000}
    assert table["image"].iloc[0] == "1024x768/10004473376.jpg"
    assert round(table["score"].min(), 2) == 3.91 and round(table["score"].max(), 2) == 88.39
    assert table["score_std"].isna().all()  # SD is on the 1-5 scale: not the score's std
    assert koniq.describe()["label_file"] == "koniq10k_distributions_sets.csv:MOS"


@pytest.mark.realdata
def test_koniq_raw_scale_and_small_images():
    table = Koniq(images="512x384", score="raw").parse(shared("koniq10k"))
    assert len(table) == 10073 and table["image"].iloc[0] == "512x384/10004473376.jpg"
    assert table["score"].min() == 1.125 and round(table["score"].max(), 3) == 4.364
    assert table["score_unit"].between(0, 1).all()
    assert (table["official_split"] != "").all()


@pytest.mark.realdata
def test_koniq_scores_file_alone(tmp_path):
    (tmp_path / "koniq10k_scores.csv").symlink_to(shared("koniq10k") / "koniq10k_scores.csv")
    table = Koniq().parse(tmp_path)
    full = Koniq().parse(shared("koniq10k"))
    assert len(table) == 10073 and (table["official_split"] == "").all()
    merged = full.set_index("image")["score"].reindex(table["image"]).to_numpy()
    assert np.abs(merged - table["score"].to_numpy()).max() < 1e-6


KONIQ_SETS = ("image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n"
              "1.jpg,0,0,0.5,0.5,0,100,60.5,0.5,training\n"
              "2.jpg,0,0.5,0.5,0,0,100,40.25,0.5,validation\n"
              "3.jpg,0,0,0,0.5,0.5,100,80.0,0.5,test\n")


def test_koniq_fixture_and_errors(tmp_path):
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(KONIQ_SETS)
    table = Koniq().parse(tmp_path)
    assert table["official_split"].tolist() == ["train", "val", "test"]
    assert table["score"].tolist() == [60.5, 40.25, 80.0]
    scores = tmp_path / "koniq10k_scores_and_distributions.csv"
    scores.write_text("image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
                      "3.jpg,0,0,0,50,50,100,4.5,0.5,80.0\n"
                      "1.jpg,0,0,50,50,0,100,3.5,0.4,60.5\n"
                      "2.jpg,0,50,50,0,0,100,2.5,0.3,40.25\n")
    raw = Koniq(score="raw").parse(tmp_path)
    assert raw["score"].tolist() == [3.5, 2.5, 4.5] and raw["score_std"].tolist() == [0.4, 0.3, 0.5]
    scores.write_text(scores.read_text().replace("2.jpg", "9.jpg"))
    with pytest.raises(DatasetError, match="list different images .* e.g. 2.jpg"):
        Koniq().parse(tmp_path)
    scores.unlink()
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(
        KONIQ_SETS.replace("60.5", "3.5").replace("40.25", "2.5").replace("80.0", "4.5"))
    with pytest.raises(DatasetError, match="other MOS scale"):
        Koniq().parse(tmp_path)
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(KONIQ_SETS.replace("test", "holdout"))
    with pytest.raises(DatasetError, match="set 'holdout' for 3.jpg"):
        Koniq().parse(tmp_path)
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(KONIQ_SETS.replace(",set", ",part"))
    with pytest.raises(DatasetError, match="koniq10k_distributions_sets.csv has no column 'set'"):
        Koniq().parse(tmp_path)
    with pytest.raises(DatasetError, match="score='raw' needs koniq10k_scores_and_distributions"):
        Koniq(score="raw").parse(tmp_path)
    with pytest.raises(DatasetError, match="score must be 'zscore' or 'raw'"):
        Koniq(score="z")


# --- SPAQ -----------------------------------------------------------------------------------

@pytest.mark.realdata
def test_spaq_real_labels():
    table = Spaq().parse(shared("spaq"))
    assert len(table) == 11125 and table["image"].is_unique
    assert table["image"].iloc[0] == "TestImage/00001.jpg"
    assert table["image"].iloc[-1] == "TestImage/11125.jpg"
    assert table["score"].min() == 2.0 and table["score"].max() == 96.0
    assert round(table["score"].mean(), 2) == 50.32
    assert table["score_std"].isna().all() and (table["official_split"] == "").all()


def write_spaq(root: Path, header: list[str], rows: list[list]) -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=header).to_excel(
        root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)


def test_spaq_fixture_and_errors(tmp_path):
    header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
              "Sharpness"]
    write_spaq(tmp_path, header, [["00001.jpg", 48.86, 1, 2, 3, 4, 5],
                                  ["00002.jpg", 62.5, 1, 2, 3, 4, 5]])
    table = Spaq(images="512x384", extension=".png").parse(tmp_path)
    assert table["image"].tolist() == ["512x384/00001.png", "512x384/00002.png"]
    assert table["score"].tolist() == [48.86, 62.5]
    write_spaq(tmp_path, ["Image name", "Score"], [["00001.jpg", 48.86]])
    with pytest.raises(DatasetError, match="attribute scores.xlsx has no column 'MOS'"):
        Spaq().parse(tmp_path)
    write_spaq(tmp_path, header[:2], [["00001.jpg", "n/a"]])
    with pytest.raises(DatasetError, match="non-numeric MOS 'n/a' for 00001.jpg"):
        Spaq().parse(tmp_path)
    (tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx").write_text("not a zip")
    with pytest.raises(DatasetError, match="cannot read .*scores.xlsx as xlsx"):
        Spaq().parse(tmp_path)


# --- FLIVE (fixtures in the PaQ-2-PiQ formats) ----------------------------------------------

FLIVE_PICTURES = [
    ("voc_emotic_ava/EMOTIC__cwpvmtkuw83q2or3za.jpg", 59.64871868),  # test (labels640)
    ("voc_emotic_ava/AVA__927384.jpg", 58.07374186),  # test and is_valid: test wins
    ("voc_emotic_ava/VOC2012__2008_000008.jpg", 71.2),  # val
    ("blur_dataset/motion0044.jpg", 12.5),  # val
    ("blur_dataset/out_of_focus0059.jpg", 33.0),  # padded, not valid: train
    ("EE371R/rq59.jpg", 70.0),  # train
    ("voc_emotic_ava/JPEGImages__2010_001.JPG", 0.0),  # train
]
PATCH_COLUMNS = ["mos_patch_{k}", "width_patch_{k}", "height_patch_{k}", "top_patch_{k}",
                 "left_patch_{k}", "bottom_patch_{k}", "right_patch_{k}"]


def labels640_header() -> list[str]:
    columns = []
    for k in (1, 2, 3):
        block = [c.format(k=k) for c in PATCH_COLUMNS]
        columns += block[:1] + (["name_patch"] if k == 1 else []) + block[1:]
    return columns + ["mos_image", "name_image", "width_image", "height_image", "top_image",
                      "left_image", "bottom_image", "right_image"]


def write_flive(root: Path, padded_name: str = "labels=640_padded.csv",
                is_valid=("True", "True", "True", "False")) -> Path:
    database = root / "FLIVE_Database" / "database"
    database.mkdir(parents=True, exist_ok=True)
    lines = ["name,mos"] + [f"{name},{mos}" for name, mos in FLIVE_PICTURES]
    (database / "labels_image.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    header = labels640_header()
    assert len(header) == 30
    rows = [",".join(header)]
    for name, mos in FLIVE_PICTURES[:2]:
        values = {c: "1" for c in header}
        values.update(name_patch=f"patches/{Path(name).name}", mos_image=str(mos),
                      name_image=name)
        rows.append(",".join(values[c] for c in header))
    (database / "labels640.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    padded = ["name_image,mos_image,width_image,height_image,is_valid"]
    for (name, mos), valid in zip(FLIVE_PICTURES[1:5], is_valid):
        padded.append(f"{name},{mos},640,480,{valid}")
    (database / padded_name).write_text("\n".join(padded) + "\n")
    return database


def test_flive_parse_and_official_split(tmp_path):
    write_flive(tmp_path)
    table = Flive().parse(tmp_path)
    assert table["image"].tolist() == [f"FLIVE_Database/database/{n}" for n, _ in FLIVE_PICTURES]
    assert table["score"].tolist() == [mos for _, mos in FLIVE_PICTURES]
    assert table["official_split"].tolist() == [
        "test", "test", "val", "val", "train", "train", "train"]
    assert (table["group"] == table["image"]).all() and table["score_std"].isna().all()
    assert table["score_unit"].iloc[3] == 0.125


def test_flive_prepare_official(tmp_path):
    database = write_flive(tmp_path)
    for name, _ in FLIVE_PICTURES:
        (database / name).parent.mkdir(parents=True, exist_ok=True)
        (database / name).write_bytes(b"")
    prepare(Flive(), tmp_path, SplitProtocol(official=True))
    split = load_split_file(tmp_path / "bench" / "splits.json")["splits"]
    assert len(split) == 1 and split[0]["seed"] is None
    assert [len(split[0][p]) for p in ("train", "val", "test")] == [3, 2, 2]


def test_flive_split_file_variants_and_errors(tmp_path):
    database = write_flive(tmp_path, padded_name="labels<=640_padded.csv")
    assert Flive().parse(tmp_path)["official_split"].tolist()[:4] == ["test", "test", "val", "val"]
    (database / "labels<=640_padded.csv").unlink()
    with pytest.raises(DatasetError, match=r"labels=640_padded.csv not found.*needs both"):
        Flive().parse(tmp_path)
    (database / "labels640.csv").unlink()
    assert (Flive().parse(tmp_path)["official_split"] == "").all()
    write_flive(tmp_path, is_valid=("True", "maybe", "True", "False"))
    with pytest.raises(DatasetError, match="is_valid 'maybe' for voc_emotic_ava/VOC2012__"):
        Flive().parse(tmp_path)
    write_flive(tmp_path)
    text = (database / "labels640.csv").read_text()
    (database / "labels640.csv").write_text(text.replace("AVA__927384", "AVA__000000"))
    with pytest.raises(DatasetError, match=r"labels640.csv lists 1 picture\(s\) missing from "
                                           r"labels_image.csv, e.g. voc_emotic_ava/AVA__000000"):
        Flive().parse(tmp_path)
    (database / "labels_image.csv").write_text("name,score\na.jpg,1\n")
    with pytest.raises(DatasetError, match="labels_image.csv has no column 'mos'"):
        Flive().parse(tmp_path)


# --- Generic --------------------------------------------------------------------------------

GENERIC_CSV = ("file,mos,ref,sd,part\n"
               "img/a.png,10,r1,1.5,train\n"
               "img/b.png,30,r1,,train\n"
               "img/c.png,20,r2,2.0,val\n"
               "img/d.png,50,r3,0.5,test\n")


def test_generic_defaults_and_inferred_range(tmp_path):
    (tmp_path / "labels.csv").write_text("image,score\nx/1.jpg,2\nx/2.jpg,4\nx/3.jpg,3\n")
    dataset = Generic()
    table = dataset.parse(tmp_path)
    assert table["image"].tolist() == ["x/1.jpg", "x/2.jpg", "x/3.jpg"]
    assert table["score_unit"].tolist() == [0.0, 1.0, 0.5]
    assert (table["group"] == table["image"]).all()
    assert dataset.score_range == (2.0, 4.0) and dataset.higher_is_better
    assert dataset.has_official_split is False


def test_generic_yaml_and_keyword_options(tmp_path):
    (tmp_path / "scores.csv").write_text(GENERIC_CSV)
    (tmp_path / "generic.yaml").write_text(
        "labels: scores.csv\nimage: file\nscore: mos\ngroup: ref\nstd: sd\nsplit: part\n"
        "higher_is_better: false\nscore_range: [0, 100]\nkind: synthetic\n")
    dataset = Generic()
    table = dataset.parse(tmp_path)
    assert table["group"].tolist() == ["r1", "r1", "r2", "r3"]
    assert table["official_split"].tolist() == ["train", "train", "val", "test"]
    assert table["score_std"].iloc[[0, 2, 3]].tolist() == [1.5, 2.0, 0.5]
    assert np.isnan(table["score_std"].iloc[1])
    assert table["score_unit"].tolist() == [0.9, 0.7, 0.8, 0.5]
    described = dataset.describe()
    assert described["kind"] == "synthetic" and described["score_range"] == [0.0, 100.0]
    assert described["options"]["group"] == "ref" and described["has_official_split"]
    # keywords (and -O strings) override the yaml
    table = Generic(higher_is_better="true", score_range="0,50").parse(tmp_path)
    assert table["score_unit"].tolist() == [0.2, 0.6, 0.4, 1.0]


@pytest.mark.parametrize("csv, options, message", [
    ("image,mos\na.png,1\n", {}, r"labels.csv has no column 'score' \(columns: image, mos\)"),
    ("file,score\na.png,1\n", {}, r"labels.csv has no column 'image'"),
    ("image,score,ref\na.png,1,r\n", {"group": "reference"}, r"has no column 'reference'"),
    ("image,score\na.png,one\n", {}, r"non-numeric score 'one' for a.png"),
    ("image,score\n/etc/a.png,1\n", {}, r"lists image '/etc/a.png', not a path inside the root"),
    ("image,score\n../a.png,1\n", {}, r"lists image '../a.png'"),
    ("image,score,part\na.png,1,holdout\n", {"split": "part"}, r"split 'holdout' for a.png"),
    ("image,score\na.png,1\nb.png,1\n", {}, r"every score in .*labels.csv is 1.0"),
    ("image,score\na.png,1\na.png,2\n", {}, r"image a.png is listed twice"),
    ("image,score\n", {}, r"labels.csv has a header but no rows"),
])
def test_generic_bad_inputs(tmp_path, csv, options, message):
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DatasetError, match=message):
        Generic(**options).parse(tmp_path)


def test_generic_bad_options(tmp_path):
    with pytest.raises(DatasetError, match="higher_is_better must be true or false"):
        Generic(higher_is_better="sometimes")
    with pytest.raises(DatasetError, match="option kind must be authentic or synthetic"):
        Generic(kind="other")
    with pytest.raises(DatasetError, match="label file .*nothing.csv not found"):
        Generic(labels="nothing.csv").parse(tmp_path)
    (tmp_path / "labels.csv").write_text("image,score\na.png,1\nb.png,2\n")
    (tmp_path / "generic.yaml").write_text("scores: mos\n")
    with pytest.raises(DatasetError, match=r"unknown option 'scores' in .*generic.yaml"):
        Generic().parse(tmp_path)
    (tmp_path / "generic.yaml").write_text("- image\n- score\n")
    with pytest.raises(DatasetError, match="generic.yaml must hold a mapping"):
        Generic().parse(tmp_path)
    (tmp_path / "generic.yaml").write_text("score_range: [5, 1]\n")
    with pytest.raises(DatasetError, match="score_range has an invalid value"):
        Generic().parse(tmp_path)


def test_generic_through_the_cli(tmp_path):
    from benchmark.cli import main

    (tmp_path / "scores.csv").write_text(GENERIC_CSV)
    for name in ("a", "b", "c", "d"):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{name}.png").write_bytes(b"")
    args = ["data", "prepare", "generic", "--root", str(tmp_path), "--no-decode", "--official",
            "-O", "labels=scores.csv", "-O", "image=file", "-O", "score=mos", "-O", "group=ref",
            "-O", "split=part", "-O", "score_range=0,100"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    prepared = load_prepared(tmp_path, "generic")
    assert prepared.meta["spec"]["score_range"] == [0.0, 100.0]
    assert prepared.meta["spec"]["options"]["split"] == "part"
    split = load_split_file(prepared.split_path)["splits"][0]
    assert (split["train"], split["val"], split["test"]) == (
        ["img/a.png", "img/b.png"], ["img/c.png"], ["img/d.png"])
    bad = CliRunner().invoke(main, args[:-2] + ["-O", "score=quality"])
    assert bad.exit_code == 1
    assert "has no column 'quality'" in bad.output and "scores.csv" in bad.output

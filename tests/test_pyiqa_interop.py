"""pyiqa meta CSV + split JSON (or split columns) import, and the export read back.

The real pyiqa files (CLIVE, TID2013, KonIQ-10k, SPAQ) in $BENCH_SHARED_DATA/pyiqa are
imported against our parsed tables (skipped without them); everything else runs on small
tables written here. No test ever unpickles anything: the pickle test writes bytes and
checks that they are refused.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_datasets_authentic import livec_mirror, shared

from benchmark.cli.data_pyiqa import export_pyiqa, import_pyiqa
from benchmark.datasets.base import DatasetError
from benchmark.datasets.generic import Generic
from benchmark.datasets.koniq import Koniq
from benchmark.datasets.livec import Livec
from benchmark.datasets.prepare import prepare
from benchmark.datasets.spaq import Spaq
from benchmark.datasets.tid2013 import Tid2013
from benchmark.datasets.pyiqa_export import export_splits
from benchmark.datasets.pyiqa_interop import import_splits, read_split_json
from benchmark.runner import plan_run
from benchmark.datasets.splits import SplitFileError, SplitProtocol, build_split_file, load_split_file

PARTS = ("train", "val", "test")


def pyiqa(name: str) -> Path:
    return shared("pyiqa") / name


def counts(result) -> list[tuple[int, int, int]]:
    return [tuple(c[p] for p in PARTS) for c in result.counts]


def assert_partitions(result, table: pd.DataFrame) -> None:
    everything = set(table["image"])
    for entry in result.split_file["splits"]:
        assigned = [image for part in PARTS for image in entry[part]]
        assert len(assigned) == len(set(assigned)) and set(assigned) == everything


# --- real pyiqa files -----------------------------------------------------------------------

@pytest.mark.realdata
def test_livec_split_applies_the_7_row_offset_and_says_so():
    table = Livec().parse(shared("livec"))
    split_json = pyiqa("pyiqa_split_livechallenge_seed123.json")
    result = import_splits(table, "livec", pyiqa("meta_info_LIVEChallengeDataset.csv"),
                           split_json)
    assert counts(result) == [(930, 0, 232)] * 10
    assert result.split_file["protocol"]["row_offset"] == 7
    assert any("applied row offset 7" in note for note in result.notes)
    assert_partitions(result, table)
    # pyiqa index i is row i of the 1,162 test images: ours in the same .mat order
    raw = json.loads(split_json.read_text())
    first = result.split_file["splits"][0]
    assert first["train"][:3] == table["image"].iloc[raw["1"]["train"][:3]].tolist()
    assert first["test"][-1] == table["image"].iloc[raw["1"]["val"][-1]]
    assert first["pyiqa_split"] == "1" and result.split_file["splits"][9]["pyiqa_split"] == "10"


@pytest.mark.realdata
def test_livec_without_offset_is_refused():
    table = Livec().parse(shared("livec"))
    with pytest.raises(SplitFileError, match=r"offset 0 .* 7 CLIVE training image row\(s\) .*"
                                             r"first t1.bmp"):
        import_splits(table, "livec", pyiqa("meta_info_LIVEChallengeDataset.csv"),
                      pyiqa("pyiqa_split_livechallenge_seed123.json"), row_offset=0)


@pytest.mark.realdata
def test_livec_partial_copy(tmp_path):
    root = livec_mirror(tmp_path)
    prepared = prepare(Livec(), root, SplitProtocol(seeds=(0,)), allow_missing=True)
    args = (prepared.table, "livec", pyiqa("meta_info_LIVEChallengeDataset.csv"),
            pyiqa("pyiqa_split_livechallenge_seed123.json"))
    with pytest.raises(DatasetError, match=r"742 split row\(s\) of meta_info_LIVEChallenge"
                                           r"Dataset.csv have no image in the table, "
                                           r"first 100.bmp"):
        import_splits(*args)
    result = import_splits(*args, allow_missing=True)
    assert [sum(c) for c in counts(result)] == [420] * 10
    assert result.split_file["source"]["dropped_rows"] == 742
    assert_partitions(result, prepared.table)


@pytest.mark.realdata
def test_koniq_official_split_matches_ours():
    table = Koniq().parse(shared("koniq10k"))
    result = import_splits(table, "koniq", pyiqa("meta_info_KonIQ10kDataset.csv"),
                           pyiqa("pyiqa_split_koniq10k_official.json"))
    assert counts(result) == [(7058, 1000, 2015)]
    assert result.split_file["protocol"]["official"] is True
    assert result.split_file["protocol"]["parts"] == {p: p for p in PARTS}
    assert "identical to the dataset's official split" in result.notes
    assert not any("differ" in note for note in result.notes)  # same 0-100 MOS as pyiqa


@pytest.mark.realdata
def test_spaq_ten_splits():
    table = Spaq().parse(shared("spaq"))
    result = import_splits(table, "spaq", pyiqa("meta_info_SPAQDataset.csv"),
                           pyiqa("pyiqa_split_spaq_seed123.json"))
    assert counts(result) == [(8900, 0, 2225)] * 10
    assert result.split_file["protocol"]["parts"] == {"train": "train", "val": "test"}
    assert_partitions(result, table)
    assert len(result.notes) == 1 and "imported as our test" in result.notes[0]


@pytest.mark.realdata
def test_tid2013_reference_split_and_round_trip(tmp_path):
    table = Tid2013().parse(shared("tid2013"))
    result = import_splits(table, "tid2013", pyiqa("meta_info_TID2013Dataset.csv"),
                           pyiqa("pyiqa_split_tid2013_seed123.json"))
    assert counts(result) == [(2400, 0, 600)] * 10
    assert not any("content group" in note for note in result.notes)  # split by reference
    groups = table.set_index("image")["group"]
    first = result.split_file["splits"][0]
    assert groups[first["test"]].nunique() == 5 and groups[first["train"]].nunique() == 20
    # export (holdout) and import again: the same parts, in the same order through the
    # index lists, in table order through the split columns
    exported = export_splits(table, result.split_file, "holdout")
    (tmp_path / "meta.csv").write_text(exported.meta_csv)
    (tmp_path / "split.json").write_text(json.dumps(exported.pickle_splits))
    again = import_splits(table, "tid2013", tmp_path / "meta.csv", tmp_path / "split.json")
    assert [{p: e[p] for p in PARTS} for e in again.split_file["splits"]] == [
        {p: e[p] for p in PARTS} for e in result.split_file["splits"]]
    columns = import_splits(table, "tid2013", tmp_path / "meta.csv")
    assert [e["pyiqa_split"] for e in columns.split_file["splits"]] == exported.columns
    assert [{p: sorted(e[p]) for p in PARTS} for e in columns.split_file["splits"]] == [
        {p: sorted(e[p]) for p in PARTS} for e in result.split_file["splits"]]


@pytest.mark.realdata
def test_meta_of_another_dataset_is_refused():
    table = Livec().parse(shared("livec"))
    with pytest.raises(DatasetError, match=r"1162 image\(s\) of the table are not in .*"
                                           r"meta_info_KonIQ10kDataset.csv, e.g. "
                                           r"ChallengeDB_release/Images/100.bmp"):
        import_splits(table, "livec", pyiqa("meta_info_KonIQ10kDataset.csv"),
                      pyiqa("pyiqa_split_koniq10k_official.json"))


# --- small tables ---------------------------------------------------------------------------

def small_table(tmp_path: Path, n: int = 10, images: bool = False) -> pd.DataFrame:
    lines = ["image,score,ref"] + [f"pics/{k:02d}.png,{10 * k},r{k // 2}" for k in range(n)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    if images:
        (tmp_path / "pics").mkdir(exist_ok=True)
        for k in range(n):
            (tmp_path / "pics" / f"{k:02d}.png").write_bytes(b"")
    return Generic(group="ref", score_range="0,100").parse(tmp_path)


def write_pyiqa(tmp_path: Path, names: list[str], splits: dict, scores=None) -> tuple[Path, Path]:
    scores = scores or [10.0 * int(Path(n).stem) for n in names]
    meta = tmp_path / "meta.csv"
    meta.write_text("img_name,mos,std\n" + "".join(f"{n},{s},1\n" for n, s in zip(names, scores)))
    split = tmp_path / "split.json"
    split.write_text(json.dumps(splits))
    return meta, split


def test_parts_mapping_and_name_matching(tmp_path):
    table = small_table(tmp_path)
    names = [f"{k:02d}.PNG" for k in reversed(range(10))]  # other order, other case, bare names
    meta, split = write_pyiqa(tmp_path, names, {"1": {"train": [0, 1, 2], "val": [3, 4],
                                                      "test": [5, 6, 7, 8, 9]}})
    entry = import_splits(table, "generic", meta, split).split_file["splits"][0]
    assert entry["train"] == ["pics/09.png", "pics/08.png", "pics/07.png"]
    assert entry["val"] == ["pics/06.png", "pics/05.png"]
    assert entry["test"] == [f"pics/{k:02d}.png" for k in (4, 3, 2, 1, 0)]


def test_score_and_group_differences_are_noted(tmp_path):
    table = small_table(tmp_path)
    names = [f"{k:02d}.png" for k in range(10)]
    scores = [10.0 * k for k in range(10)]
    scores[3] = 99.0
    meta, split = write_pyiqa(tmp_path, names, {"1": {"train": list(range(7)),
                                                      "val": [7, 8, 9]}}, scores)
    notes = import_splits(table, "generic", meta, split).notes
    assert "1 of 10 mos values differ from our scores (max |diff| 69)" in " ".join(notes)
    assert any("1 content group(s) in both train and test" in note for note in notes)


@pytest.mark.parametrize("splits, error, message", [
    ({"1": {"train": [0, 10]}}, SplitFileError, r"index 10, beyond the 10 rows"),
    ({"1": {"train": [0, 1], "val": [1]}}, SplitFileError, r"puts pics/01.png in both train and"),
    ({"1": {"train": [0], "holdout": [1]}}, SplitFileError, r"must map train/val/test"),
    ({"1": {"train": [0, -1]}}, SplitFileError, r"part 'train' is not a list of row indices"),
    ({"1": {"train": [0, True]}}, SplitFileError, r"not a list of row indices"),
    ({}, SplitFileError, r"must map split keys to parts"),
])
def test_bad_split_content(tmp_path, splits, error, message):
    table = small_table(tmp_path)
    meta, split = write_pyiqa(tmp_path, [f"{k:02d}.png" for k in range(10)], splits)
    with pytest.raises(error, match=message):
        import_splits(table, "generic", meta, split)


def test_pickles_are_refused_unopened(tmp_path):
    payload = pickle.dumps({1: {"train": [0], "val": [1]}})
    for name in ("split.pkl", "split.json"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(SplitFileError, match=r"is a pickle: pickles are never loaded"):
            read_split_json(tmp_path / name)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SplitFileError, match="bad.json is not valid JSON"):
        read_split_json(tmp_path / "bad.json")


def test_meta_mismatches(tmp_path):
    table = small_table(tmp_path)
    meta, split = write_pyiqa(tmp_path, [f"{k:02d}.png" for k in range(9)],
                              {"1": {"train": [0], "val": [1]}})
    with pytest.raises(DatasetError, match=r"1 image\(s\) of the table are not in .*meta.csv, "
                                           r"e.g. pics/09.png"):
        import_splits(table, "generic", meta, split)
    meta.write_text("picture,mos\n00.png,0\n")
    with pytest.raises(DatasetError, match=r"meta.csv has no image-name column"):
        import_splits(table, "generic", meta, split)
    other = pd.concat([table, table.assign(image="other/" + table["image"])], ignore_index=True)
    meta, split = write_pyiqa(tmp_path, [f"{k:02d}.png" for k in range(10)],
                              {"1": {"train": [0], "val": [1]}})
    with pytest.raises(DatasetError, match=r"row 2 \(00.png\) matches several images"):
        import_splits(other, "generic", meta, split)


def test_clive_style_offset_detection(tmp_path):
    table = small_table(tmp_path, n=8)
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{k:02d}.png" for k in range(8)]
    scores = [50.0] * 7 + [10.0 * k for k in range(8)]
    meta, split = write_pyiqa(tmp_path, names, {"1": {"train": [0, 1, 2, 3, 4, 5],
                                                      "val": [6, 7]}}, scores)
    result = import_splits(table, "generic", meta, split)
    assert result.split_file["protocol"]["row_offset"] == 7
    assert result.split_file["splits"][0]["test"] == ["pics/06.png", "pics/07.png"]
    split.write_text(json.dumps({"1": {"train": [0, 1, 2], "val": [3]}}))
    with pytest.raises(SplitFileError, match=r"fit both readings: give row_offset 7"):
        import_splits(table, "generic", meta, split)
    result = import_splits(table, "generic", meta, split, row_offset=7, allow_missing=True)
    assert result.split_file["splits"][0]["test"] == ["pics/03.png"]
    assert any("row offset 7 given" in note for note in result.notes)


def test_export_mappings(tmp_path):
    table = small_table(tmp_path)
    ours = build_split_file(table, "generic", SplitProtocol(seeds=(3,), val_fraction=0.25))
    entry = ours["splits"][0]
    rows = {image: k for k, image in enumerate(table["image"])}
    holdout = export_splits(table, ours)
    assert holdout.pyiqa_class == "GeneralNRDataset" and holdout.columns == ["bench_split_00"]
    assert holdout.pickle_splits == {1: {"train": [rows[i] for i in entry["train"] + entry["val"]],
                                         "val": [rows[i] for i in entry["test"]], "test": []}}
    same = export_splits(table, ours, "same")
    assert same.pickle_splits[1] == {p: [rows[i] for i in entry[p]] for p in PARTS}
    # 5 references: 4 for train+val, of which the validation slice takes min_val_groups = 3
    assert [len(same.pickle_splits[1][p]) for p in PARTS] == [2, 6, 2]
    meta = pd.read_csv(pd.io.common.StringIO(holdout.meta_csv), keep_default_na=False)
    assert meta.columns.tolist() == ["img_name", "mos", "std", "bench_split_00"]
    assert meta["img_name"].tolist() == table["image"].tolist()
    assert meta["mos"].tolist() == table["score"].tolist() and (meta["std"] == "").all()
    cells = dict(zip(meta["img_name"], meta["bench_split_00"]))
    assert {i for i, c in cells.items() if c == "val"} == set(entry["test"])
    assert {i for i, c in cells.items() if c == "train"} == set(entry["train"] + entry["val"])
    same_cells = pd.read_csv(pd.io.common.StringIO(same.meta_csv))["bench_split_00"]
    assert same_cells.value_counts().to_dict() == {"train": 2, "val": 6, "test": 2}
    ours["splits"][0]["test"].append("pics/99.png")
    with pytest.raises(SplitFileError, match="lists pics/99.png .* not in the prepared table"):
        export_splits(table, ours)


def test_split_columns_import_and_their_errors(tmp_path):
    table = small_table(tmp_path, n=4)
    meta = tmp_path / "meta.csv"
    meta.write_text("img_name,mos,split_a,b_split,split_odd\n00.png,0,train,val,0\n"
                    "01.png,10,train,,1\n02.png,20,val,train,2\n03.png,30,,val,0\n")
    result = import_splits(table, "generic", meta, columns=["split_a", "b_split"])
    first, second = result.split_file["splits"]
    assert (first["pyiqa_split"], first["train"], first["test"]) == (
        "split_a", ["pics/00.png", "pics/01.png"], ["pics/02.png"])  # holdout: val -> test
    assert (second["train"], second["val"], second["test"]) == (["pics/02.png"], [],
                                                                ["pics/00.png", "pics/03.png"])
    assert result.split_file["source"]["split_columns"] == ["split_a", "b_split"]
    with pytest.raises(SplitFileError, match=r"column 'split_odd' row 2 is '0', not train"):
        import_splits(table, "generic", meta)
    with pytest.raises(SplitFileError, match=r"no split column 'nope' \(split columns: "
                                             r"split_a, b_split, split_odd\)"):
        import_splits(table, "generic", meta, columns=["nope"])
    meta.write_text("img_name,mos\n00.png,0\n01.png,10\n02.png,20\n03.png,30\n")
    with pytest.raises(SplitFileError, match=r"has no split columns .*give a split file"):
        import_splits(table, "generic", meta)


def test_cli_round_trip(tmp_path):
    small_table(tmp_path, n=10, images=True)
    prepare(Generic(group="ref"), tmp_path, SplitProtocol(seeds=(0, 1), val_fraction=0.0))
    runner = CliRunner()
    out = tmp_path / "pyiqa_files"
    result = runner.invoke(export_pyiqa, ["generic", "--root", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "split 0: train 8, val 2, test 0" in result.output
    meta = out / "meta_info_generic.csv"
    assert sorted(p.name for p in out.iterdir()) == ["meta_info_generic.csv"]  # no split file
    result = runner.invoke(import_pyiqa, ["generic", "--root", str(tmp_path), "--meta", str(meta),
                                          "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"] == [{"train": 8, "val": 0, "test": 2}] * 2
    imported = load_split_file(tmp_path / "bench" / "splits_pyiqa.json")
    original = load_split_file(tmp_path / "bench" / "splits.json")
    for new, old in zip(imported["splits"], original["splits"]):
        assert (sorted(new["train"]), sorted(new["test"])) == (sorted(old["train"]),
                                                               sorted(old["test"]))
    # copied over splits.json by hand, a run refuses it; imported there, meta.json vouches for it
    splits_json = tmp_path / "bench" / "splits.json"
    splits_json.write_text((tmp_path / "bench" / "splits_pyiqa.json").read_text())
    with pytest.raises(SplitFileError, match="not the one prepare wrote"):
        plan_run("brisque", "generic", 1, tmp_path)
    result = runner.invoke(import_pyiqa, ["generic", "--root", str(tmp_path), "--meta", str(meta),
                                          "--out", str(splits_json)])
    assert result.exit_code == 0, result.output
    assert plan_run("brisque", "generic", 1, tmp_path).parts["test"] == \
        original["splits"][1]["test"]
    result = runner.invoke(export_pyiqa, ["generic", "--root", str(tmp_path), "--out", str(out),
                                          "--pickle"])
    assert result.exit_code == 0 and (out / "split_generic.pkl").read_bytes()[:1] == b"\x80"
    # the pickle is for pyiqa: our own import refuses it, unopened
    result = runner.invoke(import_pyiqa, ["generic", "--root", str(tmp_path), "--meta", str(meta),
                                          "--splits", str(out / "split_generic.pkl")])
    assert result.exit_code == 1 and "pickles are never loaded" in result.output
    assert len(result.output.strip().splitlines()) == 1

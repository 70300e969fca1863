"""The pyiqa export read by pyiqa 0.1.16's own dataset classes, and the CLIVE layout.

The pyiqa tests build pyiqa's ``GeneralNRDataset`` / ``LIVEChallengeDataset`` on our exported
meta CSVs of the real TID2013, LIVEC and KonIQ-10k label files and compare the rows each
split column and phase selects with our parts (skipped without pyiqa or
$BENCH_SHARED_DATA). The only pickle ever opened is the one a test has just written, and
pyiqa opens it, as it would in a user's pyiqa run.
"""

from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest
from test_datasets_authentic import shared
from test_pyiqa_interop import small_table

from benchmark.datasets.koniq import Koniq
from benchmark.datasets.livec import Livec
from benchmark.datasets.tid2013 import Tid2013
from benchmark.datasets.pyiqa_export import export_splits
from benchmark.datasets.pyiqa_interop import import_splits
from benchmark.datasets.splits import PARTS, SplitProtocol, build_split_file


def test_livec_export_opens_with_t1_to_t7_and_shifts_its_cells(tmp_path):
    table = small_table(tmp_path, n=10)
    ours = build_split_file(table, "livec", SplitProtocol(seeds=(0, 1), val_fraction=0.0))
    exported = export_splits(table, ours)
    assert exported.pyiqa_class == "LIVEChallengeDataset"
    meta = pd.read_csv(pd.io.common.StringIO(exported.meta_csv), keep_default_na=False)
    assert meta["img_name"][:7].tolist() == [f"pics/trainingImages/t{k}.bmp" for k in range(1, 8)]
    assert (meta["mos"][:7] == "").all()
    assert meta["img_name"][7:].tolist() == table["image"].tolist()
    for entry, column in zip(ours["splits"], exported.columns):
        # the class drops rows 0-6, then reads cell i for the image at row i + 7
        cells = meta[column].tolist()
        phase_of = dict(zip(meta["img_name"][7:], cells[:-7]))
        assert {i for i, c in phase_of.items() if c == "train"} == set(entry["train"])
        assert {i for i, c in phase_of.items() if c == "val"} == set(entry["test"])
        assert cells[-7:] == [""] * 7
        rows = {image: k for k, image in enumerate(table["image"])}  # rows after t1..t7
        assert exported.pickle_splits[entry["index"] + 1]["val"] == [rows[i] for i in entry["test"]]
    assert any("read this CSV with LIVEChallengeDataset only" in n for n in exported.notes)
    (tmp_path / "meta.csv").write_text(exported.meta_csv)
    back = import_splits(table, "livec", tmp_path / "meta.csv")
    assert back.split_file["protocol"]["row_offset"] == 7
    assert any("applied row offset 7" in note for note in back.notes)
    for new, old in zip(back.split_file["splits"], ours["splits"]):
        assert (sorted(new["train"]), sorted(new["test"])) == (sorted(old["train"]),
                                                               sorted(old["test"]))


# --- pyiqa's own classes on the real label files ------------------------------------------

def _pyiqa_rows(cls, meta, root, **options) -> list[str]:
    dataset = cls({"meta_info_file": str(meta), "dataroot_target": str(root), **options})
    return [os.path.relpath(row[0], root).replace(os.sep, "/") for row in dataset.paths_mos]


def _check_against_pyiqa(table, name, root, tmp_path, protocol, parts="auto"):
    datasets = pytest.importorskip("pyiqa.data.livechallenge_dataset",
                                   reason="pyiqa is not installed: pip install --no-deps "
                                          "pyiqa==0.1.16")
    classes = {"LIVEChallengeDataset": datasets.LIVEChallengeDataset,
               "GeneralNRDataset": datasets.GeneralNRDataset}
    ours = build_split_file(table, name, protocol)
    exported = export_splits(table, ours, parts)
    meta, split = tmp_path / f"meta_{name}.csv", tmp_path / f"split_{name}.pkl"
    meta.write_text(exported.meta_csv)
    split.write_bytes(pickle.dumps(exported.pickle_splits))
    cls = classes[exported.pyiqa_class]
    mapping = ({"train": ("train", "val"), "val": ("test",), "test": ()}
               if exported.notes[1].startswith("parts 'holdout'") else {p: (p,) for p in PARTS})
    for entry, column in zip(ours["splits"], exported.columns):
        for phase, mine in mapping.items():
            expected = [image for image in table["image"] if any(image in set(entry[p])
                                                                 for p in mine)]
            by_column = _pyiqa_rows(cls, meta, root, split_index=column, phase=phase)
            assert by_column == expected, (column, phase)
            by_file = _pyiqa_rows(cls, meta, root, split_file=str(split),
                                  split_index=entry["index"] + 1, phase=phase)
            assert sorted(by_file) == sorted(expected), (column, phase)
    return exported


@pytest.mark.realdata
@pytest.mark.parametrize("cls, folder, pyiqa_class, counts", [
    (Tid2013, "tid2013", "GeneralNRDataset", {"train": 2400, "val": 600, "test": 0}),
    (Livec, "livec", "LIVEChallengeDataset", {"train": 930, "val": 232, "test": 0}),
], ids=["tid2013", "livec"])
def test_pyiqa_reads_our_random_split_export_with_our_parts(tmp_path, cls, folder, pyiqa_class,
                                                           counts):
    root = shared(folder)
    exported = _check_against_pyiqa(cls().parse(root), cls.name, root, tmp_path,
                                    SplitProtocol(seeds=(0, 1)))
    assert exported.pyiqa_class == pyiqa_class
    assert exported.counts == [counts] * 2


@pytest.mark.realdata
def test_pyiqa_reads_our_koniq_official_split(tmp_path):
    root = shared("koniq10k")
    exported = _check_against_pyiqa(Koniq().parse(root), "koniq", root, tmp_path,
                                    SplitProtocol(official=True))
    assert exported.columns == ["official_split"]
    assert exported.counts == [{"train": 7058, "val": 1000, "test": 2015}]

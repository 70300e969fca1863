import json

import numpy as np
import pandas as pd
import pytest

from benchmark.datasets.splits import (SplitFileError, SplitProtocol, build_split_file,
                                       load_split_file, make_split, save_split_file,
                                       split_images)


def _table(n_groups=25, per_group=120):
    groups = np.repeat([f"I{g:02d}" for g in range(1, n_groups + 1)], per_group)
    return pd.DataFrame({"image": [f"img{i}.bmp" for i in range(len(groups))], "group": groups,
                         "official_split": ""})


def test_groups_are_disjoint_and_sizes_exact():
    table = _table()
    protocol = SplitProtocol()
    for seed in protocol.seeds:
        parts = make_split(table["group"], seed, protocol)
        groups = {p: set(table.loc[parts == p, "group"]) for p in ("train", "val", "test")}
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & (groups["train"] | groups["test"])
        # 25 refs: round(0.8·25) = 20 train+val, round(0.1·20) = 2 val raised to the
        # protocol's min_val_groups = 3, 5 test
        assert [len(groups[p]) for p in ("train", "val", "test")] == [17, 3, 5]
        assert (parts == "test").sum() == 5 * 120
    assert [(make_split(table["group"], 0, SplitProtocol(min_val_groups=1)) == p).sum() // 120
            for p in ("train", "val", "test")] == [18, 2, 5]


def test_authentic_rounding_matches_the_papers():
    table = pd.DataFrame({"image": [f"{i}.JPG" for i in range(1162)],
                          "group": [f"{i}.JPG" for i in range(1162)], "official_split": ""})
    parts = make_split(table["group"], 0, SplitProtocol(val_fraction=0.0))
    assert (parts == "train").sum() == 930 and (parts == "test").sum() == 232
    floor = make_split(table["group"], 0, SplitProtocol(val_fraction=0.0, rounding="floor"))
    assert (floor == "train").sum() == 929


def test_split_file_is_byte_identical_for_the_same_seeds(tmp_path):
    table = _table(10, 3)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_split_file(first, build_split_file(table, "x", SplitProtocol(seeds=(3, 4))))
    save_split_file(second, build_split_file(table.copy(), "x", SplitProtocol(seeds=(3, 4))))
    assert first.read_bytes() == second.read_bytes()
    other = tmp_path / "c.json"
    save_split_file(other, build_split_file(table, "x", SplitProtocol(seeds=(3, 5))))
    assert other.read_bytes() != first.read_bytes()


def test_tampered_split_file_fails_its_checksum(tmp_path):
    path = tmp_path / "splits.json"
    save_split_file(path, build_split_file(_table(10, 2), "x", SplitProtocol(seeds=(0,))))
    data = json.loads(path.read_text())
    data["splits"][0]["test"].append("img0.bmp")
    path.write_text(json.dumps(data))
    with pytest.raises(SplitFileError, match="checksum"):
        load_split_file(path)


def test_out_of_range_split_names_the_valid_range(tmp_path):
    split_file = build_split_file(_table(10, 2), "x", SplitProtocol(seeds=(0, 1, 2)))
    assert len(split_images(split_file, 2)["test"]) == 4
    with pytest.raises(SplitFileError, match=r"split 3 out of range.*0\.\.2"):
        split_images(split_file, 3)


def test_official_split_is_taken_verbatim():
    table = pd.DataFrame({"image": list("abcd"), "group": list("abcd"),
                          "official_split": ["train", "train", "val", "test"]})
    split = build_split_file(table, "koniq", SplitProtocol(official=True))["splits"][0]
    assert (split["train"], split["val"], split["test"]) == (["a", "b"], ["c"], ["d"])

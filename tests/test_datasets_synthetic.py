"""Parsers of the synthetic datasets (LIVE, CSIQ, TID2013, KADID-10k) on their ORIGINAL formats.

LIVE, CSIQ and KADID are built here as small files in the authors' formats (MAT v5, xlsx
with the offset header, CSV); TID2013 is also read from the real label file in
$BENCH_SHARED_DATA when it is there. The builders are imported by test_cli_data.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from benchmark.datasets.base import DatasetError
from benchmark.datasets.csiq import Csiq
from benchmark.datasets.kadid import Kadid
from benchmark.datasets.live import FOLDERS, Live
from benchmark.datasets.tid2013 import Tid2013
from benchmark.registry import dataset_registry

LIVE_REFS = (
    "bikes building2 buildings caps carnivaldolls cemetry churchandcapitol coinsinfountain "
    "dancers flowersonih35 house lighthouse lighthouse2 manfishing monarch ocean paintedhouse "
    "parrots plane rapids sailing1 sailing2 sailing3 sailing4 statue stream studentsculpture "
    "woman womanhat"
).split()


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def live_arrays() -> dict[str, np.ndarray]:
    """982 entries in dmos.mat order; each folder's first entries are the reference copies."""
    orgs, refnames = [], []
    for _, entries, distorted in FOLDERS:
        orgs += [1] * (entries - distorted) + [0] * distorted
        refnames += [LIVE_REFS[k % len(LIVE_REFS)] + ".bmp" for k in range(entries)]
    orgs = np.array(orgs, dtype=float)
    index = np.arange(orgs.size, dtype=float)
    dmos = np.where(orgs == 1, 0.0, 20.0 + index * 0.06)
    dmos_new = np.where(orgs == 1, 0.0, -10.0 + index * 0.13)  # below 0 and above 100 both occur
    dmos_std = np.where(orgs == 1, 0.0, 1.0 + (index % 40) * 0.1)
    return {"orgs": orgs, "refnames": np.array(refnames, dtype=object), "dmos": dmos,
            "dmos_new": dmos_new, "dmos_std": dmos_std}


def make_live(root: Path, realigned: str | None = "full", images: bool = False) -> dict:
    """databaserelease2/ with dmos.mat, refnames_all.mat and optionally dmos_realigned.mat.

    ``realigned``: "full" (orgs 1x982), "resaved" (orgs 1x779 zeros, as a circulating copy
    has), or None (file absent).
    """
    arrays = live_arrays()
    base = root / "databaserelease2"
    base.mkdir(parents=True)
    scipy.io.savemat(base / "dmos.mat", {"dmos": arrays["dmos"][None, :],
                                          "orgs": arrays["orgs"][None, :]})
    scipy.io.savemat(base / "refnames_all.mat", {"refnames_all": arrays["refnames"][None, :]})
    if realigned:
        orgs = arrays["orgs"][None, :] if realigned == "full" else np.zeros((1, 779))
        scipy.io.savemat(base / "dmos_realigned.mat", {
            "dmos_new": arrays["dmos_new"][None, :], "dmos_std": arrays["dmos_std"][None, :],
            "orgs": orgs,
        })
    if images:
        offset = 0
        for folder, entries, _ in FOLDERS:
            for k in range(entries):
                write_image(base / folder / f"img{k + 1}.bmp", offset + k)
            offset += entries
    return arrays


CSIQ_REFS = (1600, "boston", "log_seaside")
#: (xlsx dst_type, sub-folder, tag in the file name), in csiq_label.txt's type order
CSIQ_TYPES = (
    ("noise", "awgn", "AWGN"),
    ("jpeg", "jpeg", "JPEG"),
    ("jpeg 2000", "jpeg2000", "jpeg2000"),
    ("fnoise", "fnoise", "fnoise"),
    ("blur", "blur", "BLUR"),
    ("contrast", "contrast", "contrast"),
)
CSIQ_FOLDERS = {"flat_all": "dst_imgs_all", "flat": "dst_imgs"}


def csiq_records() -> list[dict]:
    records = []
    for t, (kind, sub, tag) in enumerate(CSIQ_TYPES):
        for r, ref in enumerate(CSIQ_REFS):
            for level in (1, 2):
                records.append({"ref": ref, "kind": kind, "sub": sub, "level": level,
                                "name": f"{ref}.{tag}.{level}.png",
                                "dmos": round(0.05 * t + 0.01 * r + 0.1 * level, 6),
                                "std": round(0.01 + 0.001 * len(records), 6)})
    return records


def make_csiq(root: Path, labels: str = "xlsx", layout: str = "nested",
              images: bool = True) -> list[dict]:
    """CSIQ in the authors' layout: ``labels`` xlsx/txt/both, ``layout`` nested/flat_all/flat."""
    from openpyxl import Workbook

    records = csiq_records()
    root.mkdir(parents=True, exist_ok=True)
    if labels in ("xlsx", "both"):
        book = Workbook()
        book.active.title = "by_distortion"  # a decoy first sheet: the parser must pick by name
        sheet = book.create_sheet("all_by_image")
        sheet["A1"] = "CSIQ DMOS values"
        sheet.append([])
        sheet.append([])
        empty = [None, None, None]  # columns A-C are empty in the authors' sheet
        sheet.append([*empty, "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
        for rec in records:
            sheet.append([*empty, rec["ref"], 1, rec["kind"], rec["level"], rec["std"],
                          rec["dmos"]])
        book.save(root / "csiq.DMOS.xlsx")
    if labels in ("txt", "both"):
        lines = [f"{r['name']} {r['dmos']:.6f}\n" for r in records]
        (root / "csiq_label.txt").write_text("".join(lines))
    if images:
        for i, rec in enumerate(records):
            folder = CSIQ_FOLDERS.get(layout, f"dst_imgs/{rec['sub']}")
            write_image(root / folder / rec["name"], i)
    return records


def make_kadid(root: Path, images: bool = True) -> list[dict]:
    """kadid10k/{dmos.csv, images/}: 3 references x 2 types x 2 levels."""
    base = root / "kadid10k"
    rows = []
    for ref in (1, 2, 3):
        for kind in (1, 25):
            for level in (1, 5):
                rows.append({"dist": f"I{ref:02d}_{kind:02d}_{level:02d}.png",
                             "ref": f"I{ref:02d}.png",
                             "dmos": round(1.0 + 0.3 * ref + 0.1 * kind / 5 + 0.05 * level, 3),
                             "var": round(0.1 * level + 0.01 * ref, 3)})
    (base / "images").mkdir(parents=True)
    lines = ["dist_img,ref_img,dmos,var"]
    lines += [f"{r['dist']},{r['ref']},{r['dmos']},{r['var']}" for r in rows]
    (base / "dmos.csv").write_text("\n".join(lines) + "\n")
    if images:
        for i, row in enumerate(rows):
            write_image(base / "images" / row["dist"], i)
        for ref in (1, 2, 3):
            write_image(base / "images" / f"I{ref:02d}.png", 100 + ref)
    return rows


# ---------------------------------------------------------------------------------------- LIVE


def test_live_realigned_is_default_and_masked_by_dmos_mat_orgs(tmp_path):
    arrays = make_live(tmp_path)
    table = Live().parse(tmp_path)
    keep = arrays["orgs"] == 0
    assert len(table) == 779
    assert table["group"].nunique() == 29
    assert table["distortion"].value_counts().to_dict() == {
        "jpeg": 175, "jp2k": 169, "wn": 145, "gblur": 145, "fastfading": 145}
    np.testing.assert_array_equal(table["score"], arrays["dmos_new"][keep])
    np.testing.assert_array_equal(table["score_std"], arrays["dmos_std"][keep])
    # entry 58 is jp2k img59 (58 reference copies first); jpeg starts at entry 227
    assert table["image"].iloc[0] == "databaserelease2/jp2k/img59.bmp"
    assert table["group"].iloc[0] == Path(arrays["refnames"][58]).stem
    assert table["image"].iloc[169] == "databaserelease2/jpeg/img59.bmp"
    assert table["image"].iloc[-1] == "databaserelease2/fastfading/img174.bmp"
    assert table["level"].isna().all()
    assert table["score"].min() < 0 and table["score"].max() > 100  # not clipped
    assert Live().describe()["label"] == "realigned"
    # lower DMOS = better: the best raw score has the top unit score
    assert table["score_unit"].iloc[table["score"].argmin()] == pytest.approx(1.0)


def test_live_original_labels(tmp_path):
    arrays = make_live(tmp_path, realigned=None)
    table = Live(label="original").parse(tmp_path)
    assert len(table) == 779
    np.testing.assert_array_equal(table["score"], arrays["dmos"][arrays["orgs"] == 0])
    assert table["score_std"].isna().all()
    assert Live(label="original").describe()["label_file"] == "dmos.mat:dmos"


def test_live_resaved_realigned_file_with_779_zero_orgs(tmp_path):
    arrays = make_live(tmp_path, realigned="resaved")
    table = Live().parse(tmp_path)
    assert len(table) == 779
    np.testing.assert_array_equal(table["score"], arrays["dmos_new"][arrays["orgs"] == 0])


def test_live_realigned_missing_names_file(tmp_path):
    make_live(tmp_path, realigned=None)
    with pytest.raises(DatasetError, match=r"dmos_realigned\.mat not found.*label=original"):
        Live().parse(tmp_path)


def test_live_realigned_orgs_disagreeing_with_dmos_mat(tmp_path):
    arrays = make_live(tmp_path, realigned=None)
    orgs = arrays["orgs"].copy()
    orgs[[0, 100]] = orgs[[100, 0]]
    scipy.io.savemat(tmp_path / "databaserelease2" / "dmos_realigned.mat",
                     {"dmos_new": arrays["dmos_new"][None, :], "orgs": orgs[None, :]})
    with pytest.raises(DatasetError, match="orgs disagrees"):
        Live().parse(tmp_path)


def test_live_malformed_label_files(tmp_path):
    arrays = make_live(tmp_path)
    base = tmp_path / "databaserelease2"
    scipy.io.savemat(base / "dmos.mat", {"dmos": arrays["dmos"][None, :980],
                                         "orgs": arrays["orgs"][None, :980]})
    with pytest.raises(DatasetError, match=r"dmos\.mat variable orgs has 980 entries, not 982"):
        Live().parse(tmp_path)
    (base / "dmos.mat").write_text("dmos,orgs\n1,0\n")
    with pytest.raises(DatasetError, match=r"dmos\.mat is not a readable MATLAB file"):
        Live().parse(tmp_path)
    with pytest.raises(DatasetError, match="label must be one of realigned, original"):
        Live(label="new")


def test_live_mask_with_wrong_per_folder_counts(tmp_path):
    arrays = make_live(tmp_path)
    orgs = arrays["orgs"].copy()
    orgs[300] = 1  # one more reference copy in jpeg
    scipy.io.savemat(tmp_path / "databaserelease2" / "dmos.mat",
                     {"dmos": arrays["dmos"][None, :], "orgs": orgs[None, :]})
    with pytest.raises(DatasetError, match="orgs keeps 174 jpeg images, not 175"):
        Live(label="original").parse(tmp_path)


# ---------------------------------------------------------------------------------------- CSIQ


def test_csiq_xlsx_nested_layout(tmp_path):
    records = make_csiq(tmp_path, labels="xlsx", layout="nested")
    dataset = Csiq()
    table = dataset.parse(tmp_path)
    assert len(table) == 36
    assert sorted(table["group"].unique()) == ["1600", "boston", "log_seaside"]
    assert table["image"].iloc[0] == "dst_imgs/awgn/1600.AWGN.1.png"
    assert table["image"].tolist() == [f"dst_imgs/{r['sub']}/{r['name']}" for r in records]
    np.testing.assert_allclose(table["score"], [r["dmos"] for r in records])
    np.testing.assert_allclose(table["score_std"], [r["std"] for r in records])
    assert table["distortion"].value_counts().to_dict() == {s: 6 for _, s, _ in CSIQ_TYPES}
    assert table["level"].tolist() == [r["level"] for r in records]
    assert all((tmp_path / image).is_file() for image in table["image"])
    assert dataset.describe()["label_file"] == "csiq.DMOS.xlsx"


@pytest.mark.parametrize("layout, folder", [("flat_all", "dst_imgs_all"), ("flat", "dst_imgs")])
def test_csiq_txt_flat_layouts(tmp_path, layout, folder):
    records = make_csiq(tmp_path, labels="txt", layout=layout)
    table = Csiq().parse(tmp_path)
    assert table["image"].tolist() == [f"{folder}/{r['name']}" for r in records]
    assert table["score_std"].isna().all()
    assert table["group"].iloc[0] == "1600"
    assert all((tmp_path / image).is_file() for image in table["image"])


def test_csiq_prefers_xlsx_unless_told(tmp_path):
    make_csiq(tmp_path, labels="both")
    auto, txt = Csiq(), Csiq(label="txt")
    assert auto.parse(tmp_path)["score_std"].notna().all()
    assert txt.parse(tmp_path)["score_std"].isna().all()
    assert (auto.label_file, txt.label_file) == ("csiq.DMOS.xlsx", "csiq_label.txt")


def test_csiq_type_folders_without_wrapping_folder_and_stray_files(tmp_path):
    records = make_csiq(tmp_path / "x", labels="txt", layout="nested")
    for item in (tmp_path / "x" / "dst_imgs").iterdir():  # as if unzipped without a top folder
        item.rename(tmp_path / "x" / item.name)
        (tmp_path / "x" / item.name / "Thumbs.db").write_bytes(b"")  # harmless duplicates
    (tmp_path / "x" / "dst_imgs").rmdir()
    table = Csiq().parse(tmp_path)
    assert table["image"].tolist() == [f"x/{r['sub']}/{r['name']}" for r in records]


def test_csiq_listed_image_found_twice(tmp_path):
    make_csiq(tmp_path, labels="txt", layout="nested")
    write_image(tmp_path / "dst_imgs" / "blur" / "1600.AWGN.1.png")
    with pytest.raises(DatasetError, match=r"both match listed image awgn/1600\.AWGN\.1\.png"):
        Csiq().parse(tmp_path)


def test_csiq_missing_images_keep_the_canonical_path(tmp_path):
    make_csiq(tmp_path, labels="txt", images=False)
    assert Csiq().parse(tmp_path)["image"].iloc[0] == "dst_imgs/awgn/1600.AWGN.1.png"


def test_csiq_malformed_label_files(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "all_by_image"
    book.active.append(["image", "dst_type", "dst_lev", "dmos"])  # header on row 1, not row 4
    for level in (1, 2, 3, 4):
        book.active.append([1600, "noise", level, 0.1 * level])
    book.save(tmp_path / "csiq.DMOS.xlsx")
    with pytest.raises(DatasetError, match=r"csiq\.DMOS\.xlsx sheet all_by_image has no column"):
        Csiq().parse(tmp_path)
    (tmp_path / "csiq.DMOS.xlsx").write_text("not a workbook")
    with pytest.raises(DatasetError, match=r"cannot read sheet all_by_image of .*csiq\.DMOS\.xlsx"):
        Csiq().parse(tmp_path)
    (tmp_path / "csiq_label.txt").write_text("1600.AWGN.1.png 0.1\n1600,AWGN,2 0.2\n")
    with pytest.raises(DatasetError, match=r"csiq_label\.txt line 2"):
        Csiq(label="txt").parse(tmp_path)
    with pytest.raises(DatasetError, match=r"csiq\.DMOS\.xlsx or csiq_label\.txt not found"):
        Csiq().parse(tmp_path / "empty")


# ------------------------------------------------------------------------------------- TID2013


def test_tid2013_case_insensitive_names_and_std(tmp_path):
    base = tmp_path / "tid2013" / "unpacked"  # the label file is found at any depth
    names = ["I01_01_1.bmp", "i01_01_2.bmp", "I01_13_1.BMP", "i02_24_5.bmp"]
    (base / "distorted_images").mkdir(parents=True)
    (base / "mos_with_names.txt").write_bytes(
        "".join(f"{4 + i * 0.5:.5f} {n}\r\n" for i, n in enumerate(names)).encode())
    (base / "mos_std.txt").write_text("0.1\n0.2\n0\n0.3\n")
    for disk in ("i01_01_1.bmp", "i01_01_2.bmp", "I01_13_1.bmp"):  # the last one stays missing
        write_image(base / "distorted_images" / disk)
    table = Tid2013().parse(tmp_path)
    on_disk = ("i01_01_1.bmp", "i01_01_2.bmp", "I01_13_1.bmp", "i02_24_5.bmp")
    assert table["image"].tolist() == ["tid2013/unpacked/distorted_images/" + n for n in on_disk]
    assert table["score"].tolist() == [4.0, 4.5, 5.0, 5.5]
    assert table["score_std"].tolist() == [0.1, 0.2, 0.0, 0.3]
    assert table["group"].tolist() == ["I01", "I01", "I01", "I02"]
    assert table["distortion"].tolist() == ["01", "01", "13", "24"]
    assert table["level"].tolist() == [1, 2, 1, 5]


def test_tid2013_malformed_label_files(tmp_path):
    (tmp_path / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\nfive i01_01_2.bmp\n")
    with pytest.raises(DatasetError, match=r"mos_with_names\.txt line 2"):
        Tid2013().parse(tmp_path)
    (tmp_path / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\n5.2 i01_01_2.bmp\n")
    (tmp_path / "mos_std.txt").write_text("0.1\n")
    with pytest.raises(DatasetError, match=r"mos_std\.txt has 1 values but .* has 2 lines"):
        Tid2013().parse(tmp_path)
    with pytest.raises(DatasetError, match=r"label file mos_with_names\.txt not found"):
        Tid2013().parse(tmp_path / "nothing")


def shared_tid2013() -> Path:
    root = Path(os.environ.get("BENCH_SHARED_DATA", "")) / "tid2013"
    if not os.environ.get("BENCH_SHARED_DATA") or not (root / "mos_with_names.txt").is_file():
        pytest.skip("needs $BENCH_SHARED_DATA/tid2013")
    return root


@pytest.mark.realdata
def test_tid2013_real_labels():
    root = shared_tid2013()
    table = Tid2013().parse(root)
    assert len(table) == 3000
    assert table["group"].nunique() == 25
    assert table.groupby("group").size().eq(120).all()
    assert table["distortion"].nunique() == 24
    assert sorted(table["level"].unique()) == [1, 2, 3, 4, 5]
    assert table.groupby(["distortion", "level"]).size().eq(25).all()
    assert (table["score"].min(), table["score"].max()) == (0.24242, 7.21429)
    present = table[[(root / image).is_file() for image in table["image"]]]
    assert present["image"].tolist() == ["distorted_images/i01_01_5.bmp",
                                         "distorted_images/i07_08_4.bmp",
                                         "distorted_images/i07_08_5.bmp"]
    assert present["score"].tolist() == [3.86486, 3.42222, 2.63636]
    # names the list spells in upper case keep their listed spelling when no file resolves them
    assert "distorted_images/I01_11_1.BMP" in set(table["image"])
    pyiqa = root.parent / "pyiqa" / "meta_info_TID2013Dataset.csv"
    if pyiqa.is_file():  # pyiqa's independent reading: same names, order, scores, references
        import pandas as pd

        meta = pd.read_csv(pyiqa)
        names = table["image"].str.rsplit("/", n=1).str[-1].str.lower()
        assert names.tolist() == meta["dist_name"].str.lower().tolist()
        np.testing.assert_allclose(table["score"], meta["mos"], rtol=0, atol=1e-9)
        assert table["group"].tolist() == meta["ref_name"].str[:3].str.upper().tolist()


# ----------------------------------------------------------------------------------------- KADID


def test_kadid_mos_var_and_std(tmp_path):
    rows = make_kadid(tmp_path)
    table = Kadid().parse(tmp_path)
    assert len(table) == 12
    assert table["image"].iloc[0] == "kadid10k/images/I01_01_01.png"
    assert table["group"].tolist() == [r["ref"][:3] for r in rows]
    assert table["score"].tolist() == [r["dmos"] for r in rows]
    assert table["var"].tolist() == [r["var"] for r in rows]
    np.testing.assert_allclose(table["score_std"], np.sqrt([r["var"] for r in rows]))
    assert table["distortion"].tolist() == ["01", "01", "25", "25"] * 3
    assert table["level"].tolist() == [1, 5, 1, 5] * 3
    # a MOS despite the column name: higher raw score, higher unit score
    assert table["score_unit"].iloc[table["score"].argmax()] == table["score_unit"].max()
    assert Kadid.higher_is_better


def test_kadid_malformed_label_files(tmp_path):
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,mos\nI01_01_01.png,I01.png,4.5\n")
    with pytest.raises(DatasetError, match=r"dmos\.csv header has no column dmos"):
        Kadid().parse(tmp_path)
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,x,0.1\n")
    with pytest.raises(DatasetError, match=r"dmos\.csv line 2: dmos is not a number"):
        Kadid().parse(tmp_path)
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nimg1.png,I01.png,4.5,0.1\n")
    with pytest.raises(DatasetError, match=r"dmos\.csv line 2: 'img1\.png' is not IXX_YY_ZZ\.png"):
        Kadid().parse(tmp_path)


# -------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name, alias, cls", [
    ("live", "databaserelease2", Live),
    ("csiq", "CSIQ", Csiq),
    ("tid2013", "tid", Tid2013),
    ("kadid", "kadid10k", Kadid),
])
def test_registered_with_aliases(name, alias, cls):
    registry = dataset_registry()
    assert registry.get(name) is cls
    assert registry.canonical(alias) == name
    assert cls.name == name and cls.expected_images and cls.expected_groups and cls.layout
    assert {s.access for s in cls.sources} <= {"direct", "manual", "mirror"}

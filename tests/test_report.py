"""bench report / bench cross: numbers in the tables equal independently computed medians,
marks sit on the right cells, every table compiles, figures are written, and report.pdf holds
every table and figure, one page each."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.metrics import all_metrics
from benchmark.models import get_model_class
from pdfpages import page_count
from synthetic_runs import write_run, write_suite

CELLS = {("deiqt", "livec"): (0.87, 10), ("deiqt", "koniq"): (0.91, 10), ("deiqt", "live"): (0.95, 7),
         ("qfm", "livec"): (0.89, 10), ("qfm", "koniq"): (0.90, 10), ("qfm", "demo"): (0.80, 3),
         ("brisque", "livec"): (0.60, 10), ("brisque", "koniq"): (0.70, 10)}
CROSS = {("deiqt", 10): 0.79, ("qfm", 5): 0.81}  # koniq->livec: (model, splits) → level


def write_features(results: Path) -> pd.DataFrame:
    """A feature-distance stage's folder (two splits of LIVEC-like features), as the stage
    writes it; returns the per-split rows."""
    from benchmark.report.features import Selection, distance_report, median_over_splits

    rng = np.random.default_rng(3)
    folder = results / "features" / "qfm" / "livec"
    frames = []
    for split in (0, 1):
        labels = rng.uniform(0, 1, 40)
        noise = {"F0": 5.0, "deiqt": 0.5, "qfm": 0.3}  # how little each source knows quality
        sources = {name: labels[:, None] + rng.normal(0, scale, (40, 6))
                   for name, scale in noise.items()}
        selection = Selection([f"{i}.png" for i in range(40)], [], labels,
                              np.arange(40).astype(str), split, "test")
        frames.append(distance_report(sources, selection, False, folder / "splits" /
                                      f"split{split}", {"dataset": "livec", "backbone": "vit_s"},
                                      n_boot=5, log=lambda _: None))
    per_split = pd.concat(frames, ignore_index=True)
    median_over_splits(per_split).to_csv(folder / "summary.csv", index=False)
    return per_split


def write_cross(results: Path, model: str, split: int, srcc: float, plcc: float) -> None:
    path = results / "cross" / model / "koniq__livec" / f"split{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"srcc": srcc, "krcc": srcc * 0.8, "plcc": plcc, "plcc_l4": plcc, "plcc_l5": plcc,
               "rmse": 0.2, "rmse_l5": 0.2}
    path.write_text(json.dumps({"schema": "bench-cross/1", "model": model, "train": "koniq",
                                "test": "livec", "split": split, "rule": "val", "epoch": 2,
                                "config_id": f"{model}cfg", "data": {"n_images": 1162},
                                "metrics": metrics}))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from benchmark.report.build import build_report

    results = tmp_path_factory.mktemp("results")
    truth = write_suite(results, CELLS)
    ablation = pd.concat([write_suite(results, {("qfm", "livec"): (0.89, 4)}, {"preset": "full"}),
                          write_suite(results, {("qfm", "livec"): (0.86, 4)}, {"preset": "-gate"})],
                         keys=["full", "-gate"], names=["preset"]).reset_index("preset")
    rng = np.random.default_rng(0)
    cross = []
    for (model, splits), level in CROSS.items():
        for split in range(splits):
            srcc, plcc = level + rng.normal(0, 0.01), level + 0.02 + rng.normal(0, 0.01)
            write_cross(results, model, split, srcc, plcc)
            cross.append({"model": model, "split": split, "srcc": srcc, "plcc": plcc})
    features = write_features(results)
    written, message = build_report(results, results, expected=10)
    return results, truth, ablation, pd.DataFrame(cross), written, features, message


def rows(tex: str) -> list[list[str]]:
    return [[cell.strip() for cell in line[:-2].split(" & ")] for line in tex.splitlines()
            if line.endswith(r"\\") and " & " in line]


def parse(cell: str) -> tuple[float | None, str | None, bool]:
    mark = "best" if cell.startswith(r"\textbf{") else "second" if cell.startswith(r"\underline{") \
        else None
    found = re.search(r"(\$-\$|[+-])?(\d+\.\d{3})", cell)
    value = None if found is None else float(("-" if found.group(1) in ("$-$", "-") else "")
                                             + found.group(2))
    return value, mark, r"$^\dagger$" in cell


def median(truth: pd.DataFrame, model: str, dataset: str, metric: str, rule: str = "val") -> float:
    chosen = truth[(truth["model"] == model) & (truth["dataset"] == dataset) & (truth["rule"] == rule)]
    return float(np.median(chosen[metric]))


def test_plain_text_summary_gives_each_cells_medians(built):
    results, truth, *_ = built
    text = (results / "tables" / "summary.txt").read_text()
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()[2:]}
    assert set(lines) == {(d, m) for m, d in CELLS}
    for (model, dataset), (_, splits) in CELLS.items():
        srcc, plcc, count = lines[(dataset, model)]
        assert float(srcc) == pytest.approx(median(truth, model, dataset, "srcc"), abs=5e-4)
        assert float(plcc) == pytest.approx(median(truth, model, dataset, "plcc"), abs=5e-4)
        assert count == (str(splits) if splits >= 10 else f"{splits}*")  # * = fewer than expected


def test_main_table_numbers_and_marks(built):
    results, truth, *_ = built
    tex = (results / "tables" / "main.tex").read_text()
    body = {row[0]: row[1:] for row in rows(tex) if row[0] in ("DEIQT", "QFM-IQM", "BRISQUE")}
    assert list(body) == ["BRISQUE", "DEIQT", "QFM-IQM"]
    # columns: live csiq tid2013 kadid livec koniq spaq flive demo, each SRCC then PLCC
    order = ["live", "csiq", "tid2013", "kadid", "livec", "koniq", "spaq", "flive", "demo"]
    labels = {"deiqt": "DEIQT", "qfm": "QFM-IQM", "brisque": "BRISQUE"}
    for model, label in labels.items():
        assert len(body[label]) == 2 * len(order)
        for index, dataset in enumerate(order):
            for offset, metric in enumerate(("srcc", "plcc")):
                value, _, dagger = parse(body[label][2 * index + offset])
                if (model, dataset) not in CELLS:
                    assert body[label][2 * index + offset] == "--"
                    continue
                assert value == pytest.approx(round(median(truth, model, dataset, metric), 3), abs=1e-9)
                assert dagger == (CELLS[(model, dataset)][1] < 10)
    livec = {label: parse(body[label][8])[1] for label in labels.values()}
    assert livec == {"QFM-IQM": "best", "DEIQT": "second", "BRISQUE": None}
    koniq = {label: parse(body[label][10])[1] for label in labels.values()}
    assert koniq == {"DEIQT": "best", "QFM-IQM": "second", "BRISQUE": None}
    assert parse(body["DEIQT"][0])[1] == "best"  # the only LIVE result
    assert r"\multicolumn{8}{c}{Synthetic}" in tex and r"\multicolumn{2}{c}{Other}" in tex


def test_published_table_differences(built):
    results, truth, *_ = built
    tex = (results / "tables" / "published.tex").read_text()
    table = rows(tex)
    model = ""
    found = {}
    for row in table[1:]:
        model = row[0] or model
        found[(model, row[1])] = row[2:]
    deiqt = found[("DEIQT", "LIVEC")]
    ours = median(truth, "deiqt", "livec", "srcc")
    assert parse(deiqt[0])[0] == pytest.approx(round(ours, 3))
    assert deiqt[1] == r"0.875$^{\mathrm{DA,X}}$"
    assert parse(deiqt[2])[0] == pytest.approx(round(ours - 0.875, 3), abs=1e-9)
    assert parse(deiqt[5])[0] == pytest.approx(round(median(truth, "deiqt", "livec", "plcc") - 0.894, 3))
    # unknown published cells stay empty
    assert found[("QFM-IQM", "Demo")][1:3] == ["", ""]
    assert found[("DEIQT", "LIVE")][4] == "" and found[("DEIQT", "LIVE")][1].startswith("0.980")
    assert found[("BRISQUE", "KonIQ")][1].startswith("0.715")
    assert "DA: DEIQT abstract (AAAI 2023)" in tex and "V1:" in tex and "N:" not in tex


def test_protocol_table_optimism(built):
    results, truth, *_ = built
    table = rows((results / "tables" / "protocol.tex").read_text())
    model = ""
    for row in table[1:]:
        model = row[0] or model
        if (model, row[1]) != ("QFM-IQM", "KonIQ"):
            continue
        val, oracle = median(truth, "qfm", "koniq", "srcc"), median(truth, "qfm", "koniq", "srcc",
                                                                     "test_oracle")
        assert parse(row[2])[0] == pytest.approx(round(val, 3))
        assert parse(row[3])[0] == pytest.approx(round(oracle, 3))
        assert row[4:6] == ["--", "--"]  # no paper-protocol runs: no paper column, no delta
        break
    else:
        pytest.fail("no QFM-IQM KonIQ row")


def test_a_run_in_another_precision_than_its_original_is_flagged(tmp_path):
    from benchmark.report.aggregate import aggregate
    from benchmark.report.tables import DDAGGER, PRECISION_NOTE, main_table, protocol_table

    write_run(tmp_path, "hyperiqa", "livec", 0, 0.80, seed=1)
    write_run(tmp_path, "deiqt", "livec", 0, 0.85, seed=2)
    path = next((tmp_path / "runs" / "hyperiqa").rglob("record.json"))
    record = json.loads(path.read_text())
    record["precision"] = {"dtype": "bf16", "original": "fp32", "differs": True}
    path.write_text(json.dumps(record))
    summary = aggregate(tmp_path, expected=1)["summary"]
    flagged = summary.groupby("model")["precision_differs"].all().to_dict()
    assert flagged == {"deiqt": False, "hyperiqa": True}
    rows = {line.split(" & ")[0]: line for line in main_table(summary).splitlines() if " & " in line}
    assert DDAGGER in rows["HyperIQA"] and DDAGGER not in rows["DEIQT"]
    assert PRECISION_NOTE in main_table(summary) and PRECISION_NOTE in protocol_table(summary)
    assert PRECISION_NOTE not in main_table(summary[summary["model"] == "deiqt"])


def test_ablation_table_by_preset(built):
    results, _, ablation, *_ = built
    table = rows((results / "tables" / "ablation.tex").read_text())
    presets = {row[1]: row[2:] for row in table[2:]}
    assert list(presets) == ["-gate", "full"]
    for preset, cells in presets.items():
        chosen = ablation[(ablation["preset"] == preset) & (ablation["rule"] == "val")]
        value, mark, dagger = parse(cells[0])
        assert value == pytest.approx(round(float(np.median(chosen["srcc"])), 3))
        assert dagger  # 4 of 10 splits
        assert mark == ("best" if preset == "full" else "second")


def test_cross_table(built):
    results, _, _, cross, *_ = built
    table = rows((results / "tables" / "cross_srcc.tex").read_text())
    body = {row[0]: row[2:] for row in table[2:]}
    deiqt = body["DEIQT"][0]
    expected = float(np.median(cross[cross["model"] == "deiqt"]["srcc"]))
    assert parse(deiqt)[0] == pytest.approx(round(expected, 3))
    assert "(0.794$^{\\mathrm{X}}$)" in deiqt and not parse(deiqt)[2]
    qfm = body["QFM-IQM"][0]
    assert parse(qfm)[0] == pytest.approx(round(float(np.median(cross[cross["model"] == "qfm"]["srcc"])), 3))
    assert parse(qfm)[2] and "(" not in qfm  # 5 of 10 splits; nothing published
    plcc = rows((results / "tables" / "cross_plcc.tex").read_text())
    assert parse(plcc[2][2])[0] == pytest.approx(
        round(float(np.median(cross[cross["model"] == "deiqt"]["plcc"])), 3))


def test_features_table_holds_the_medians_over_splits(built):
    results, *_, features, _ = built
    table = rows((results / "tables" / "features.tex").read_text())
    assert [r[1] for r in table[1:]] == [r"F0 (\texttt{vit\_s}, frozen)", "DEIQT", "QFM-IQM"]
    assert table[1][0] == "LIVEC" and table[2][0] == table[3][0] == ""
    main = features[(features["relation"] == "all") & (features["distance"] == "cosine")]
    for row, source in zip(table[1:], ("F0", "deiqt", "qfm")):
        mine = main[main["source"] == source]
        for cell, column in zip(row[2:7], ("S1_0.2", "Srand_0.2", "gap_ratio_1", "rho",
                                           "knn_srcc")):
            assert parse(cell)[0] == pytest.approx(round(float(np.median(mine[column])), 3))
        assert row[7] == "2"
    rho = {r[1]: parse(r[5])[0] for r in table[1:]}
    assert rho["QFM-IQM"] > rho[r"F0 (\texttt{vit\_s}, frozen)"]  # quality-aware features


def test_figures_written(built):
    results, *_, written, _, _ = built
    names = {p.name for p in written["figures"]}
    for model, dataset in CELLS:
        for stem in (f"scatter_{model}_{dataset}", f"curves_{model}_{dataset}"):
            assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"box_srcc_val.png", "box_srcc_val.pdf"} <= names
    assert len(names) == 2 * (2 * len(CELLS) + 1)
    assert all((results / "figures" / name).stat().st_size > 2000 for name in names)


def test_report_document_has_one_page_per_table_and_figure(built):
    results, *_, written, _, message = built
    tex = (results / "report.tex").read_text()
    tables = sorted((results / "tables").glob("*.tex"))
    figures = [p for p in written["figures"] if p.suffix == ".pdf"]
    assert all(rf"\input{{tables/{t.name}}}" in tex for t in tables)
    assert all(f"figures/{f.name}" in tex for f in figures)
    assert "features/qfm/livec/splits/split0/distance_gap.pdf" in tex  # the first split's
    assert "splits/split1/" not in tex
    sections = len(tables) + len(figures) + 2
    assert tex.count(r"\clearpage") == sections and tex.count(r"\caption{") == len(figures) + 2
    if shutil.which("pdflatex") is None:
        assert message.startswith("report.pdf not written: pdflatex not found")
        assert not (results / "report.pdf").exists()
        pytest.skip("pdflatex not installed: report.pdf not compiled")
    assert message.endswith(f"{sections} pages, {len(tables)} tables and "
                            f"{sections - len(tables)} figures")
    assert page_count(results / "report.pdf") == sections
    assert not list(results.glob("report.aux")) and not list(results.glob("report.log"))


def test_a_report_without_pdflatex_says_so_and_writes_the_rest(tmp_path, monkeypatch):
    from benchmark.report import document

    monkeypatch.setattr(document.shutil, "which", lambda name: None)
    written, message = document.write_document([], tmp_path)
    assert message == document.PDFLATEX_MISSING and written == [tmp_path / "report.tex"]
    assert not (tmp_path / "report.pdf").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_tables_compile_with_pdflatex(built, tmp_path):
    results, *_ = built
    tables = sorted((results / "tables").glob("*.tex"))
    assert [t.stem for t in tables] == ["ablation", "cross_plcc", "cross_srcc", "features",
                                        "main", "protocol", "published"]
    inputs = "\n".join(rf"\input{{{t.as_posix()}}}\clearpage" for t in tables)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Overfull" not in done.stdout  # the wide main table is scaled to the text width
    assert (tmp_path / "doc.pdf").stat().st_size > 5000


def test_cross_evaluation_records(tmp_path, monkeypatch):
    """evaluate_cross with stand-ins for load_trained/predict: orientation and metrics."""
    import benchmark.loader
    import benchmark.engine
    import benchmark.trained
    from benchmark.datasets.base import Dataset, standard_table
    from benchmark.datasets.prepare import prepare
    from benchmark.report.cross import cross_summary, evaluate_cross
    from benchmark.datasets.splits import SplitProtocol

    rng = np.random.default_rng(0)
    images = [f"t{i}.png" for i in range(40)]
    mos = rng.uniform(1, 5, 40)

    class Target(Dataset):
        name, kind, score_type, higher_is_better, score_range = "livec", "authentic", "MOS", True, (1.0, 5.0)

        def parse(self, root):
            return standard_table(self, pd.DataFrame({"image": images, "score": mos, "group": images}))

    root = tmp_path / "target"
    root.mkdir()
    for image in images:
        (root / image).write_bytes(b"")
    prepared = prepare(Target(), root, SplitProtocol(seeds=(0,)))
    units = prepared.table["score_unit"].to_numpy()
    noise = rng.normal(0, 0.05, 40)
    # the source is a DMOS set: unit = 1 − label/100, so its raw predictions fall with quality
    for split in range(3):
        write_run(tmp_path / "results", "deiqt", "koniq", split, 0.9, seed=split,
                  config={"img_size": 224, "test_crops": 2}, label_map=(-0.01, 1.0))
    calls = []

    class Stub:
        # the trained model's own config decides the evaluation crops
        config = get_model_class("deiqt").Config(img_size=224, test_crops=2)

        def to(self, device):
            return self

    def fake_load(path, rule):
        calls.append(rule)
        return benchmark.trained.Trained(Stub(), {}, rule, 3, path / "best_val.pt")

    def fake_predict(model, cache, crop, n_crops, seed, device, batch_size):
        assert (crop, n_crops) == (224, 2) and len(cache) == 40
        return (1.0 - (units + noise)) * 100.0

    monkeypatch.setattr(benchmark.trained, "load_trained", fake_load)
    monkeypatch.setattr(benchmark.engine, "predict", fake_predict)
    monkeypatch.setattr(benchmark.loader, "decode_image", lambda path, spec: np.zeros((8, 8, 3)))
    written = evaluate_cross("deiqt", "koniq", "livec", root, tmp_path / "results", device="cpu",
                             log=lambda _: None)
    assert [p.name.split("-")[0] for p in written] == ["split0", "split1", "split2"]
    assert calls == ["val"] * 3
    record = json.loads(written[0].read_text())
    expected = all_metrics(units + noise, units)
    assert record["metrics"]["srcc"] == pytest.approx(expected["srcc"]) and expected["srcc"] > 0.9
    assert record["metrics"]["rmse"] == pytest.approx(expected["rmse"])
    assert record["data"]["n_images"] == 40 and record["split"] == 0
    per_image = pd.read_csv(written[0].with_suffix(".csv"))
    assert per_image["pred_unit"].to_numpy() == pytest.approx(units + noise)
    assert per_image["image"].tolist() == images
    summary = cross_summary(tmp_path / "results", expected={"*": 10, "koniq": 3})
    row = summary[(summary["metric"] == "srcc")].iloc[0]
    assert row["dataset"] == "koniq->livec" and row["n"] == 3 and row["complete"]
    # a second call skips finished splits
    evaluate_cross("deiqt", "koniq", "livec", root, tmp_path / "results", device="cpu",
                   log=lambda _: None)
    assert len(calls) == 3


def test_cli_help_and_light_import():
    from benchmark.cli import main

    runner = CliRunner()
    for command in (["aggregate"], ["report"], ["analyze"], ["analyze", "feature-distance"],
                    ["cross"]):
        outcome = runner.invoke(main, [*command, "--help"])
        assert outcome.exit_code == 0, outcome.output
        assert "Usage:" in outcome.output
    code = "import sys, benchmark.cli.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_errors_are_one_line(tmp_path):
    from benchmark.cli import main

    runner = CliRunner()
    outcome = runner.invoke(main, ["report", "--results", str(tmp_path)])
    assert outcome.exit_code == 1 and "no finished run records" in outcome.output
    outcome = runner.invoke(main, ["analyze", "feature-distance", "--dataset", "livec",
                                   "--root", str(tmp_path)])
    assert outcome.exit_code == 1 and "pass --backbone and/or --checkpoint" in outcome.output
    outcome = runner.invoke(main, ["cross", "--train", "koniq", "--test", "livec", "--root-test",
                                   str(tmp_path), "--results", str(tmp_path)])
    assert outcome.exit_code == 1 and "no finished runs on koniq" in outcome.output


@pytest.mark.slow
def test_end_to_end_on_demo_runs(demo_root, tmp_path):
    """Real probe runs → aggregate → report → cross (demo on itself) → feature distance."""
    from benchmark.cli import main
    from benchmark.engine import RunConfig
    from benchmark.runner import run_one

    results = tmp_path / "results"
    # 96-pixel crops of the 96-pixel demo images: every test crop is the whole image, so a
    # prediction cannot depend on where the seeded crop falls
    overrides = {"epochs": 1, "backbone": "test_efficientnet", "pretrained": "false",
                 "img_size": 96, "train_crops": 1, "test_crops": 2}
    records = [run_one("probe", "demo", split, demo_root, overrides,
                       RunConfig(device="cpu", progress=False), results, log=lambda _: None)
               for split in (0, 1)]
    runner = CliRunner()
    outcome = runner.invoke(main, ["report", "--results", str(results), "--out", str(tmp_path),
                                   "--expect-splits", "2", "--no-figures"])
    assert outcome.exit_code == 0, outcome.output
    row = next(r for r in rows((tmp_path / "tables" / "main.tex").read_text()) if r[0] == "Probe")
    srcc = np.median([r["metrics"]["val"]["test"]["srcc"] for r in records])
    assert parse(row[-2])[0] == pytest.approx(round(srcc, 3)) and not parse(row[-2])[2]

    outcome = runner.invoke(main, ["cross", "--train", "demo", "--test", "demo", "--root-test",
                                   str(demo_root), "--results", str(results), "--device", "cpu"])
    assert outcome.exit_code == 0, outcome.output
    for record in records:
        # the run's own test images, scored again by the same weights and crops
        (path,) = (results / "cross" / "probe" / "demo__demo").glob(
            f"split{record['split']}-*.csv")  # one record per split: one rule, one test copy
        cross = pd.read_csv(path).set_index("image")
        own = pd.read_csv(Path(record["_dir"]) / "predictions.csv").query("part == 'test'")
        assert cross.loc[own["image"], "pred_unit"].to_numpy() == pytest.approx(
            own["pred_unit_val"].to_numpy(), abs=1e-4)

    outcome = runner.invoke(main, ["analyze", "feature-distance", "--dataset", "demo", "--root",
                                   str(demo_root), "--checkpoint", records[0]["_dir"],
                                   "--backbone", "test_vit", "--pretrained", "false", "--crop",
                                   "96", "--crops", "1", "--boot", "5", "--device", "cpu",
                                   "--out", str(tmp_path / "fd")])
    assert outcome.exit_code == 0, outcome.output
    summary = pd.read_csv(tmp_path / "fd" / "summary.csv")
    # two sources × 3 relations (demo is synthetic) × 2 distances
    assert len(summary) == 12 and set(summary["source"]) == {"F0 test_vit", "probe"}
    assert set(summary["n_images"]) == {records[0]["data"]["n_test"]}


def test_published_reference_is_complete_and_checked(tmp_path):
    from benchmark.report.published import load_published, lookup

    published = load_published()
    assert len(published) == 66 and (published["citation"].str.len() > 0).all()
    assert lookup(published, "qfm", "livec", "srcc") == (0.891, ["X", "W"])
    assert lookup(published, "qfm", "live", "plcc") is None  # unknown stays unknown
    assert lookup(published, "deiqt", "koniq->livec", "srcc") == (0.794, ["X"])
    bad = published.copy()
    bad.loc[0, "sources"] = "Q"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="unknown source code 'Q'"):
        load_published(tmp_path / "bad.csv")
    bad = published.copy()
    bad.loc[3, "citation"] = " "
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="qfm livec srcc has no citation"):
        load_published(tmp_path / "bad.csv")

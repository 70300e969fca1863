"""params.yaml → suites: the repository's file, hyper-parameter layering, bad input named by
key, and `bench suite list/check/use`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.registry import model_registry
from benchmark.grid.cells import check_params
from benchmark.grid.suite import SuiteError, load_params, parse_indices, parse_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def bench(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def edited(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """A copy of the repository's params.yaml with one textual edit (it must apply)."""
    text = PARAMS.read_text()
    assert text.count(old) >= count, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, count))
    return path


def test_repository_params_define_demo_paper_and_ablation():
    params = load_params(PARAMS)
    assert params.active == "demo"
    assert list(params.suites) == ["demo", "paper", "paper-protocol", "ablation"]
    assert params.seeds == tuple(range(10))
    demo = params.suite()
    assert demo.datasets == ("demo",) and demo.splits == (0, 1, 2)
    cells = demo.cells()
    assert len(cells) == 12
    # teachers' cells come first, the student's last
    assert [c.entry for c in cells] == ["probe"] * 3 + ["brisque"] * 3 + ["deiqt"] * 3 + ["qfm"] * 3
    assert [c.split for c in cells[:3]] == [0, 1, 2]
    assert demo.teacher == "deiqt" and demo.teacher_model == "deiqt"
    assert demo.run == {"device": "cpu", "seed": 0, "amp": "off", "threads": 2}
    # no adjustments: the demo dataset's own recipes apply
    assert all(entry.overrides == {} for entry in demo.entries)
    paper = params.suite("paper")
    assert len(paper.datasets) == 8 and paper.splits == tuple(range(10))
    # QFM-IQM and every registered baseline
    assert {e.model for e in paper.entries} == set(model_registry().names())
    assert [e.name for e in paper.entries if e.student] == ["qfm"]
    assert len(paper.cells()) == 8 * 9 * 10
    assert paper.cross == (("koniq", "livec"), ("livec", "koniq"))
    assert demo.cross == (("demo", "demo-shift"),) and demo.test_datasets == ("demo-shift",)
    # a pair leaves with either of its datasets
    assert params.suite("paper", datasets=["koniq", "live"]).cross == ()
    ablation = params.suite("ablation")
    presets = {e.name: e.overrides.get("preset") for e in ablation.entries}
    assert presets["qfm-A1"] == "A1" and presets["qfm"] is None and len(presets) == 14


def test_every_suite_resolves_with_teachers_before_students():
    assert check_params(load_params(PARAMS)) == {"demo": 12, "paper": 720, "paper-protocol": 560,
                                        "ablation": 420}


def test_entry_hyper_parameters_win_over_the_suites_adjustments(tmp_path):
    path = edited(tmp_path, "  probe: {}\n", "  probe: {lr: 0.5, epochs: 9}\n")
    text = path.read_text().replace(
        "      probe: {}\n", "      probe: {lr: 0.1, warmup_epochs: 0.5, backbone: test_efficientnet}\n")
    path.write_text(text)
    probe = load_params(path).suite().entries[0]
    assert probe.name == "probe" and probe.model == "probe"
    assert probe.overrides["lr"] == 0.5 and probe.overrides["epochs"] == 9
    assert probe.overrides["warmup_epochs"] == 0.5  # the demo suite's own value
    assert probe.overrides["backbone"] == "test_efficientnet"
    paper_probe = load_params(path).suite("paper").entries[1]
    assert paper_probe.name == "probe" and paper_probe.overrides == {"lr": 0.5, "epochs": 9}


def test_lists_replace_the_suites_own():
    params = load_params(PARAMS)
    suite = params.suite("demo", models=["deiqt", "qfm"], splits=[1])
    assert [c.id for c in suite.cells()] == ["deiqt/demo/1", "qfm/demo/1"]
    # an entry outside the suite runs with its params.yaml hyper-parameters only
    assert params.suite("demo", models=["hyperiqa"]).entries[0].overrides == {}
    with pytest.raises(SuiteError, match=r"--models: unknown model 'deiqtt'; did you mean deiqt"):
        params.suite("demo", models=["deiqtt"])
    with pytest.raises(SuiteError, match=r"--datasets: unknown dataset 'livecc'"):
        params.suite("demo", datasets=["livecc"])
    with pytest.raises(SuiteError, match=r"--splits: split 10 is not in 0\.\.9"):
        params.suite("demo", splits=[10])
    with pytest.raises(SuiteError, match=r"unknown suite 'papr' \(suites in .*: demo, paper"):
        params.suite("papr")


BAD = [
    ("datasets: [demo]", "datasets: [demoo]",
     "suites.demo.datasets[0]: unknown dataset 'demoo'; did you mean demo, demo-shift?"),
    ("datasets: [livec, koniq, csiq]", "datasets: [clive, koniq, csiq]",
     "suites.ablation.datasets[0]: 'clive' is an alias; write 'livec'"),
    ("  tres: {}\n", "  tres: {}\n  bogus: {}\n", "models.bogus: unknown model 'bogus'"),
    ("qfm-A0: {model: qfm,", "qfm-A0: {model: qfn,", "models.qfm-A0.model: unknown model 'qfn'"),
    ("      brisque: {}\n      deiqt", "      brisq: {}\n      deiqt",
     "suites.demo.models.brisq: no entry 'brisq' under models"),
    ("\nsuite: *demo", "\nsuite: *nosuch", "found undefined alias"),
    ("\nsuite: *demo", "\nsuite: paper", "suite must alias a suite (suite: *paper)"),
    ("\nsuite: *demo", "\nsuite: papers",
     "suite: unknown suite 'papers' (known: demo, paper, paper-protocol, ablation)"),
    ("\npaths:", "\npathz:", "params.yaml: unknown key 'pathz'"),
    ("run: {device: cpu, seed: 0,", "run: {device: cpu, sed: 0,",
     "suites.demo.run: unknown key 'sed'"),
    ("splits: [0, 1, 2]", "splits: [0, 1, 12]", "suites.demo.splits: split 12 is not in 0..9"),
    ("expect_splits: 3", "expect_splits: 0", "suites.demo.expect_splits"),
    ("seeds: 0-9", "seeds: zero", "protocol.seeds: 'zero' is not a list like 0-9"),
    ("rounding: round", "rounding: ceil", "protocol: rounding must be 'round' or 'floor'"),
    ("    teacher: deiqt\n    # no adjustments",
     "    teacher: probee\n    # no adjustments",
     "suites.demo.teacher: 'probee' is not one of the suite's models"),
    ("  demo: &demo ", "  demo: &demo\n    colour: red\n  demo2: &demo2 ",
     "suites.demo: unknown key 'colour'"),
    ("    cross: [{train: demo, test: demo-shift}]  #", "    #",
     "suites.demo: missing key 'cross'"),
    ("    cross: [{train: demo, test: demo-shift}]  #", "    cross: {train: demo, test: demo}  #",
     "suites.demo.cross: a list of {train: DATASET, test: DATASET} pairs ([] for none)"),
    ("{train: koniq, test: livec}", "{train: koniq, tset: livec}",
     "suites.paper.cross[0]: unknown key 'tset' (known: train, test)"),
    ("{train: koniq, test: livec}", "{train: koniq}", "suites.paper.cross[0]: missing key 'test'"),
    ("{train: koniq, test: livec}", "{train: koniq, test: clive}",
     "suites.paper.cross[0].test: 'clive' is an alias; write 'livec'"),
    ("    cross: [{train: demo, test: demo-shift}]  #", "    cross: [{train: demo, test: livec}]  #",
     "suites.demo.cross[0].test: 'livec' is not one of the suite's datasets or test_datasets "
     "(demo, demo-shift)"),
    ("    cross: [{train: demo, test: demo-shift}]  #",
     "    cross: [{train: demo-shift, test: demo}]  #",
     "suites.demo.cross[0].train: 'demo-shift' is not one of the suite's datasets (demo)"),
    ("    test_datasets: [demo-shift]  #", "    test_datasets: demo-shift  #",
     "suites.demo.test_datasets: a list of dataset names that only cross pairs score"),
    ("    test_datasets: [demo-shift]  #", "    test_datasets: [demo]  #",
     "suites.demo.test_datasets[0]: 'demo' is also under datasets"),
    ("    test_datasets: [demo-shift]  #", "    test_datasets: [demo-shfit]  #",
     "suites.demo.test_datasets[0]: unknown dataset 'demo-shfit'"),
    ("{train: livec, test: koniq}", "{train: koniq, test: livec}",
     "suites.paper.cross[1]: koniq -> livec is listed twice"),
]


@pytest.mark.parametrize("old, new, message", BAD, ids=[b[2].split(":")[0][:40] for b in BAD])
def test_bad_params_are_rejected_naming_the_key(tmp_path, old, new, message):
    path = edited(tmp_path, old, new)
    with pytest.raises(SuiteError) as error:
        load_params(path)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize("old, new, message", [
    ("      probe: {}\n      brisque", "      probe: {epochz: 4}\n      brisque",
     "suites.demo: probe on demo: unknown config key 'epochz'"),
    ("      probe: {}\n      brisque", "      probe: {test_img_size: abc}\n      brisque",
     "suites.demo: probe on demo: config key 'test_img_size' expects an integer or null, "
     "got 'abc'"),
    ("      probe: {}\n      brisque", "      probe: {schedule: linear}\n      brisque",
     "suites.demo: probe on demo: config key 'schedule' expects one of step, cosine, "
     "cosine_periodic, constant, got 'linear'"),
    ("    students:\n      qfm: {}", "      qfm: {}\n    students: {}",
     "suites.demo.models.qfm: needs a deiqt run first; list it under students"),
    ("    students: {qfm-A1: {},", "    students: {qfm-A0b: {},",
     "suites.ablation.students.qfm-A0b: needs deiqt"),
])
def test_full_check_resolves_configs_and_the_teacher_order(tmp_path, old, new, message):
    path = edited(tmp_path, old, new)
    if "qfm-A0b" in new:  # a student entry whose teacher is not the suite's teacher's model
        text = path.read_text().replace("  qfm-A0: {model: qfm, preset: A0}\n",
                                        "  qfm-A0: {model: qfm, preset: A0}\n"
                                        "  qfm-A0b: {model: qfm, preset: A1}\n")
        path.write_text(text.replace("    teacher: deiqt\n    models: {deiqt: {}, qfm-A0",
                                     "    teacher: qfm-A0\n    models: {deiqt: {}, qfm-A0"))
    params = load_params(path)
    with pytest.raises(SuiteError) as error:
        check_params(params)
    assert message in str(error.value), str(error.value)


def test_parse_indices():
    assert parse_indices("0-4,7", "x") == (0, 1, 2, 3, 4, 7)
    assert parse_indices("3,1,3", "x") == (3, 1)
    with pytest.raises(SuiteError, match="x: '1-' is not a list"):
        parse_indices("1-", "x")


def test_use_switches_the_alias_and_nothing_else(tmp_path):
    path = tmp_path / "params.yaml"
    original = PARAMS.read_text()
    path.write_text(original)
    result = bench("suite", "use", "paper", "--params", path)
    assert result.exit_code == 0, result.output
    assert "active suite: paper (8 datasets, 10 splits)" in result.output
    pairs = zip(original.splitlines(), path.read_text().splitlines())
    changed = [(a, b) for a, b in pairs if a != b]
    assert changed == [("suite: *demo", "suite: *paper")]
    assert load_params(path).active == "paper"
    assert bench("suite", "use", "demo", "--params", path).exit_code == 0
    assert path.read_text() == original


def test_use_restores_an_anchor_dvc_dropped_and_repairs_a_bad_alias(tmp_path):
    path = tmp_path / "params.yaml"
    # `dvc exp run -S` rewrites the file without anchors nothing refers to
    path.write_text(PARAMS.read_text().replace("  paper: &paper ", "  paper: ")
                    .replace("\nsuite: *demo", "\nsuite: paper"))
    with pytest.raises(SuiteError, match="bench suite use paper"):
        load_params(path)
    assert bench("suite", "use", "paper", "--params", path).exit_code == 0
    assert "  paper: &paper " in path.read_text() and load_params(path).active == "paper"


def test_use_unknown_suite_names_the_known_ones_and_leaves_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text())
    result = bench("suite", "use", "papr", "--params", path)
    assert result.exit_code == 1
    assert "Error: unknown suite 'papr' (suites in" in result.output
    assert "demo, paper, paper-protocol, ablation" in result.output
    assert path.read_text() == PARAMS.read_text()


def test_list_and_check_commands(tmp_path):
    result = bench("suite", "list", "--params", PARAMS)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["*", "demo", "12"]
    assert lines[1].split()[:2] == ["paper", "720"]
    result = bench("suite", "check", "--params", PARAMS, "--stamp", tmp_path / "checked")
    assert result.exit_code == 0, result.output
    assert ("4 suites valid (demo 12 runs, paper 720 runs, paper-protocol 560 runs, ablation 420 "
            "runs); active: demo") in result.output
    assert (tmp_path / "checked").is_file()
    bad = edited(tmp_path, "datasets: [demo]", "datasets: [demoo]")
    result = bench("suite", "check", "--params", bad, "--stamp", tmp_path / "again")
    assert result.exit_code == 1 and "suites.demo.datasets[0]" in result.output
    assert not (tmp_path / "again").exists()


def test_params_round_trip_through_a_plain_yaml_dump(tmp_path):
    # tests and tools may rewrite params.yaml with PyYAML: the alias survives as an anchor
    data = yaml.safe_load(PARAMS.read_text())
    data["suites"]["demo"]["splits"] = [0]
    text = yaml.safe_dump(data, sort_keys=False)
    params = parse_params(text, tmp_path / "params.yaml")
    assert params.active == "demo" and params.suite().splits == (0,)


def test_params_are_read_as_dvc_reads_them(tmp_path):
    # `dvc exp run -S` rewrites the file with YAML 1.2 scalars, unquoted
    path = edited(tmp_path, 'amp: "off"', "amp: off")
    path.write_text(path.read_text().replace("  deiqt: {}\n", "  deiqt: {lr: 1e-4, hflip: yes}\n"))
    params = load_params(path)
    assert params.suite().run["amp"] == "off"
    assert params.entries["deiqt"] == {"lr": 0.0001, "hflip": "yes"}


def test_analysis_stages_refuse_what_the_suite_lacks_in_one_line(tmp_path, demo_root):
    for command in ("features", "cross"):
        assert bench("suite", command, "--help").exit_code == 0
    data = yaml.safe_load(PARAMS.read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_root)
    data["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results"),
                     "pipeline": str(tmp_path / "results" / "dvc"),
                     "report": str(tmp_path / "results")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    cases = [
        (["features", "deiqt", "demo"],
         "'deiqt' is not one of the students of the active suite demo (qfm)"),
        (["features", "qfm", "demo"], "no run of deiqt/demo/0 exported at"),
        (["cross", "deiqt", "koniq", "livec"],
         "koniq->livec is not a cross pair of the active suite demo (its pairs: demo->demo-shift)"),
        (["cross", "hyperiqa", "demo", "demo-shift"],
         "'hyperiqa' is not one of the entries of the active suite demo"),
    ]
    for args, message in cases:
        result = bench("suite", *args, "--params", path, "--out", out)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()

"""The user documentation stays true to the code: option names, defaults, choices, presets,
diagnostics, model and dataset sections, dataset options, split counts and CLI names."""

from __future__ import annotations

import inspect
import re
from dataclasses import MISSING, fields
from pathlib import Path

import click
import pandas as pd
import pytest
import torch

from baselines.deiqt import DEIQT, DEIQTConfig
from benchmark.cli import LAZY_COMMANDS, main
from benchmark.models import TrainContext, field_choices, get_model_class, list_models
from benchmark.registry import dataset_registry
from benchmark.datasets.splits import SplitProtocol, make_split
from qfm.config import QFMConfig
from qfm.model import QFM
from qfm.presets import GRID_IDS, PRESETS

DOCS = Path(__file__).resolve().parent.parent / "docs"
STATUSES = {"paper", "inferred", "ours", "not from the paper"}
CODE = re.compile(r"`([^`]+)`")


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """Level-2 sections by heading text (everything after '## ' up to the line end)."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def named_sections(text: str) -> dict[str, str]:
    """Sections whose heading starts with a code name: '## `name` — title' → {name: body}."""
    found = {}
    for heading, body in sections(text).items():
        match = re.match(r"`([^`]+)`", heading)
        if match:
            assert match.group(1) not in found, f"two sections for {match.group(1)}"
            found[match.group(1)] = body
    return found


def table_rows(body: str) -> list[list[str]]:
    """Cells of the body rows of every markdown table in ``body`` (header and rule skipped)."""
    rows, previous = [], ""
    for line in body.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| :]+\|$", line):
            if previous.startswith("|"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                rows.append(cells)
        previous = line if line.startswith("|") else ""
    return rows


def fmt(value) -> str:
    """A default as the docs spell it (what `--set key=value` accepts)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- docs/qfm.md

QFM_DOC = read("qfm.md")
INHERITED = [f.name for f in fields(DEIQTConfig)]
OWN = [f for f in fields(QFMConfig) if f.name not in set(INHERITED)]


def option_rows() -> dict[str, list[str]]:
    body = sections(QFM_DOC)["Configuration options"]
    rows = [r for r in table_rows(body) if r and r[0].startswith("`")]
    names = [CODE.match(r[0]).group(1) for r in rows]
    assert len(names) == len(set(names)), "an option is listed twice"
    return dict(zip(names, rows))


def test_option_table_lists_every_qfm_option_and_nothing_else():
    assert set(option_rows()) == {f.name for f in OWN}


def test_option_table_defaults_and_statuses_match_the_code():
    rows = option_rows()
    for item in OWN:
        default = item.default if item.default is not MISSING else item.default_factory()
        cells = rows[item.name]
        assert CODE.findall(cells[1]) == [fmt(default)], (item.name, cells[1])
        assert cells[3] in STATUSES, (item.name, cells[3])


def test_option_table_choices_match_the_code():
    rows = option_rows()
    choices = {k: v for k, v in field_choices(QFMConfig).items() if k in {f.name for f in OWN}}
    assert "gate" in choices and "teacher" in choices  # the Literal annotations were seen
    for key, allowed in choices.items():
        documented = set(CODE.findall(rows[key][1])) | set(CODE.findall(rows[key][2]))
        assert documented == set(allowed), key


def test_inherited_recipe_keys_are_named_below_the_table():
    inherited = sections(QFM_DOC)["Configuration options"].split("**Inherited recipe keys.**")[1]
    assert set(CODE.findall(inherited)) >= set(INHERITED)


def test_preset_table_matches_presets_and_their_teacher_needs():
    body = sections(QFM_DOC)["Presets: the ablation grid"]
    rows = {r[0]: r for r in table_rows(body)}
    assert set(rows) == set(GRID_IDS)
    for grid_id, name in GRID_IDS.items():
        row = rows[grid_id]
        assert CODE.findall(row[1]) == [name], grid_id
        for key, value in PRESETS[name].items():
            assert f"`{key}={value}`" in row[2], (grid_id, key)
        config = QFM.resolve_config({"preset": name, "pretrained": "false"})
        assert row[3] == ("yes" if QFM.prerequisites(config) else "no"), grid_id
    for name in PRESETS:
        assert f"`{name}`" in QFM_DOC


def test_params_yaml_entries_named_in_the_docs_exist():
    text = (DOCS.parent / "params.yaml").read_text()
    for entry in set(re.findall(r"\bqfm-[A-Z]\d+b?\b", QFM_DOC)):
        assert re.search(rf"^\s+{re.escape(entry)}:", text, re.MULTILINE), entry


def test_documented_diagnostics_are_the_ones_the_loss_returns():
    torch.manual_seed(0)
    tiny = dict(backbone="vit_tiny_patch16_224", pretrained="false", img_size=32,
                backbone_kwargs={"depth": 1, "embed_dim": 24, "num_heads": 2}, decoder_dim=24,
                decoder_heads=2)
    model = QFM(QFM.resolve_config(tiny))
    model.attach_teacher(DEIQT(DEIQTConfig(**tiny)))
    batch = {"image": torch.rand(4, 3, 32, 32), "label": torch.full((4,), 3.0),
             "index": torch.arange(4)}
    ctx = TrainContext(0, 0, 1, 4.0, torch.device("cpu"))
    returned = set(model.loss(batch, ctx))
    body = sections(QFM_DOC)["Logged diagnostics"]
    documented = {name for row in table_rows(body) for name in CODE.findall(row[0])}
    assert documented == returned


# -- docs/models.md

MODELS_DOC = read("models.md")


def test_every_registered_model_has_a_section_with_real_keys():
    found = named_sections(MODELS_DOC)
    assert set(list_models()) <= set(found)
    for name in list_models():
        keys_line = re.search(r"\*\*Keys to change:\*\*(.*)", found[name])
        assert keys_line, f"{name}: no 'Keys to change' line"
        keys = CODE.findall(keys_line.group(1))
        known = {f.name for f in fields(get_model_class(name).Config)}
        assert keys and set(keys) <= known, (name, set(keys) - known)


def test_parameter_table_names_every_model():
    body = sections(MODELS_DOC)["Parameter counts at a glance"]
    assert {CODE.match(r[0]).group(1) for r in table_rows(body)} == set(list_models())


# -- docs/datasets.md

DATASETS_DOC = read("datasets.md")


def test_every_registered_dataset_has_a_section_with_its_options_and_count():
    found = named_sections(DATASETS_DOC)
    registry = dataset_registry()
    assert set(registry.names()) <= set(found)
    for name in registry.names():
        cls = registry.get(name)
        accepted = {name for name, p in inspect.signature(cls.__init__).parameters.items()
                    if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        documented = set(re.findall(r"-O (\w+)=", found[name]))
        assert documented == accepted, (name, documented ^ accepted)
        if cls.expected_images is not None:
            assert f"**Expected:** {cls.expected_images:,} images" in found[name], name


def test_split_count_table_matches_the_split_code():
    body = sections(DATASETS_DOC)["The commands"]
    rows = [r for r in table_rows(body) if len(r) == 5 and re.fullmatch(r"`\w+`", r[0])]
    assert {CODE.match(r[0]).group(1) for r in rows} == \
        {"live", "csiq", "tid2013", "kadid", "livec", "koniq", "spaq", "flive"}
    protocols = (SplitProtocol(), SplitProtocol(val_fraction=0.0),
                 SplitProtocol(val_fraction=0.0, rounding="floor"))
    for row in rows:
        n = int(row[1].split()[0].replace(",", ""))
        groups = pd.Series([str(i) for i in range(n)])
        for cell, protocol in zip(row[2:], protocols):
            counts = make_split(groups, 0, protocol).value_counts()
            expected = " / ".join(f"{counts.get(p, 0):,}" for p in ("train", "val", "test"))
            assert cell == expected, (row[0], cell, expected)


# -- all three pages

def _commands() -> dict[str, click.Command]:
    """Every ``bench`` command, loaded through the lazy group as the CLI does."""
    context = click.Context(main)
    return {name: main.get_command(context, name) for name in LAZY_COMMANDS}


def _script_command(name: str) -> click.Command:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_commands_and_options_named_in_the_docs_exist():
    commands = _commands()
    options = set()

    def collect(command: click.Command) -> None:
        for param in command.params:
            options.update(o for o in param.opts + param.secondary_opts if o.startswith("--"))
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                collect(sub)

    for command in (main, *commands.values()):  # main: the group's own options (--max-pixels)
        collect(command)
    collect(_script_command("qfm_vs_deiqt"))  # benchmarks/ scripts the pages run
    for page in ("qfm.md", "models.md", "datasets.md"):
        text = read(page)
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text):
            assert flag in options, (page, flag)
        for first, second in re.findall(r"\bbench ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text):
            assert first in commands, (page, first)
            if isinstance(commands[first], click.Group) and second:
                assert second in commands[first].commands, (page, first, second)


@pytest.mark.parametrize("page", ["qfm.md", "models.md", "datasets.md"])
def test_no_machine_paths(page):
    assert not re.search(r"(/work/|/home/|/tmp/|/Users/)", read(page))

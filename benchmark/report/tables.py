"""LaTeX tables (booktabs) from the aggregate summary.

Every table is a ``table`` float that needs only ``booktabs`` and ``graphicx`` (both in
Debian's texlive-latex-base/-recommended). Numbers are medians over splits with three
decimals; in rankings the best shown value is bold and the second underlined, compared
at the shown precision so that ties look tied. A cell with fewer splits than expected
carries a dagger; a missing result is ``--`` and an unknown published number is empty.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from benchmark.report.aggregate import primary_cells
from benchmark.files import atomic_write_text
from benchmark.metrics import HIGHER_IS_BETTER
from benchmark.registry import dataset_registry, model_registry
from benchmark.report.cross import RELEASE_RULE, RELEASED_BY, released_model
from benchmark.report.published import SOURCES, lookup

__all__ = [
    "SYNTHETIC", "AUTHENTIC", "DATASET_ORDER", "MODEL_ORDER", "dataset_display", "dataset_label",
    "model_display", "model_label",
    "ordered_models", "table_datasets", "tex_escape", "number", "rank_marks", "main_table",
    "published_table", "protocol_table", "cross_table", "ablation_table", "build_tables",
    "write_tables", "table_float", "table_row",
]

SYNTHETIC = ("live", "csiq", "tid2013", "kadid")
AUTHENTIC = ("livec", "koniq", "spaq", "flive")
DATASET_ORDER = (*SYNTHETIC, *AUTHENTIC, "demo")
#: older methods first, the two studied models last, as in the papers' tables; any other
#: model follows them
MODEL_ORDER = ("brisque", "dbcnn", "hyperiqa", "musiq", "tres", "maniqa", "probe", "deiqt", "qfm")
METRIC_LABELS = {"srcc": "SRCC", "plcc": "PLCC", "krcc": "KRCC", "plcc_l4": "PLCC$_4$",
                 "plcc_l5": "PLCC$_5$", "rmse": "RMSE", "rmse_l5": "RMSE$_5$"}
MISSING = "--"
DAGGER = r"$^\dagger$"
RULE_NOTE = ("Median over splits of the test-split metric at the epoch chosen on the "
             "validation part.")
INCOMPLETE_NOTE = rf"{DAGGER} fewer finished splits than expected."
DDAGGER = r"$^\ddagger$"
SECTION = r"$^\S$"
HONEST_NOTE = (rf"{SECTION} no paper-protocol run: honest protocol (72 \% training, "
               "validation-selected epoch), so not like with like.")
PRECISION_NOTE = rf"{DDAGGER} trained in another precision than the original code (fp32 vs mixed)."


@functools.cache
def dataset_display(name: str) -> str:
    """The label a registered dataset declares; any other name shows as itself."""
    registry = dataset_registry()
    return (registry.get(name).label or name) if name in registry.names() else name


def dataset_label(name: str) -> str:
    return tex_escape(dataset_display(name))


@functools.cache
def model_display(name: str) -> str:
    """The label a registered model's class declares (read without importing the model);
    any other name (a grid entry such as qfm-A1) shows as itself."""
    return model_registry().declared(name, "label") or name


def model_label(name: str) -> str:
    model = released_model(name)
    return tex_escape(model_display(name) if model is None else
                      f"{model_display(model)} ({RELEASED_BY} release)")


def ordered_models(models: Iterable[str]) -> list[str]:
    """The papers' order; a released checkpoint right after the model it is (ours first)."""
    order = list(MODEL_ORDER)
    base = {m: released_model(m) or m for m in models}
    return sorted(base, key=lambda m: (order.index(base[m]) if base[m] in order else len(order), m))


def table_datasets(present: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Column groups: the four synthetic and four authentic sets always, then any other present."""
    others = sorted(set(present) - set(SYNTHETIC) - set(AUTHENTIC))
    groups = [("Synthetic", list(SYNTHETIC)), ("Authentic", list(AUTHENTIC))]
    return groups + ([("Other", others)] if others else [])


def tex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                    "^": r"\textasciicircum{}", '"': "''"}
    return "".join(replacements.get(ch, ch) for ch in str(text))


def number(value: float | None, signed: bool = False) -> str:
    """Three decimals; a minus sign set in math mode so it is not a hyphen."""
    if value is None or not math.isfinite(value):
        return MISSING
    value = round(value, 3) + 0.0  # no "-0.000": a rounded zero has no sign
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text.replace("-", "$-$")


def _shown(value: float | None) -> float | None:
    return float(f"{value:.3f}") if value is not None and math.isfinite(value) else None


def rank_marks(values: list[float | None], higher_is_better: bool = True) -> list[str | None]:
    """"best"/"second"/None per value, comparing the values as printed (ties share a mark)."""
    shown = [_shown(v) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    marks = {v: mark for v, mark in zip(distinct, ("best", "second"))}
    return [marks.get(v) if v is not None else None for v in shown]


def _decorate(value: float | None, mark: str | None, complete: bool = True,
              precision_differs: bool = False) -> str:
    text = number(value)
    if mark == "best":
        text = rf"\textbf{{{text}}}"
    elif mark == "second":
        text = rf"\underline{{{text}}}"
    if text == MISSING:
        return text
    return text + ("" if complete else DAGGER) + (DDAGGER if precision_differs else "")


def _cells(summary: pd.DataFrame, rule: str) -> dict[tuple, tuple[float, bool, bool]]:
    """(model, dataset, metric) → (median, complete, precision differs from the original's)
    of the primary configuration."""
    chosen = primary_cells(summary)
    chosen = chosen[chosen["rule"] == rule]
    return {(r.model, r.dataset, r.metric):
            (float(r.median), bool(r.complete), bool(getattr(r, "precision_differs", False)))
            for r in chosen.itertuples()}


def _precision_note(*tables: Mapping[tuple, tuple]) -> str:
    return PRECISION_NOTE if any(cell[2] for cells in tables for cell in cells.values()) else ""


def table_float(body: list[str], colspec: str, caption: str, label: str, notes: list[str],
           wide: bool = False) -> str:
    """A table float; ``wide`` spans both columns of a two-column layout with tight columns."""
    environment = "table*" if wide else "table"
    lines = ["% Generated by `bench report`; needs \\usepackage{booktabs} and "
             "\\usepackage{graphicx}.",
             rf"\begin{{{environment}}}[t]", r"\centering", rf"\caption{{{caption}}}",
             rf"\label{{{label}}}"]
    if wide:
        lines += [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"]
    # shrink a tabular wider than the text, never enlarge a narrow one
    lines += [r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%",
              rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", *body, r"\bottomrule",
              r"\end{tabular}}"]
    if notes:
        lines.append(r"\par\smallskip{\footnotesize\raggedright " + " ".join(n for n in notes if n)
                     + r"\par}")
    lines.append(rf"\end{{{environment}}}")
    return "\n".join(lines) + "\n"


def table_row(cells: Iterable[str]) -> str:
    return " & ".join(cells) + r" \\"


def main_table(summary: pd.DataFrame, rule: str = "val",
               metrics: tuple[str, ...] = ("srcc", "plcc")) -> str:
    """Models × datasets, SRCC and PLCC medians, best bold and second underlined per column."""
    cells = _cells(summary, rule)
    groups = table_datasets(d for _, d, _ in cells)
    models = ordered_models(m for m, _, _ in cells)
    datasets = [d for _, members in groups for d in members]
    width = len(metrics)
    top, rules, names, position = [""], [], [""], 2
    for title, members in groups:
        span = width * len(members)
        top.append(rf"\multicolumn{{{span}}}{{c}}{{{title}}}")
        rules.append(rf"\cmidrule(lr){{{position}-{position + span - 1}}}")
        position += span
    subrules = []
    for index, dataset in enumerate(datasets):
        names.append(rf"\multicolumn{{{width}}}{{c}}{{{dataset_label(dataset)}}}")
        start = 2 + index * width
        subrules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
    header = ["Model"] + [METRIC_LABELS[m] for _ in datasets for m in metrics]
    columns = {(d, m): [cells.get((model, d, m)) for model in models] for d in datasets
               for m in metrics}
    marks = {key: rank_marks([c[0] if c else None for c in column], HIGHER_IS_BETTER[key[1]])
             for key, column in columns.items()}
    body = [table_row(top), "".join(rules), table_row(names), "".join(subrules), table_row(header), r"\midrule"]
    for i, model in enumerate(models):
        row = [model_label(model)]
        for d in datasets:
            for m in metrics:
                cell = columns[(d, m)][i]
                row.append(_decorate(cell[0], marks[(d, m)][i], *cell[1:]) if cell else MISSING)
        body.append(table_row(row))
    notes = [RULE_NOTE, "Bold: best; underlined: second.", INCOMPLETE_NOTE,
             _precision_note(cells), f"{MISSING}: no result."]
    return table_float(body, "l" + "c" * len(header[1:]), "Median SRCC and PLCC over random splits.",
                  "tab:main", notes, wide=True)


def _published_cell(published: pd.DataFrame, model: str, dataset: str, metric: str,
                    used: set[str]) -> tuple[str, float | None]:
    hit = lookup(published, model, dataset, metric)
    if hit is None:
        return "", None
    value, codes = hit
    used.update(codes)
    return number(value) + rf"$^{{\mathrm{{{','.join(codes)}}}}}$", value


def _source_note(used: set[str]) -> str:
    listed = "; ".join(f"{code}: {tex_escape(SOURCES[code])}" for code in SOURCES if code in used)
    return f"Sources of published numbers: {listed}." if listed else ""


def _paired_rows(keys: list[tuple[str, str]], values) -> list[str]:
    """Model | dataset | ... rows, the model named once per block, blocks ruled apart."""
    body, previous = [], None
    for model, dataset in keys:
        if previous is not None and model != previous:
            body.append(r"\midrule")
        label = model_label(model) if model != previous else ""
        body.append(table_row([label, dataset_label(dataset), *values(model, dataset)]))
        previous = model
    return body


def _two_metric_header(*names: str) -> list[str]:
    n = len(names)
    return [table_row(["", "", rf"\multicolumn{{{n}}}{{c}}{{SRCC}}",
                       rf"\multicolumn{{{n}}}{{c}}{{PLCC}}"]),
            rf"\cmidrule(lr){{3-{2 + n}}}\cmidrule(lr){{{3 + n}-{2 + 2 * n}}}",
            table_row(["Model", "Dataset", *names, *names]), r"\midrule"]


def published_table(summary: pd.DataFrame, published: pd.DataFrame, rule: str = "val") -> str:
    """Our medians beside the published numbers and the difference (ours − published): the
    paper-protocol cells where they exist (like with like), else the ``rule`` cells, marked."""
    paper, honest = _cells(summary, "paper"), _cells(summary, rule)
    keys = _sort_pairs({(m, d) for m, d, _ in paper} | {(m, d) for m, d, _ in honest})
    used: set[str] = set()
    marked = False

    def values(model: str, dataset: str) -> list[str]:
        nonlocal marked
        row = []
        for metric in ("srcc", "plcc"):
            ours, mark = paper.get((model, dataset, metric)), ""
            if ours is None and (model, dataset, metric) in honest:
                ours, mark = honest[(model, dataset, metric)], SECTION
            marked = marked or bool(mark)
            text, value = _published_cell(published, model, dataset, metric, used)
            difference = ours[0] - value if ours and value is not None else None
            row += [_decorate(ours[0], None, *ours[1:]) + mark if ours else MISSING, text,
                    number(difference, signed=True) if difference is not None else ""]
        return row

    body = _two_metric_header("ours", "publ.", r"$\Delta$")
    body += _paired_rows(keys, values)
    notes = [r"ours: median over splits under the paper protocol (training on 80 \%, the epoch "
             "each original's code picks on the test split), as the published numbers were made.",
             HONEST_NOTE if marked else "",
             r"$\Delta$ = ours $-$ published; empty where no number is published.",
             "Published numbers are medians of 10 random 80/20 splits as their sources state.",
             _source_note(used), INCOMPLETE_NOTE, _precision_note(paper, honest)]
    return table_float(body, "llcccccc", "Our results beside published numbers.", "tab:published",
                  [n for n in notes if n])


def _dataset_rank(dataset: str) -> tuple[int, str]:
    order = list(SYNTHETIC + AUTHENTIC)
    return (order.index(dataset) if dataset in order else len(order), dataset)


def _sort_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = list(pairs)
    models = ordered_models(m for m, _ in pairs)
    return sorted(pairs, key=lambda k: (models.index(k[0]), _dataset_rank(k[1])))


def protocol_table(summary: pd.DataFrame) -> str:
    """The two protocols side by side: honest (validation-selected; the same runs' test-set
    epoch) and paper (80 % training, test-set epoch), and what the paper protocol adds."""
    val, oracle, paper = (_cells(summary, rule) for rule in ("val", "test_oracle", "paper"))
    keys = _sort_pairs({(m, d) for cells in (val, oracle, paper) for m, d, _ in cells})

    def values(model: str, dataset: str) -> list[str]:
        row = []
        for metric in ("srcc", "plcc"):
            a, b, c = (cells.get((model, dataset, metric)) for cells in (val, oracle, paper))
            row += [_decorate(x[0], None, *x[1:]) if x else MISSING for x in (a, b, c)]
            row.append(number(c[0] - a[0], signed=True) if a and c else MISSING)
        return row

    body = _two_metric_header("val.", "test", "paper", r"$\Delta$") + _paired_rows(keys, values)
    notes = ["val.: honest protocol, epoch chosen on the validation part (this harness's "
             "default); test: the same runs at the epoch each model's released code picks on the "
             "test split (best test PLCC for DEIQT; best SRCC for HyperIQA, DBCNN and TReS; SRCC "
             r"or PLCC beating the running best for MANIQA); paper: the paper protocol, trained "
             r"on train + validation (80 \%) and reported at that test-set epoch.",
             r"$\Delta$ = paper $-$ val.: what the published protocol adds to an honest number; "
             "test $-$ val. alone is the optimism of selecting on the test split.",
             INCOMPLETE_NOTE, _precision_note(val, oracle, paper)]
    return table_float(body, "llcccccccccc", "The two protocols: honest and paper.",
                       "tab:protocol", notes)


def cross_table(cross_summary: pd.DataFrame, published: pd.DataFrame, metric: str = "srcc",
                rule: str = "val") -> str:
    """Train (rows) × test (columns) medians per model; published values in parentheses."""
    chosen = primary_cells(cross_summary) if not cross_summary.empty else cross_summary
    # a release has one set of weights, whichever rule the table shows for our runs
    chosen = chosen[chosen["rule"].isin((rule, RELEASE_RULE)) & (chosen["metric"] == metric)] \
        if not chosen.empty else chosen
    cells = {}
    for r in chosen.itertuples():
        train, test = r.dataset.split("->")
        cells[(r.model, train, test)] = (float(r.median), bool(r.complete))
    tests = sorted({t for _, _, t in cells}, key=_dataset_rank)
    used: set[str] = set()
    header = table_row(["Model", "Train", *(dataset_label(t) for t in tests)])
    body = [table_row(["", "", rf"\multicolumn{{{max(len(tests), 1)}}}{{c}}{{Test}}"]),
            rf"\cmidrule(lr){{3-{2 + max(len(tests), 1)}}}", header, r"\midrule"]

    def values(model: str, train: str) -> list[str]:
        row = []
        for test in tests:
            cell = cells.get((model, train, test))
            text = _decorate(cell[0], None, cell[1]) if cell else MISSING
            reference, _ = _published_cell(published, model, f"{train}->{test}", metric, used)
            row.append(f"{text} ({reference})" if reference else text)
        return row

    body += _paired_rows(_sort_pairs({(m, tr) for m, tr, _ in cells}), values)
    notes = [f"Median {METRIC_LABELS[metric]} over the source's splits of each split's model "
             "evaluated on every image of the target set.",
             "In parentheses: published, trained on the full source set.", _source_note(used),
             INCOMPLETE_NOTE]
    if any(released_model(m) for m, _, _ in cells):
        notes.append(f"({RELEASED_BY} release): the checkpoint {RELEASED_BY} publishes, trained by "
                     "it on the source set, scored under our protocol; not trained here.")
    return table_float(body, "ll" + "c" * max(len(tests), 1),
                  f"Cross-dataset {METRIC_LABELS[metric]}.", f"tab:cross-{metric}",
                  [n for n in notes if n])


def ablation_table(summary: pd.DataFrame, rule: str = "val",
                   metrics: tuple[str, ...] = ("srcc", "plcc")) -> str:
    """One row per configuration preset (QFM-IQM's ablations), best bold per column."""
    tagged = _ablated(summary)
    tagged = tagged[tagged["rule"] == rule]
    datasets = sorted(set(tagged["dataset"]), key=_dataset_rank)
    rows = tagged[["model", "config_id", "preset"]].drop_duplicates()
    rows = rows.assign(order=[ordered_models(rows["model"]).index(m) for m in rows["model"]])
    rows = rows.sort_values(["order", "preset", "config_id"], kind="stable")
    repeated = rows.duplicated(["model", "preset"], keep=False)
    values = {(r.model, r.config_id, r.dataset, r.metric): (float(r.median), bool(r.complete))
              for r in tagged.itertuples()}
    keys = list(zip(rows["model"], rows["config_id"]))
    columns = {(d, m): [values.get((model, config, d, m)) for model, config in keys]
               for d in datasets for m in metrics}
    marks = {k: rank_marks([c[0] if c else None for c in col], HIGHER_IS_BETTER[k[1]])
             for k, col in columns.items()}
    width = len(metrics)
    body = [table_row(["", ""] + [rf"\multicolumn{{{width}}}{{c}}{{{dataset_label(d)}}}"
                             for d in datasets]),
            "".join(rf"\cmidrule(lr){{{3 + i * width}-{2 + (i + 1) * width}}}"
                    for i in range(len(datasets))),
            table_row(["Model", "Preset"] + [METRIC_LABELS[m] for _ in datasets for m in metrics]),
            r"\midrule"]
    previous = None
    for i, ((model, config), twin) in enumerate(zip(keys, repeated)):
        preset = rows["preset"].iloc[i]
        label = tex_escape(str(preset)) + (rf" \texttt{{{config[:6]}}}" if twin else "")
        row = [model_label(model) if model != previous else "", label]
        for d in datasets:
            for m in metrics:
                cell = columns[(d, m)][i]
                row.append(_decorate(cell[0], marks[(d, m)][i], *cell[1:]) if cell else MISSING)
        body.append(table_row(row))
        previous = model
    notes = [RULE_NOTE, "Bold: best; underlined: second, per column.", INCOMPLETE_NOTE]
    return table_float(body, "ll" + "c" * (width * max(len(datasets), 1)), "Ablation by preset.",
                  "tab:ablation", notes)


def _ablated(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of the models run under at least two presets."""
    tagged = summary[summary["preset"].notna()]
    presets = tagged.groupby("model")["preset"].nunique()
    return tagged[tagged["model"].isin(presets[presets >= 2].index)]


def build_tables(summary: pd.DataFrame, cross_summary: pd.DataFrame,
                 published: pd.DataFrame) -> dict[str, str]:
    """name → LaTeX text for every table the data supports."""
    tables = {"main": main_table(summary), "published": published_table(summary, published),
              "protocol": protocol_table(summary)}
    if not _ablated(summary).empty:
        tables["ablation"] = ablation_table(summary)
    if not cross_summary.empty:
        for metric in ("srcc", "plcc"):
            tables[f"cross_{metric}"] = cross_table(cross_summary, published, metric)
    return tables


def write_tables(tables: Mapping[str, str], out: Path) -> list[Path]:
    paths = []
    for name, text in tables.items():
        path = Path(out) / f"{name}.tex"
        atomic_write_text(path, text)
        paths.append(path)
    return paths

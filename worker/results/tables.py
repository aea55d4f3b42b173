"""The paper's Table 2: Sens/Spec/Dice per architecture x encoder x init x experiment.

``table2(df)`` is a pure function of a results frame (one row per run, as
worker.results.frames.results_frame gives it); ``render`` writes it as CSV, Markdown or LaTeX
with the best value of each metric column in bold.

A table never averages runs of different protocols, datasets, or real and generated
data into one cell: ``check_one_protocol`` refuses such a selection. The std rows are
over encoders with the ddof given; ``DEFAULT_DDOF`` is the paper's ddof = 0 in the
authors-2020 metric mode and the sample std (ddof = 1) otherwise.
"""

from __future__ import annotations

import io
from dataclasses import replace

import pandas as pd

from db import metrics as registry
from db.errors import InvalidInput
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, INITS

SUMMARY_ROWS = ("mean", "std")
FORMATS = ("csv", "markdown", "latex")
DEFAULT_DDOF = {"standard": 1, "authors-2020": 0}
CELL = ("architecture", "encoder", "init", "experiment")


def table_metrics() -> list[str]:
    """The metric columns of each init x experiment: the compact slice-level test
    metrics of db.metrics (the paper's Sens, Spec, Dice, and any added since)."""
    return registry.names(kind="test", level="slice", compact=True)


def table_extras() -> list[str]:
    """The columns after them, one value per model: the compact costs of db.metrics
    (parameters, training seconds per epoch)."""
    return registry.names(kind="cost", compact=True)


def _ordered(present, order) -> list[str]:
    order = list(order)
    return sorted(set(present), key=lambda v: (order.index(v) if v in order else len(order), v))


def check_one_protocol(df: pd.DataFrame, sweeps: dict[str, dict]) -> None:
    """Refuse (InvalidInput) a results frame whose runs come from sweeps that differ in
    protocol, dataset or real vs generated data; ``sweeps``: {name: row of
    db.queries.sweep_row}."""
    names = sorted(set(df["sweep"]))
    kinds = {
        n: (
            sweeps[n]["protocol_hash"],
            sweeps[n]["dataset_name"],
            sweeps[n].get("manifest_hash"),
            bool(sweeps[n]["synthetic"]),
        )
        for n in names
    }
    if len(set(kinds.values())) > 1:
        raise InvalidInput(
            f"The selection holds runs of sweeps with different protocols or data "
            f"({', '.join(names)}), which one table must not average; choose one with "
            "--sweep NAME."
        )


def std_note(ddof: int) -> str:
    """The sentence that states a table's std convention."""
    kind = "population std, as the paper" if ddof == 0 else "sample std"
    return f"std rows: over the encoders of an architecture, ddof={ddof} ({kind})."


def table2(df: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Rows (architecture, encoder) plus (architecture, "mean") and (architecture, "std")
    over that architecture's encoders; columns (init, experiment, metric) for the
    metrics of ``table_metrics()`` in percent, then ("", "", name) for each of
    ``table_extras()`` (parameters, training seconds per epoch). Several runs of one cell
    (seeds of one protocol) are averaged; std is over encoders with ``ddof`` (NaN for a
    single encoder when ddof=1).
    """
    metrics, extras = table_metrics(), table_extras()
    missing = [c for c in (*CELL, *metrics, *extras) if c not in df.columns]
    if missing:
        raise InvalidInput(f"results frame lacks column(s) {', '.join(missing)}.")
    if df.empty:
        raise InvalidInput("no results to tabulate.")
    if ddof not in (0, 1):
        raise InvalidInput(f"ddof must be 0 or 1, got {ddof}.")
    archs = _ordered(df["architecture"], ARCHITECTURES)
    encs = _ordered(df["encoder"], ENCODERS)
    inits = _ordered(df["init"], INITS)
    exps = _ordered(df["experiment"], EXPERIMENTS)

    cells = df.groupby(list(CELL))[metrics].mean().unstack(["init", "experiment"])
    cells.columns = cells.columns.reorder_levels([1, 2, 0])
    columns = pd.MultiIndex.from_tuples(
        [(i, x, m) for i in inits for x in exps for m in metrics] + [("", "", e) for e in extras],
        names=["init", "experiment", "metric"],
    )
    extra = df.groupby(["architecture", "encoder"])[extras].mean()
    for e in extras:
        cells[("", "", e)] = extra[e]
    cells = cells.reindex(columns=columns)

    blocks = []
    for arch in archs:
        rows = cells.loc[[(arch, e) for e in encs if (arch, e) in cells.index]]
        summary = pd.DataFrame(
            [rows.mean(), rows.std(ddof=ddof)],
            index=pd.MultiIndex.from_tuples([(arch, s) for s in SUMMARY_ROWS]),
        )
        blocks += [rows, summary]
    out = pd.concat(blocks)
    out.index.names = ["architecture", "encoder"]
    out.columns = columns
    return out


def best_mask(table: pd.DataFrame, decimals: int | None = None) -> pd.DataFrame:
    """True where a model row holds the best value (as displayed) of a test-metric
    column: the highest, or the lowest where db.metrics says lower is better. Ties are
    all marked; mean/std rows and the parameter/time columns never are."""
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    models = ~table.index.get_level_values("encoder").isin(SUMMARY_ROWS)
    for col in table.columns:
        metric = registry.get(col[2])
        if metric.kind != "test" or metric.higher_is_better is None:
            continue
        values = table.loc[models, col].round(metric.decimals if decimals is None else decimals)
        if values.notna().any():
            best = values.max() if metric.higher_is_better else values.min()
            mask.loc[models, col] = (values == best).to_numpy()
    return mask


def _cell(value: float, metric: str, decimals: int | None) -> str:
    m = registry.get(metric)
    if decimals is not None:
        m = replace(m, decimals=decimals)
    return m.fmt(value, missing="-")


def header(col: tuple[str, str, str]) -> str:
    """A column's header with its unit: "random lung-segmentation Dice (%)"."""
    init, exp, metric = col
    label = registry.get(metric).header
    return label if not init else f"{init} {exp} {label}"


def _latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(a, b)
    return text


def render(table: pd.DataFrame, fmt: str = "markdown", decimals: int | None = None) -> str:
    """The table as text: csv (plain numbers), markdown or latex (best in bold)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown table format '{fmt}'; expected one of: {', '.join(FORMATS)}.")
    if fmt == "csv":
        flat = table.copy()
        flat.columns = ["_".join(p for p in c if p) for c in table.columns]
        buf = io.StringIO()
        flat.round(4 if decimals is None else decimals + 2).to_csv(buf)
        return buf.getvalue()
    bold = best_mask(table, decimals)
    body = []
    for idx, row in table.iterrows():
        cells = []
        for col in table.columns:
            text = _cell(row[col], col[2], decimals)
            if bold.at[idx, col]:
                text = f"**{text}**" if fmt == "markdown" else rf"\textbf{{{text}}}"
            cells.append(text)
        body.append((idx, cells))
    if fmt == "markdown":
        head = ["architecture", "encoder", *(header(c) for c in table.columns)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(table.columns)]
        for (arch, enc), cells in body:
            enc = f"*{enc}*" if enc in SUMMARY_ROWS else enc
            lines.append("| " + " | ".join([arch, enc, *cells]) + " |")
        return "\n".join(lines) + "\n"
    return _latex(table, body)


def _latex(table: pd.DataFrame, body) -> str:
    cols = list(table.columns)
    lines = [r"\begin{tabular}{ll" + "r" * len(cols) + "}", r"\toprule"]
    for level in (0, 1):
        cells, i = [], 0
        while i < len(cols):
            j = i
            while j < len(cols) and cols[j][: level + 1] == cols[i][: level + 1]:
                j += 1
            label = _latex_escape(cols[i][level])
            cells.append(label if j - i == 1 else rf"\multicolumn{{{j - i}}}{{c}}{{{label}}}")
            i = j
        lines.append(" & ".join(["", "", *cells]) + r" \\")
    metrics = [_latex_escape(registry.get(c[2]).header) for c in cols]
    lines += [" & ".join(["Architecture", "Encoder", *metrics]) + r" \\", r"\midrule"]
    previous = None
    for (arch, enc), cells in body:
        if previous is not None and arch != previous:
            lines.append(r"\midrule")
        previous = arch
        enc_text = rf"\textit{{{enc}}}" if enc in SUMMARY_ROWS else _latex_escape(enc)
        lines.append(" & ".join([_latex_escape(arch), enc_text, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"

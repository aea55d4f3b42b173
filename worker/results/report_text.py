"""The report of worker.results.report as Markdown or LaTeX tables."""

from __future__ import annotations

from db import metrics as registry
from db.errors import InvalidInput
from db.grid import MARKERS
from worker.results import formats as fmt
from worker.results.baselines import MARKER_NOTE

FORMATS = ("json", "markdown", "latex")
SYNTHETIC_NOTE = "SYNTHETIC data: these numbers are not results on real CT."


def _model(r: dict) -> str:
    return (
        f"{MARKERS[r.get('grid', 'paper')]}{r['architecture']} {r['encoder']} "
        f"{r['init']} s{r['seed']}"
    )


def _runs_section(report: dict, conf: int) -> tuple[str, str, list[str], list[list[str]]]:
    shown = registry.select(kind="test", compact=True)
    header = ["run", "experiment", "model"]
    for m in shown:
        header += [m.header, f"{conf}% CI"] if m.name == "dice" else [m.header]
    rows = []
    for r in report["runs"]:
        row = [str(r["id"]), r["experiment"], _model(r)]
        for m in shown:
            row.append(m.cell(r))
            if m.name == "dice":
                row.append(fmt.interval(r["dice_ci"], m.decimals))
        rows.append(row)
    interval = report.get("interval", {}).get("description", "approximate interval")
    partial = any(m.cell(r) != m.fmt(r.get(m.name)) for r in report["runs"] for m in shown)
    note = (
        registry.resolution_note((report.get("protocol") or {}).get("image_size"))
        + f" Slice-level metrics: mean over test slices ({report['metric_mode']} metrics); "
        f"Dice {conf}% CI: {interval}. Volume-level metrics: mean over test volumes; a "
        "volume where exactly one of prediction and reference is empty scores 0 (NSD) "
        "or its diagonal in mm (HD95)."
        + (" (k/n): the mean covers k of the run's n test volumes (stored before a missed "
           "volume was scored)." if partial else "")
        + (f" {MARKER_NOTE}" if any(r.get("grid", "paper") != "paper" for r in report["runs"])
           else "")
    )  # fmt: skip
    return "Runs", note, header, rows


def _pairs_section(report: dict, conf: int) -> tuple[str, str, list[str], list[list[str]]]:
    pairs = report["pairwise"]
    b = report["n_resamples"]
    with_t = any(p.get("p_t_holm") is not None for p in pairs)
    header = ["a", "b", "difference", f"{conf}% CI"]
    header += ["p (cluster t, Holm)"] if with_t else []
    header += ["p (Wilcoxon, Holm)", "p (bootstrap, Holm)"]
    rows = []
    for p in pairs:
        row = [str(p["a"]), str(p["b"]), fmt.number(p["difference"]), fmt.interval(p["ci"])]
        row += [fmt.p_value(p.get("p_t_holm"))] if with_t else []
        row += [
            fmt.p_value(p["p_holm"]),
            fmt.bootstrap_p(p["p_bootstrap_holm"], b, bounded=p.get("p_bootstrap_bounded")),
        ]
        rows.append(row)
    interval = report.get("interval", {}).get("description", "approximate interval")
    note = (
        f"{report['pairwise_rule']}. Difference a - b in Dice points with its {conf}% "
        f"{interval}."
        + (" p (cluster t): the test of that interval. " if with_t else " ")
        + f"p (Wilcoxon): {report['wilcoxon']}. p (bootstrap): the paired hierarchical "
        f"bootstrap, resolution 1/{b} (≤: an upper bound). All Holm-adjusted over the pairs "
        "listed."
    )
    return "Pairwise comparisons", note, header, rows


def sections(report: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, note, header, rows) of every table of the report."""
    names = {r["id"]: _model(r) for r in report["runs"]}
    conf = int(round(100 * report["confidence"]))
    volume_metrics = registry.select(kind="test", level="volume")
    out = [
        (
            "Metrics",
            "What each column means (db.metrics).",
            ["metric", "level", "help"],
            [[m.header, m.level, m.help] for m in registry.select(kind="test")],
        ),
        _runs_section(report, conf),
        (
            "Per-volume metrics",
            "3-D Dice and the volume-level metrics of each test volume.",
            ["run", "volume", "Dice (%)", *(m.header for m in volume_metrics)],
            [
                [
                    str(r["id"]),
                    str(v["volume"]),
                    fmt.number(v["dice"]),
                    *(m.fmt(v.get(m.name)) for m in volume_metrics),
                ]
                for r in report["runs"]
                for v in r["volumes"]
            ],  # fmt: skip
        ),
        (
            "Ranking stability",
            f"Rank of each run in its experiment (1 = best, ties share the average rank), "
            f"and its median and approximate {conf}% interval over the bootstrap resamples "
            f"of {report['resampled'] or 'none'} (the same resample for every run).",
            ["run", "experiment", "model", "rank", "median rank", f"{conf}% interval"],
            [
                [
                    str(e["id"]),
                    e["experiment"],
                    names[e["id"]],
                    fmt.number(e["rank"], 1),
                    fmt.number(e["median_rank"], 1),
                    fmt.interval(e["rank_ci"], 1),
                ]
                for e in report["ranking"]
            ],  # fmt: skip
        ),
        _pairs_section(report, conf),
        (
            "Kendall's tau",
            "Agreement of two rankings of the same runs: standard vs authors-2020 metrics "
            "in each experiment, and between experiments over the grid cells both hold.",
            ["between", "items", "tau"],
            [
                [
                    f"standard vs authors-2020 ({t['experiment']})",
                    str(t["runs"]),
                    fmt.number(t["tau"], 3),
                ]
                for t in report["kendall"]["modes"]
            ]
            + [
                [f"{t['a']} vs {t['b']}", str(t["cells"]), fmt.number(t["tau"], 3)]
                for t in report["kendall"]["experiments"]
            ],
        ),  # fmt: skip
    ]
    for cd in report["cd"]:
        if "skipped" in cd:
            out.append((f"Critical difference: {cd['question']}", cd["skipped"] + ".", [], []))
            continue
        fr = cd["friedman"]
        out.append(
            (
                f"Critical difference: {cd['question']}",
                f"Friedman chi2 = {fmt.number(fr['statistic'])}, p = {fmt.p_value(fr['p_value'])}"
                f" (Iman-Davenport p = {fmt.p_value(fr['p_iman_davenport'])}) over "
                f"{cd['blocks']} blocks ({', '.join(cd['blocks_of'])}); Nemenyi CD = "
                f"{fmt.number(cd['cd'], 3)} at alpha {cd['alpha']}. Groups within the CD: "
                + ("; ".join(", ".join(g) for g in cd["cliques"]) or "none"),
                [cd["treatment"], "mean rank"],
                [[m["name"], fmt.number(m["mean_rank"])] for m in cd["mean_ranks"]],
            )
        )
    return out


def _escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("<", r"$<$"), ("≤", r"$\leq$")):  # fmt: skip
        text = text.replace(a, b)
    return text


def render(report: dict, fmt: str) -> str:
    """The report as Markdown or LaTeX (JSON is the report itself)."""
    if fmt not in ("markdown", "latex"):
        raise InvalidInput(f"Unknown report format '{fmt}'; expected one of: {', '.join(FORMATS)}.")
    head = f"Report of sweep {report['sweep']} (protocol {report['protocol_hash']})"
    lines: list[str] = []
    if fmt == "markdown":
        lines.append(f"# {head}\n")
        if report["synthetic"]:
            lines.append(f"> {SYNTHETIC_NOTE}\n")
        if report.get("environment_note"):
            lines.append(f"> {report['environment_note']}\n")
        for title, note, header, rows in sections(report):
            lines += [f"## {title}\n", note + "\n"]
            if header and rows:
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                lines.append("")
        return "\n".join(lines) + "\n"
    lines.append(f"% {head}")
    if report["synthetic"]:
        lines.append(f"% {SYNTHETIC_NOTE}")
    if report.get("environment_note"):
        lines.append(f"% {report['environment_note']}")
    for title, note, header, rows in sections(report):
        lines += [rf"\paragraph{{{_escape(title)}}} {_escape(note)}", ""]
        if header and rows:
            lines += [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule"]
            lines.append(" & ".join(_escape(h) for h in header) + r" \\")
            lines.append(r"\midrule")
            lines += [" & ".join(_escape(c) for c in row) + r" \\" for row in rows]
            lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines) + "\n"

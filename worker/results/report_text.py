"""The report of worker.results.report as Markdown or LaTeX tables."""

from __future__ import annotations

from typing import Any

from db.errors import InvalidInput
from db.grid import MARKERS
from worker.results.baselines import MARKER_NOTE

FORMATS = ("json", "markdown", "latex")
SYNTHETIC_NOTE = "SYNTHETIC data: these numbers are not results on real CT."


def _num(value: Any, decimals: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{decimals}f}"


def _interval(pair: list | None, decimals: int = 2) -> str:
    if not pair or pair[0] is None:
        return "–"
    return f"[{_num(pair[0], decimals)}, {_num(pair[1], decimals)}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def sections(report: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, note, header, rows) of every table of the report."""
    names = {
        r["id"]: f"{MARKERS[r.get('grid', 'paper')]}{r['architecture']} {r['encoder']} "
        f"{r['init']} s{r['seed']}"
        for r in report["runs"]
    }
    level = report["resampled"] or "none"
    conf = int(round(100 * report["confidence"]))
    out = [
        (
            "Runs",
            f"Dice: mean over test slices ({report['metric_mode']} metrics), {conf}% interval "
            f"from a bootstrap resampling {level} ({report['n_resamples']} resamples). "
            "NSD in percent and HD95 in mm: mean over test volumes (– where not recorded)."
            + (
                f" {MARKER_NOTE}"
                if any(r.get("grid", "paper") != "paper" for r in report["runs"])
                else ""
            ),
            ["run", "experiment", "model", "Dice (%)", f"{conf}% CI", "NSD (%)", "HD95 (mm)"],
            [
                [
                    str(r["id"]),
                    r["experiment"],
                    names[r["id"]],
                    _num(r["dice"]),
                    _interval(r["dice_ci"]),
                    _num(r["nsd"]),
                    _num(r["hd95"]),
                ]
                for r in report["runs"]
            ],  # fmt: skip
        ),
        (
            "Per-volume metrics",
            "3-D Dice, NSD (%) and HD95 (mm) of each test volume.",
            ["run", "volume", "Dice (%)", "NSD (%)", "HD95 (mm)"],
            [
                [str(r["id"]), str(v["volume"]), _num(v["dice"]), _num(v["nsd"]), _num(v["hd95"])]
                for r in report["runs"]
                for v in r["volumes"]
            ],
        ),
        (
            "Ranking stability",
            f"Rank of each run in its experiment (1 = best), and its median and {conf}% "
            "interval over the bootstrap resamples (the same resample for every run).",
            ["run", "experiment", "model", "rank", "median rank", f"{conf}% interval"],
            [
                [
                    str(e["id"]),
                    e["experiment"],
                    names[e["id"]],
                    _num(e["rank"], 1),
                    _num(e["median_rank"], 1),
                    _interval(e["rank_ci"], 1),
                ]
                for e in report["ranking"]
            ],  # fmt: skip
        ),
        (
            "Pairwise comparisons",
            f"{report['pairwise_rule']}. Difference a - b in Dice points with its paired "
            f"bootstrap interval; p: {report['wilcoxon']}, Holm-adjusted; p (bootstrap): "
            "from the paired hierarchical bootstrap, Holm-adjusted.",
            ["a", "b", "difference", f"{conf}% CI", "p (Holm)", "p (bootstrap, Holm)"],
            [
                [
                    str(p["a"]),
                    str(p["b"]),
                    _num(p["difference"]),
                    _interval(p["ci"]),
                    _p(p["p_holm"]),
                    _p(p["p_bootstrap_holm"]),
                ]
                for p in report["pairwise"]
            ],  # fmt: skip
        ),
        (
            "Kendall's tau",
            "Agreement of two rankings of the same runs: standard vs authors-2020 metrics "
            "in each experiment, and between experiments over the grid cells both hold.",
            ["between", "items", "tau"],
            [
                [f"standard vs authors-2020 ({t['experiment']})", str(t["runs"]), _num(t["tau"], 3)]
                for t in report["kendall"]["modes"]
            ]
            + [
                [f"{t['a']} vs {t['b']}", str(t["cells"]), _num(t["tau"], 3)]
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
                f"Friedman chi2 = {_num(fr['statistic'])}, p = {_p(fr['p_value'])} over "
                f"{cd['blocks']} blocks ({', '.join(cd['blocks_of'])}); Nemenyi CD = "
                f"{_num(cd['cd'], 3)} at alpha {cd['alpha']}. Groups within the CD: "
                + ("; ".join(", ".join(g) for g in cd["cliques"]) or "none"),
                [cd["treatment"], "mean rank"],
                [[m["name"], _num(m["mean_rank"])] for m in cd["mean_ranks"]],
            )
        )
    return out


def _escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#")):  # fmt: skip
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
    for title, note, header, rows in sections(report):
        lines += [rf"\paragraph{{{_escape(title)}}} {_escape(note)}", ""]
        if header and rows:
            lines += [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule"]
            lines.append(" & ".join(_escape(h) for h in header) + r" \\")
            lines.append(r"\midrule")
            lines += [" & ".join(_escape(c) for c in row) + r" \\" for row in rows]
            lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines) + "\n"

"""Rich tables for `segbench compare` (the JSON form prints the same numbers)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from db.metrics import resolution_note
from worker.results import formats as fmt


def _ci(d: dict) -> str:
    return f"{d['mean']:.2f} {fmt.interval([d['low'], d['high']])}"


def _p(p: float | None) -> str:
    return fmt.p_value(p)


def show_pair(result: dict) -> None:
    """Two runs side by side: Dice with 95% CI, per volume, both metric modes."""
    a, b = result["a"], result["b"]
    console = Console()
    if a["synthetic"] or b["synthetic"]:
        console.print("[bold red]SYNTHETIC data: not a result on real CT[/]")
    table = Table(
        title=f"{result['slices']} shared test slices at {result['image_size']} px, "
        f"{result['mode']} mode (%); 95% CIs: {result['interval']}"
    )
    table.add_column("")
    for r in (a, b):
        table.add_column(f"run {r['id']}\n{r['name']}\n({r['sweep']})", justify="right")
    table.add_row("mean Dice [95% CI]", _ci(a["dice"]), _ci(b["dice"]))
    table.add_row("pooled Dice", f"{a['pooled_dice']:.2f}", f"{b['pooled_dice']:.2f}")
    table.add_row(
        "Dice, slices with a target", f"{a['positive_dice']:.2f}", f"{b['positive_dice']:.2f}"
    )
    for v in sorted(a["volume_dice"]):
        table.add_row(
            f"volume {v} Dice (3-D)",
            f"{a['volume_dice'][v]:.2f}",
            f"{b['volume_dice'].get(v, float('nan')):.2f}",
        )
    for mode in ("standard", "authors-2020"):
        for k in ("dice", "sensitivity", "specificity"):
            table.add_row(
                f"{k} ({mode})", f"{a['modes'][mode][k]:.2f}", f"{b['modes'][mode][k]:.2f}"
            )
    table.add_row(
        "empty-truth slices with FP",
        str(a["modes"]["empty_truth"]["with_false_positives"]),
        str(b["modes"]["empty_truth"]["with_false_positives"]),
    )
    console.print(table)
    w, d = result["wilcoxon"], result["difference"]
    t = f"cluster t p = {_p(d['p_t'])}; " if d.get("p_t") is not None else ""
    console.print(
        f"Dice difference A - B: {_ci(d)} points ({t}paired bootstrap p "
        f"{_bootstrap_p(d)}); paired Wilcoxon signed-rank p = {_p(w['p_value'])} (n = "
        f"{w['n']} non-zero differences; assumes independent slices)"
    )
    console.print(resolution_note(result["image_size"]))
    if result.get("environment_note"):
        console.print(f"[yellow]{result['environment_note']}[/]")


def _bootstrap_p(d: dict) -> str:
    text = fmt.bootstrap_p(d["p_bootstrap"], d["n_resamples"])
    return text if text.startswith("<") else f"= {text}"


def show_sweep(result: dict) -> None:
    """Every pair of a sweep's runs, Holm-corrected."""
    console = Console()
    names = {m["id"]: m["name"] for m in result["models"]}
    models = Table(
        title=f"{result['experiment']} in sweep {result['sweep']} at {result['image_size']} "
        f"px: mean Dice (%), 95% CI: {result['interval']}"
    )
    for col in ("run", "model", "mean Dice [95% CI]"):
        models.add_column(col)
    for m in result["models"]:
        models.add_row(str(m["id"]), m["name"], _ci(m["dice"]))
    console.print(models)
    pairs = Table(
        title=f"paired Wilcoxon (assumes independent slices), Holm-corrected at alpha = "
        f"{result['alpha']}"
    )
    for col in ("A", "B", "Dice A - B", "p", "p (Holm)", "significant"):
        pairs.add_column(col)
    for p in result["pairs"]:
        pairs.add_row(
            f"{p['a']} {names[p['a']]}",
            f"{p['b']} {names[p['b']]}",
            f"{p['difference']:.2f}",
            _p(p["p_value"]),
            _p(p["p_holm"]),
            "yes" if p["significant"] else "no",
        )
    console.print(pairs)

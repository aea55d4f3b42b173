"""`segbench compare --run ID --against SWEEP`: one run (a user's model, say) against
the baselines of a sweep, on the test slices they all share.

What it reports, from per-slice Dice (percent, the metric mode given):
- the run's rank by mean Dice among itself and the selected baselines (1 = best), with
  a 95% bootstrap interval of that rank: the hierarchical bootstrap of
  worker.results.bootstrap (test volumes, then slices within them; seeded), every
  model's mean recomputed on the same resample, the run ranked again;
- the paired difference to the best baseline (run minus baseline, mean over slices)
  with its 95% CI from the same hierarchical bootstrap;
- a paired Wilcoxon signed-rank test against every baseline, Holm-adjusted over all of
  them (stats.wilcoxon, stats.holm), the best baseline's adjusted p among them.

Baselines default to the paper's grid cells of the sweep (`paper_only`); the run's
own experiment only, and the same test data (manifest) only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from db import queries
from db.grid import MARKERS, grid_kind, is_paper, run_name
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD, resolution_note
from worker.results import bootstrap, formats, intervals, ranking, stats
from worker.results.frames import ExportError, run_counts
from worker.results.identity import comparable, environment_note, identity, run_identity

MARKER_NOTE = "+: an smp model beyond the paper's grid; ◆: a user's own model."


def marked(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a "grid" column (paper / smp / custom) and the encoders of models
    outside the paper's grid prefixed with their marker (Table 2 shows them so)."""
    out = df.copy()
    kinds = [grid_kind(a, e) for a, e in zip(out["architecture"], out["encoder"], strict=True)]
    out["grid"] = kinds
    out["encoder"] = [
        f"{MARKERS[k]} {e}" if MARKERS[k] else e for k, e in zip(kinds, out["encoder"], strict=True)
    ]
    return out


def rank_interval(
    dice: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    level: str = "volumes+slices",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Rank of model 0 among the columns of `dice` (slices x models; 1 = highest mean),
    and the 2.5% / 97.5% quantiles of its rank over bootstrap resamples at `level` of
    the slices, slice i being of test volume ``volumes[i]``."""
    r = bootstrap.resample_weights(volumes, level=level, n_resamples=n_resamples, seed=seed)
    return _rank_interval(np.asarray(dice, dtype=np.float64), r)


def _rank_interval(d: np.ndarray, r: bootstrap.Resamples) -> dict:
    """rank_interval on resamples already drawn. Ties share their average rank (a tie
    with a baseline does not count in the run's favour)."""
    rank = float(ranking.ranks(d.mean(axis=0))[0])
    ranks = ranking.ranks(r.means(d.T))[:, 0]  # resamples x models -> the run's rank
    low, high = np.quantile(ranks, [0.025, 0.975])
    return {
        "rank": rank,
        "of": d.shape[1],
        "low": float(low),
        "high": float(high),
        "resampled": r.resampled,
    }


def against_baselines(
    run_dice: np.ndarray,
    baseline_dice: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    level: str = "volumes+slices",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    method: str = INTERVAL_METHOD,
) -> dict:
    """The statistics of the module docstring for one run (slices) and its baselines
    (slices x baselines), all on the same slices (slice i of test volume volumes[i]);
    the difference's interval by ``method`` (worker.results.intervals), the rank's from
    the bootstrap at ``level``."""
    run = np.asarray(run_dice, dtype=np.float64).ravel()
    base = np.asarray(baseline_dice, dtype=np.float64).reshape(len(run), -1)
    tests = [stats.wilcoxon(run, base[:, j]) for j in range(base.shape[1])]
    adjusted = stats.holm([t["p_value"] for t in tests])
    best = int(np.argmax(base.mean(axis=0)))
    # one set of resamples for the rank and the difference (the same replicates)
    r = bootstrap.resample_weights(volumes, level=level, n_resamples=n_resamples, seed=seed)
    difference = run - base[:, best]
    d = intervals.difference_interval(
        difference, volumes, r.means(difference), method=method, bounds=(-100.0, 100.0)
    )
    return {
        "rank": _rank_interval(np.column_stack([run, base]), r),
        "best": best,
        "difference": {
            "mean": float(difference.mean()),
            "low": d["low"],
            "high": d["high"],
            "resampled": r.resampled,
            "interval": intervals.DESCRIPTIONS[method],
        },
        "wilcoxon": [{**t, "p_holm": float(q)} for t, q in zip(tests, adjusted, strict=True)],
    }


def compare_to_baselines(
    session: Session,
    run_id: int,
    sweep: str,
    *,
    paper_only: bool = True,
    mode: str = "standard",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = INTERVAL_METHOD,
) -> dict:
    """`run_id` against the succeeded runs of `sweep` in its experiment, refused (one
    sentence) when they are not comparable (worker.results.identity)."""
    run = queries.run_detail(session, run_id=run_id)
    if run["status"] != "succeeded":
        raise ExportError(f"Run {run_id} is {run['status']}; only succeeded runs have results.")
    candidates = [
        r
        for r in queries.succeeded_runs(session, sweep=sweep, experiment=run["experiment"])
        if r["id"] != run_id and (not paper_only or is_paper(r["architecture"], r["encoder"]))
    ]
    own = run_identity(session, run)
    refused = {r["id"]: comparable(own, identity(r, r["protocol"])) for r in candidates}
    baselines = [r for r in candidates if refused[r["id"]] is None]
    if not baselines:
        if candidates:  # the sweep's runs differ from the run: say in what
            raise ExportError(refused[candidates[0]["id"]])
        which = "paper-grid " if paper_only else ""
        raise ExportError(
            f"Sweep '{sweep}' has no succeeded {which}{run['experiment']} run to compare "
            f"run {run_id} against."
        )
    ids = [run_id, *(b["id"] for b in baselines)]
    counts = run_counts(session, ids)
    missing = [i for i in ids if i not in counts]
    if missing:
        raise ExportError(f"Run {missing[0]} has no per-slice test counts.")
    keys = set.intersection(
        *(set(zip(counts[i]["volume"], counts[i]["slice"], strict=True)) for i in ids)
    )
    if not keys:
        raise ExportError(f"Run {run_id} shares no test slice with the baselines of '{sweep}'.")
    order = sorted(keys)

    def dice(i: int) -> np.ndarray:
        c = counts[i].set_index(["volume", "slice"]).loc[order][["tp", "fp", "fn", "tn"]]
        return 100 * stats.slice_dice(c.to_numpy(), mode)

    run_dice = dice(run_id)
    base_dice = np.column_stack([dice(b["id"]) for b in baselines])
    volumes = [v for v, _ in order]
    out = against_baselines(
        run_dice, base_dice, volumes, n_resamples=n_resamples, seed=seed, method=method
    )
    tests = out["wilcoxon"]
    best = baselines[out["best"]]
    base_ident = [identity(b, b["protocol"]) for b in baselines]
    return {
        "environment_note": environment_note(session, [own, *base_ident]),
        "run": {"id": run_id, "name": run_name(run), "dice": float(run_dice.mean())},
        "image_size": own["image_size"],
        "sweep": sweep,
        "experiment": run["experiment"],
        "paper_only": paper_only,
        "mode": mode,
        "slices": len(order),
        "baselines": len(baselines),
        "rank": out["rank"],
        "best_baseline": {
            "id": best["id"],
            "name": run_name(best),
            "dice": float(base_dice[:, out["best"]].mean()),
        },
        "difference": out["difference"],
        "p_holm": tests[out["best"]]["p_holm"],
        "alpha": alpha,
        "better_than": int(
            sum(
                t["p_holm"] <= alpha and run_dice.mean() > base_dice[:, j].mean()
                for j, t in enumerate(tests)
            )
        ),
        "worse_than": int(
            sum(
                t["p_holm"] <= alpha and run_dice.mean() < base_dice[:, j].mean()
                for j, t in enumerate(tests)
            )
        ),
    }


def describe(result: dict) -> str:
    """The comparison as a few lines of text."""
    r, b, d, k = result["run"], result["best_baseline"], result["difference"], result["rank"]
    what = "paper-grid baselines" if result["paper_only"] else "baselines"
    return "\n".join(
        [
            f"run {r['id']} {r['name']}: Dice {r['dice']:.2f}% on {result['slices']} test "
            f"slices ({result['mode']})",
            f"rank {k['rank']:g} of {k['of']} among {result['baselines']} {what} of sweep "
            f"'{result['sweep']}' (ties share their average rank; approximate 95% bootstrap "
            f"rank interval {k['low']:g}-{k['high']:g}, {k['resampled']} resampled)",
            f"best baseline: run {b['id']} {b['name']}, Dice {b['dice']:.2f}%",
            f"difference to it: {d['mean']:+.2f} points (95% CI {d['low']:+.2f} to "
            f"{d['high']:+.2f}, {d['interval']}), Wilcoxon p = "
            f"{formats.p_value(result['p_holm'])} (slices taken as independent; Holm over "
            f"{result['baselines']} baselines)",
            f"significantly better than {result['better_than']}, worse than "
            f"{result['worse_than']} of them (Holm-adjusted alpha {result['alpha']})",
            resolution_note(result.get("image_size")),
            *([result["environment_note"]] if result.get("environment_note") else []),
        ]
    )

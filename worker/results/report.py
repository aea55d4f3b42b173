"""`segbench report`: a sweep's results with their uncertainty, as one document.

Everything comes from what the runs stored: per-slice confusion counts (Dice in any
metric mode), per-volume results and NSD / HD95 where the evaluation recorded them.
Runs are compared only with runs of the same experiment on the same test slices:
each experiment gets one hierarchical bootstrap (worker.results.bootstrap) whose
resamples serve every run of it, so intervals, paired differences and rankings agree.

Dice and NSD are in percent, HD95 in millimetres.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from db import metrics as registry
from db import queries
from db.errors import InvalidInput, check_choice
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, grid_kind
from db.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE, INTERVAL_METHOD
from db.protocol import METRIC_MODES
from worker.results import bootstrap, environments, intervals, ranking, stats
from worker.results.frames import ExportError
from worker.training.metrics import summarize

DEFAULT_TOP = 10
PERCENT, POINTS = (0.0, 100.0), (-100.0, 100.0)  # range of a Dice and of a difference
PAIRWISE_RULE = (
    "pairs of runs of the same experiment among its {top} best by mean Dice; "
    "Holm over every pair listed"
)
WILCOXON_NOTE = "Wilcoxon signed-rank on per-slice Dice; assumes independent slices"
COUNT_COLUMNS = ["tp", "fp", "fn", "tn"]


def _grid_order(values, order) -> list[str]:
    order = list(order)
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))


class RunSlices:
    """One run's stored per-slice counts as arrays, sorted by (volume, slice)."""

    def __init__(self, rows: np.ndarray) -> None:
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        self.volume, self.slice, self.counts = rows[:, 0], rows[:, 1], rows[:, 2:6]
        self.keys = self.volume * 65536 + self.slice

    def on(self, keys: np.ndarray) -> np.ndarray:
        """The (N, 4) counts on the shared slices `keys` (sorted), in their order."""
        if len(keys) == len(self.keys):  # exactly the shared slices: no lookup needed
            return self.counts
        return self.counts[np.searchsorted(self.keys, keys)]


def _slice_counts(session: Session, ids: list[int]) -> dict[int, RunSlices]:
    rows = queries.slice_results(session, run_ids=ids)
    if not rows:
        return {}
    # rows of db.queries.slice_results: run_id, idx, volume, slice, tp, fp, fn, tn
    a = np.array([tuple(row.values()) for row in rows], dtype=np.int64)[:, [0, 2, 3, 4, 5, 6, 7]]
    a = a[np.argsort(a[:, 0], kind="stable")]
    runs, starts = np.unique(a[:, 0], return_index=True)
    return {
        int(rid): RunSlices(part[:, 1:])
        for rid, part in zip(runs, np.split(a, starts[1:]), strict=True)
    }


def _shared_slices(frames: dict[int, RunSlices], ids: list[int]) -> np.ndarray:
    keys = frames[ids[0]].keys
    for rid in ids[1:]:
        keys = np.intersect1d(keys, frames[rid].keys)
    return keys


def _volumes(run_id: int, stored: dict[int, list[dict]], counts: RunSlices | None):
    """A run's per-volume metrics: the stored ones, else the 3-D Dice of its counts."""
    if stored.get(run_id):
        rows = [
            {"volume": int(v["volume"]), "dice": v["dice"], "nsd": v["nsd"], "hd95": v["hd95"]}
            for v in stored[run_id]
        ]
        return rows, "volume_results"
    if counts is None:
        return [], None
    dice = stats.volume_dice(counts.counts, counts.volume)
    rows = [{"volume": k, "dice": 100 * v, "nsd": None, "hd95": None} for k, v in dice.items()]
    return rows, "slice_counts"


def _experiment_block(
    runs: list[dict],
    frames: dict[int, RunSlices],
    *,
    mode: str,
    top: int,
    n_resamples: int,
    seed: int,
    confidence: float,
    method: str,
) -> dict[str, Any]:
    """Intervals, ranking and pairs of the runs of one experiment."""
    ids = [r["id"] for r in runs if r["id"] in frames]
    keys = _shared_slices(frames, ids) if ids else np.array([], dtype=np.int64)
    if not len(keys):
        return {"ci": {}, "ranking": [], "pairs": [], "resampled": None, "slices": 0, "tau": None}
    per_slice, both = [], {m: [] for m in METRIC_MODES}
    for rid in ids:
        c = frames[rid].on(keys)
        for m in METRIC_MODES:
            both[m].append(100 * stats.slice_dice(c, m).mean())
        per_slice.append(100 * stats.slice_dice(c, mode))
    x = np.vstack(per_slice)
    volumes = keys // 65536
    r = bootstrap.resample_weights(volumes, n_resamples=n_resamples, seed=seed)
    means = r.means(x)
    low, high = intervals.interval_of(
        x, volumes, means, method=method, confidence=confidence, bounds=PERCENT
    )
    low, high = np.atleast_1d(low), np.atleast_1d(high)
    ci = {rid: (float(lo), float(hi)) for rid, lo, hi in zip(ids, low, high, strict=True)}
    stability = ranking.rank_stability(x, r, confidence)
    ranked = [
        {
            "id": rid,
            "experiment": runs[0]["experiment"],
            "rank": float(stability["rank"][j]),
            "median_rank": float(stability["median_rank"][j]),
            "rank_ci": [float(stability["low"][j]), float(stability["high"][j])],
        }
        for j, rid in enumerate(ids)
    ]
    ranked.sort(key=lambda e: (e["rank"], e["id"]))
    order = np.argsort(-x.mean(axis=1), kind="stable")[:top]
    pairs = []
    for i, j in itertools.combinations(sorted(order, key=lambda k: -x[k].mean()), 2):
        diff = means[:, i] - means[:, j]
        d = intervals.difference_interval(
            x[i] - x[j], volumes, diff, method=method, confidence=confidence, bounds=POINTS
        )
        pairs.append(
            {
                "a": ids[i],
                "b": ids[j],
                "experiment": runs[0]["experiment"],
                "difference": float((x[i] - x[j]).mean()),
                "ci": [d["low"], d["high"]],
                "p_t": d["p_t"],
                "p_bootstrap": bootstrap.bootstrap_p(diff),
                "p_wilcoxon": stats.wilcoxon(x[i], x[j])["p_value"],
            }
        )
    return {
        "ci": ci,
        "ranking": ranked,
        "pairs": pairs,
        "resampled": r.resampled,
        "slices": len(keys),
        "replicates": {rid: stability["replicates"][:, j] for j, rid in enumerate(ids)},
        "tau": {
            "experiment": runs[0]["experiment"],
            "runs": len(ids),
            "tau": ranking.kendall_tau(both["standard"], both["authors-2020"]),
        },
    }


UNIT_WORDS = {"%": "percent"}


def _run_metrics(run: dict, counts: RunSlices | None, mode: str) -> dict[str, Any]:
    """Every test metric of db.metrics for one run in ``mode``: recomputed from its
    stored counts where it has them (count metrics, Dice std, pooled Dice), else as
    stored when stored in ``mode`` (None otherwise); volume-level means as stored, with
    the number of volumes each covers (``<name>_volumes``)."""
    fresh = summarize(counts.counts, mode) if counts is not None else {}
    out: dict[str, Any] = {}
    for m in registry.select(kind="test"):
        if m.name in fresh:
            out[m.name] = fresh[m.name]
        elif m.level == "volume" or run["metric_mode"] == mode:
            out[m.name] = run.get(m.name)
        else:
            out[m.name] = None
        if m.coverage:
            out[m.coverage] = run.get(m.coverage)
    return out


def _adjust(pairs: list[dict], resolution: float) -> None:
    """Holm-adjusted p-values of the pairs listed: p_holm (Wilcoxon), p_t_holm (the
    cluster-t test, where computed) and p_bootstrap_holm. A bootstrap p of 0 only says
    p < 1 / resamples, so it enters Holm as that bound and its adjusted value is an
    upper bound (``p_bootstrap_bounded``)."""
    for key, p_key in (("p_holm", "p_wilcoxon"), ("p_t_holm", "p_t")):
        if pairs and pairs[0][p_key] is not None:
            for p, q in zip(pairs, stats.holm([p[p_key] for p in pairs]), strict=True):
                p[key] = float(q)
        else:
            for p in pairs:
                p[key] = None
    bounded = [max(p["p_bootstrap"], resolution) for p in pairs]
    for p, q in zip(pairs, stats.holm(bounded), strict=True):
        p["p_bootstrap_holm"] = float(q)
        p["p_bootstrap_bounded"] = p["p_bootstrap"] < resolution


def _cd(frame: pd.DataFrame, treatment: str, blocks: list[str], alpha: float) -> dict:
    """Friedman + Nemenyi of `treatment` over complete `blocks` (mean over seeds)."""
    table = frame.pivot_table(index=blocks, columns=treatment, values="dice", aggfunc="mean")
    order = ENCODERS if treatment == "encoder" else ARCHITECTURES
    table = table[_grid_order(table.columns, order)].dropna()
    question = {"treatment": treatment, "blocks_of": blocks}
    if table.shape[1] < 2 or table.shape[0] < 2:
        return {
            **question,
            "skipped": f"needs at least 2 {treatment}s measured in at least 2 complete "
            f"blocks, found {table.shape[1]} in {table.shape[0]}",
        }
    return {**question, **ranking.cd_analysis(table.to_numpy(), list(table.columns), alpha)}


def _between_experiments(frame: pd.DataFrame) -> list[dict]:
    cells = frame.pivot_table(
        index=["architecture", "encoder", "init", "seed"], columns="experiment", values="dice"
    )
    out = []
    for a, b in itertools.combinations(_grid_order(cells.columns, EXPERIMENTS), 2):
        both = cells[[a, b]].dropna()
        if len(both) >= 2:
            tau = ranking.kendall_tau(both[a], both[b])
            out.append({"a": a, "b": b, "cells": len(both), "tau": tau})
    return out


def _environments(session: Session, runs: list[dict]) -> dict[str, Any]:
    """Where the sweep's runs trained: each environment key with its description and
    its runs, and the sentence that says so when there are several."""
    keys = [r.get("environment_key") for r in runs]
    described = queries.environments(session, keys)
    groups: dict[str, list[int]] = {}
    for run, key in zip(runs, keys, strict=True):
        groups.setdefault(environments.key_of(key), []).append(run["id"])
    return {
        "environments": [
            {"key": k, "description": environments.describe(described.get(k)), "runs": ids}
            for k, ids in sorted(groups.items())
        ],
        "environment_note": environments.note(keys, described),
    }


def build_report(
    session: Session,
    sweep: str,
    *,
    metric_mode: str | None = None,
    top: int = DEFAULT_TOP,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    alpha: float = 0.05,
    with_replicates: bool = False,
    interval: str = INTERVAL_METHOD,
) -> dict[str, Any]:
    """The report of one sweep (see docs/report.md for every key)."""
    intervals.check_method(interval)
    if top < 2:
        raise InvalidInput(f"--top must be at least 2 (a pair), got {top}.")
    about = queries.sweep_row(session, sweep=sweep)
    mode = metric_mode or about["protocol"].get("metric_mode", "standard")
    check_choice("metric mode", mode, METRIC_MODES)
    runs = queries.report_runs(session, sweep=sweep)
    if not runs:
        raise ExportError(f"Sweep '{sweep}' has no succeeded run yet; there is nothing to report.")
    ids = [r["id"] for r in runs]
    frames = _slice_counts(session, ids)
    stored: dict[int, list[dict]] = {}
    for row in queries.volume_rows(session, run_ids=ids):
        stored.setdefault(row["run_id"], []).append(row)
    blocks = {}
    for experiment in _grid_order({r["experiment"] for r in runs}, EXPERIMENTS):
        of = [r for r in runs if r["experiment"] == experiment]
        blocks[experiment] = _experiment_block(
            of,
            frames,
            mode=mode,
            top=top,
            n_resamples=n_resamples,
            seed=seed,
            confidence=confidence,
            method=interval,
        )
    out_runs = []
    for r in runs:
        c = frames.get(r["id"])
        vols, source = _volumes(r["id"], stored, c)
        ci = blocks[r["experiment"]]["ci"].get(r["id"])
        out_runs.append(
            {
                "id": r["id"],
                "experiment": r["experiment"],
                "architecture": r["architecture"],
                "encoder": r["encoder"],
                "family": r["family"],
                "grid": grid_kind(r["architecture"], r["encoder"]),
                "init": r["init"],
                "seed": r["seed"],
                **_run_metrics(r, c, mode),
                "dice_ci": list(ci) if ci else [None, None],
                "test_volumes": r["test_volumes"] if r["test_volumes"] is not None else len(vols),
                "volumes": vols,
                "volumes_from": source,
            }
        )
    pairs = [p for b in blocks.values() for p in b["pairs"]]
    _adjust(pairs, 1.0 / n_resamples)
    frame = pd.DataFrame([r for r in out_runs if r["dice"] is not None])
    cd: list[dict] = []
    if not frame.empty:
        cd.append(
            {
                "question": "encoder",
                **_cd(frame, "encoder", ["experiment", "architecture", "init"], alpha),
            }
        )
        for experiment in _grid_order(frame["experiment"], EXPERIMENTS):
            one = frame[frame["experiment"] == experiment]
            cd.append(
                {
                    "question": f"architecture in {experiment}",
                    "experiment": experiment,
                    **_cd(one, "architecture", ["encoder", "init"], alpha),
                }
            )
    resampled = sorted({b["resampled"] for b in blocks.values() if b["resampled"]})
    report = {
        "sweep": about["name"],
        "protocol": about["protocol"],
        "protocol_hash": about["protocol_hash"],
        "dataset": about["dataset_name"],
        "synthetic": bool(about["synthetic"]),
        "metric_mode": mode,
        "units": {m.name: UNIT_WORDS.get(m.unit, m.unit) for m in registry.select(kind="test")},
        "confidence": confidence,
        "interval": {"method": interval, "description": intervals.DESCRIPTIONS[interval]},
        "n_resamples": n_resamples,
        "p_bootstrap_resolution": 1.0 / n_resamples,
        "bootstrap_seed": seed,
        "resampled": resampled[0] if len(resampled) == 1 else ", ".join(resampled) or None,
        "slices": {x: b["slices"] for x, b in blocks.items()},
        "runs": out_runs,
        "ranking": [e for b in blocks.values() for e in b["ranking"]],
        "pairwise": pairs,
        "pairwise_rule": PAIRWISE_RULE.format(top=top),
        "wilcoxon": WILCOXON_NOTE,
        "kendall": {
            "modes": [b["tau"] for b in blocks.values() if b["tau"]],
            "experiments": _between_experiments(frame) if not frame.empty else [],
        },
        "cd": cd,
        **_environments(session, runs),
    }
    if with_replicates:
        report["rank_replicates"] = {
            rid: reps for b in blocks.values() for rid, reps in b.get("replicates", {}).items()
        }
    return report

"""`segbench compare`: two runs, or every pair of a sweep's runs, on shared test slices."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db import queries
from db.grid import run_name
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD
from worker.results import intervals, stats
from worker.results.frames import ExportError, run_counts
from worker.results.identity import comparable, environment_note, run_identity


def compare_runs(
    session: Session,
    run_a: int,
    run_b: int,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    method: str = INTERVAL_METHOD,
) -> dict:
    """`segbench compare A B`: both runs on the test slices they share; refused (one
    sentence) unless worker.results.identity.comparable says they may be compared."""
    info, ident = {}, {}
    for rid in (run_a, run_b):
        run = queries.run_detail(session, run_id=rid)
        if run["status"] != "succeeded":
            raise ExportError(
                f"Run {rid} is {run['status']}; only succeeded runs have test results."
            )
        info[rid] = {
            "id": rid,
            "name": run_name(run),
            "sweep": run["sweep"],
            "synthetic": bool(run["synthetic"]),
            "manifest_hash": run["manifest_hash"],
        }
        ident[rid] = run_identity(session, run)
    reason = comparable(ident[run_a], ident[run_b])
    if reason:
        raise ExportError(reason)
    a, b = info[run_a], info[run_b]
    counts = run_counts(session, [run_a, run_b])
    ca, cb = counts.get(run_a), counts.get(run_b)
    if ca is None or cb is None:
        raise ExportError(f"Run {run_a if ca is None else run_b} has no per-slice test counts.")
    shared = ca.merge(cb, on=["volume", "slice"], suffixes=("_a", "_b"))
    if shared.empty:
        raise ExportError(f"Runs {run_a} and {run_b} share no test slice.")
    out = stats.compare_counts(
        shared[["tp_a", "fp_a", "fn_a", "tn_a"]].to_numpy(),
        shared[["tp_b", "fp_b", "fn_b", "tn_b"]].to_numpy(),
        shared["volume"].to_numpy(),
        n_resamples=n_resamples,
        seed=seed,
        method=method,
    )
    out["image_size"] = ident[run_a]["image_size"]
    out["environment_note"] = environment_note(session, [ident[run_a], ident[run_b]])
    out["a"] = {**a, **out["a"]}
    out["b"] = {**b, **out["b"]}
    return out


def compare_sweep(
    session: Session,
    sweep: str,
    experiment: str,
    *,
    mode: str = "standard",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = INTERVAL_METHOD,
) -> dict:
    """All pairs of the succeeded runs of one experiment in a sweep (one protocol, one
    dataset: comparable by construction), Holm-corrected."""
    runs = queries.succeeded_runs(session, sweep=sweep, experiment=experiment)
    if len(runs) < 2:
        raise ExportError(
            f"Sweep '{sweep}' has {len(runs)} succeeded {experiment} run(s); need two to compare."
        )
    counts = run_counts(session, [r["id"] for r in runs])
    keys = None
    for r in runs:
        c = counts.get(r["id"])
        k = set() if c is None else set(zip(c["volume"], c["slice"], strict=True))
        keys = k if keys is None else keys & k
    if not keys:
        raise ExportError(f"The {experiment} runs of sweep '{sweep}' share no test slice.")
    dice = {}
    models = []
    volumes = [k[0] for k in sorted(keys)]
    for r in runs:
        c = counts[r["id"]].set_index(["volume", "slice"]).loc[sorted(keys)]
        d = 100 * stats.slice_dice(c[["tp", "fp", "fn", "tn"]].to_numpy(), mode)
        dice[r["id"]] = d
        ci = intervals.mean_interval(
            d, volumes, method=method, n_resamples=n_resamples, seed=seed, bounds=(0.0, 100.0)
        )
        models.append({"id": r["id"], "name": run_name(r), "dice": ci})
    models.sort(key=lambda m: -m["dice"]["mean"])
    pairs = []
    for i, ma in enumerate(models):
        for mb in models[i + 1 :]:
            w = stats.wilcoxon(dice[ma["id"]], dice[mb["id"]])
            diff = float((dice[ma["id"]] - dice[mb["id"]]).mean())
            pairs.append({"a": ma["id"], "b": mb["id"], "difference": diff, **w})
    adjusted = stats.holm([p["p_value"] for p in pairs])
    for p, q in zip(pairs, adjusted, strict=True):
        p["p_holm"] = float(q)
        p["significant"] = bool(q <= alpha)
    return {
        "sweep": sweep,
        "experiment": experiment,
        "mode": mode,
        "slices": len(keys),
        "resampled": models[0]["dice"]["resampled"],
        "interval": models[0]["dice"]["interval"],
        "image_size": (runs[0]["protocol"] or {}).get("image_size"),
        "wilcoxon_assumes": "independent slices",
        "alpha": alpha,
        "models": models,
        "pairs": pairs,
    }

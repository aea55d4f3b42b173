"""Time every dashboard query on a database holding the full 600-run benchmark.

Builds (once, cached under .bench-cache/ and in the PostgreSQL database
segbench_bench) the paper-scale database of make_full_db.py, then runs each query of
db.queries the way a dashboard page does (a session scope around one call) and
prints the median of several repetitions per back end. Target: every query well
under 100 ms. The last line reads `slowest query: N ms`.

    python bench/dashboard_queries.py [--quick] [--repeat 7] [--pg-server URL]

--quick: SQLite only.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_full_db  # noqa: E402

from db import queries  # noqa: E402
from db.session import session_scope  # noqa: E402

Query = Callable[..., object]


def dashboard_queries(ids: list[int]) -> dict[str, Query]:
    """name -> f(session): what the dashboard pages, `segbench status` and exports ask."""
    some, many = ids[:25], ids[:200]
    sweep = make_full_db.SWEEP
    return {
        "leaderboard, all 600 runs": lambda s: queries.leaderboard(s, sweep=sweep),
        "leaderboard, filtered": lambda s: queries.leaderboard(
            s,
            sweep=sweep,
            experiment="lung-segmentation",
            architecture=["unet", "fpn"],
            init="imagenet",
            status="succeeded",
        ),
        "leaderboard, top 10 by parameters": lambda s: queries.leaderboard(
            s, sort="parameters_m", descending=False, limit=10
        ),
        "aggregates by experiment x architecture": lambda s: queries.aggregates(
            s, by=("experiment", "architecture"), sweep=sweep
        ),
        "aggregates by experiment x encoder": lambda s: queries.aggregates(
            s, by=("experiment", "encoder"), sweep=sweep
        ),
        "aggregates by family": lambda s: queries.aggregates(s, by="family", sweep=sweep),
        "aggregates by init": lambda s: queries.aggregates(s, by=("experiment", "init")),
        "queue counts": lambda s: queries.queue_counts(s, sweep=sweep),
        "status rows (segbench status)": lambda s: queries.status_rows(s, sweep=sweep),
        "sweeps": lambda s: queries.sweeps(s),
        "running runs with ETA": lambda s: queries.running_runs(s, sweep=sweep),
        "failed runs": lambda s: queries.failed_runs(s, sweep=sweep),
        "epoch curves, 1 run": lambda s: queries.epoch_curves(s, run_ids=ids[:1]),
        "epoch curves, 25 runs": lambda s: queries.epoch_curves(s, run_ids=some),
        "epoch curves, 200 runs <= 50 points": lambda s: queries.epoch_curves(
            s, run_ids=many, max_points=50
        ),
        "loss bands, one experiment (40k rows)": lambda s: queries.loss_bands(
            s, by="architecture", experiment="lung-segmentation", sweep=sweep
        ),
        "loss bands, <= 50 points": lambda s: queries.loss_bands(
            s, by="architecture", experiment="lesion-segmentation-b", max_points=50
        ),
        "slice results, 1 run": lambda s: queries.slice_results(s, run_ids=ids[:1]),
        "slice results, 8 runs": lambda s: queries.slice_results(s, run_ids=ids[:8]),
        "run detail": lambda s: queries.run_detail(s, run_id=ids[0]),
        "run artifacts (with data)": lambda s: queries.run_artifacts(s, run_id=ids[0]),
        "gallery slice indexes": lambda s: queries.gallery_slice_indexes(
            s, sweep=sweep, experiment="lung-segmentation"
        ),
        "gallery masks, 8 runs": lambda s: queries.stored_gallery_masks(
            s, run_ids=ids[:8], index=300
        ),
        "runs with first-layer filters": lambda s: queries.runs_with_first_layer(s),
    }


def median_ms(url: str, query: Query, repeat: int) -> float:
    times = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        with session_scope(url) as session:
            query(session)
        if attempt:  # the first call warms caches and is not counted
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="SQLite only")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions per query")
    parser.add_argument("--pg-server", default=make_full_db.PG_SERVER)
    args = parser.parse_args()

    backends = {"sqlite": f"sqlite:///{make_full_db.SQLITE_PATH}"}
    if not args.quick:
        backends["postgresql"] = make_full_db.pg_url(args.pg_server)
    for name, url in backends.items():
        seconds = make_full_db.build(url, server=args.pg_server)
        state = f"built in {seconds:.1f} s" if seconds else "cached"
        print(f"{name}: {state}, {make_full_db.counts(url)}")

    ids = make_full_db.sweep_run_ids(backends["sqlite"])
    names = list(dashboard_queries(ids))
    results: dict[str, dict[str, float]] = {}
    for backend, url in backends.items():
        backend_ids = make_full_db.sweep_run_ids(url)
        for query_name, query in dashboard_queries(backend_ids).items():
            results.setdefault(query_name, {})[backend] = median_ms(url, query, args.repeat)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)")
    width = max(len(n) for n in names)
    header = f"{'query (median of ' + str(args.repeat) + ')':<{width}}" + "".join(
        f"{b + ' ms':>16}" for b in backends
    )
    print(header)
    print("-" * len(header))
    for query_name in names:
        cells = "".join(f"{results[query_name][b]:>16.1f}" for b in backends)
        print(f"{query_name:<{width}}{cells}")
    slowest = max(ms for row in results.values() for ms in row.values())
    print(f"slowest query: {math.ceil(slowest)} ms")


if __name__ == "__main__":
    main()

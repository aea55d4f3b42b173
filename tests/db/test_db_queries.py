"""The dashboard's reads (db.queries) return the right rows, with aggregates equal
to numpy's on the same data."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from db import jobs, queries
from db.errors import UnknownRun, UnknownSweep
from db.grid import expand
from db.session import session_scope
from tests.support.runs import PROTOCOL, epoch_record, finished_run, make_outcome, submit_runs

ENCODERS = ["resnet18", "vgg11", "efficientnet-b0"]
EPOCHS = PROTOCOL.epochs


@pytest.fixture(scope="module")
def populated(migrated_url):
    """72 runs: 68 succeeded with random scores, 2 running at epoch 2, 1 failed,
    1 queued; and a second sweep of 2 queued runs."""
    url = migrated_url
    specs = expand(encoders=ENCODERS)
    ids = submit_runs(url, encoders=ENCODERS)
    other = submit_runs(url, 2, sweep="other-sweep")
    rng = np.random.default_rng(0)
    truth: dict[int, dict] = {}
    losses: dict[int, list[float]] = {}
    with session_scope(url) as session:
        for run_id, spec in zip(ids[:-4], specs[:-4], strict=True):
            losses[run_id] = list(rng.uniform(0.1, 1.0, EPOCHS))
            epochs = [epoch_record(e, loss) for e, loss in enumerate(losses[run_id], start=1)]
            outcome = make_outcome(n_slices=6, dice=float(rng.uniform(80, 95)))
            outcome.test.sensitivity = float(rng.uniform(85, 99))
            outcome.parameters_m = float(rng.uniform(1, 60))
            finished_run(session, run_id, outcome, epochs=epochs, worker="w")
            truth[run_id] = {
                **spec.to_dict(),
                "dice": outcome.test.dice,
                "sensitivity": outcome.test.sensitivity,
                "parameters_m": outcome.parameters_m,
            }
        running = ids[-4:-2]
        for run_id in running:
            jobs.claim(session, run_id=run_id, worker="gpu-host:1234")
            for epoch in (1, 2):
                jobs.record_epoch(session, run_id=run_id, record=epoch_record(epoch))
        jobs.claim(session, run_id=ids[-2], worker="w")
        jobs.fail(session, run_id=ids[-2], reason="CUDA out of memory")
    return {
        "url": url,
        "ids": ids,
        "other": other,
        "truth": truth,
        "losses": losses,
        "running": running,
    }


@pytest.fixture
def session(populated):
    with session_scope(populated["url"]) as session:
        yield session


def test_leaderboard_is_best_first_and_filters_reduce_rows(populated, session):
    rows = queries.leaderboard(session, sweep="test-sweep")
    assert len(rows) == 72
    scored = [r["dice"] for r in rows if r["dice"] is not None]
    assert rows[0]["dice"] == max(t["dice"] for t in populated["truth"].values())
    assert scored == sorted(scored, reverse=True) and len(scored) == 68
    assert all(r["dice"] is None for r in rows[68:])

    some = queries.leaderboard(
        session,
        status="succeeded",
        experiment="lung-segmentation",
        architecture=["unet", "fpn"],
    )
    expected = [
        t
        for t in populated["truth"].values()
        if t["experiment"] == "lung-segmentation" and t["architecture"] in ("unet", "fpn")
    ]
    assert len(some) == len(expected) > 0
    assert {(r["architecture"], r["status"]) for r in some} <= {
        ("unet", "succeeded"),
        ("fpn", "succeeded"),
    }
    smallest = queries.leaderboard(session, sort="parameters_m", descending=False, limit=5)
    params = [r["parameters_m"] for r in smallest]
    assert params == sorted(t["parameters_m"] for t in populated["truth"].values())[:5]
    with pytest.raises(ValueError, match="sort column 'bogus'"):
        queries.leaderboard(session, sort="bogus")


@pytest.mark.parametrize(
    ("by", "metric", "filters"),
    [
        ("architecture", "dice", {}),
        (("experiment", "init"), "sensitivity", {}),
        ("family", "dice", {"experiment": "lesion-segmentation-a"}),
        ("encoder", "parameters_m", {"init": "imagenet"}),
    ],
)
def test_aggregates_equal_numpy(populated, session, by, metric, filters):
    names = [by] if isinstance(by, str) else list(by)
    groups = defaultdict(list)
    for t in populated["truth"].values():
        if all(t[k] == v for k, v in filters.items()):
            groups[tuple(t[name] for name in names)].append(t[metric])
    rows = queries.aggregates(session, by=by, metric=metric, sweep="test-sweep", **filters)
    assert len(rows) == len(groups)
    for row in rows:
        values = np.array(groups[tuple(row[name] for name in names)])
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert row["std"] == pytest.approx(values.std(ddof=1), rel=1e-6)
        assert (row["min"], row["max"]) == (values.min(), values.max())


def test_queue_counts_status_rows_and_sweeps(populated, session):
    assert queries.queue_counts(session, sweep="test-sweep") == {
        "queued": 1,
        "running": 2,
        "succeeded": 68,
        "failed": 1,
        "cancelled": 0,
    }
    assert queries.queue_counts(session)["queued"] == 3
    rows = queries.status_rows(session, sweep="test-sweep")
    assert len(rows) == 72
    assert all(tuple(row) == queries.STATUS_KEYS for row in rows)
    assert [r["id"] for r in queries.status_rows(session, "other-sweep")] == populated["other"]
    with pytest.raises(UnknownSweep, match="nope"):
        queries.status_rows(session, sweep="nope")
    sweeps = {s["name"]: s for s in queries.sweeps(session)}
    assert sweeps["test-sweep"]["runs"] == 72 and sweeps["test-sweep"]["succeeded"] == 68
    assert sweeps["other-sweep"]["queued"] == 2 and sweeps["other-sweep"]["synthetic"]


def test_running_and_failed_runs(populated, session):
    running = queries.running_runs(session)
    assert [r["id"] for r in running] == populated["running"]
    for row in running:
        assert (row["epoch"], row["epochs"], row["worker"]) == (2, EPOCHS, "gpu-host:1234")
        assert row["seconds_per_epoch"] == pytest.approx(2.5)
        assert "eta_seconds" not in row  # one time left, the sweep's (sweep_eta)
        assert not row["lease_expired"]
    failed = queries.failed_runs(session, sweep="test-sweep")
    assert [(r["id"], r["error"]) for r in failed] == [(populated["ids"][-2], "CUDA out of memory")]


def test_epoch_curves_and_downsampling(populated, session):
    a, b = populated["ids"][:2]
    rows = queries.epoch_curves(session, run_ids=[a, b])
    assert [(r["run_id"], r["epoch"]) for r in rows] == [
        (run, epoch) for run in (a, b) for epoch in range(1, EPOCHS + 1)
    ]
    assert [r["val_loss"] for r in rows[:EPOCHS]] == pytest.approx(populated["losses"][a])
    thin = queries.epoch_curves(session, run_ids=[a], max_points=2)
    assert [r["epoch"] for r in thin] == [1, 3, 4]  # every 2nd epoch and the last


def test_loss_bands_equal_numpy(populated, session):
    by_arch = defaultdict(list)
    for run_id, t in populated["truth"].items():
        if t["experiment"] == "lung-segmentation":
            by_arch[t["architecture"]].append(populated["losses"][run_id])
    rows = queries.loss_bands(
        session, by="architecture", experiment="lung-segmentation", status="succeeded"
    )
    assert len(rows) == len(by_arch) * EPOCHS
    for row in rows:
        values = np.array(by_arch[row["architecture"]])[:, row["epoch"] - 1]
        assert row["val_mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert row["val_std"] == pytest.approx(values.std(ddof=1), rel=1e-6)
    thin = queries.loss_bands(session, experiment="lung-segmentation", max_points=2)
    assert sorted({row["epoch"] for row in thin}) == [1, 3, 4]  # every 2nd and the last


def test_slices_artifacts_and_detail(populated, session):
    run_id = populated["ids"][0]
    slices = queries.slice_results(session, run_ids=[run_id])
    assert [(s["idx"], s["volume"], s["slice"], s["tp"]) for s in slices] == [
        (i, i // 4, i % 4, 10 + i) for i in range(6)
    ]
    artifacts = queries.run_artifacts(session, run_id=run_id, kinds=["gallery_mask"])
    assert [(a["key"], a["data"], a["shape"]) for a in artifacts] == [
        ("5", b"\x0f" * 8, [8, 8]),
        ("7", b"\xf0" * 8, [8, 8]),
    ]
    assert "data" not in queries.run_artifacts(session, run_id=run_id, with_data=False)[0]
    detail = queries.run_detail(session, run_id=run_id)
    assert detail["test"]["dice"] == populated["truth"][run_id]["dice"]
    assert (detail["test"]["nsd"], detail["test"]["hd95"]) == (81.0, 2.5)
    other = populated["ids"][1]
    volumes = queries.volume_rows(session, run_ids=[other, run_id])
    assert all(tuple(v) == queries.VOLUME_COLUMNS for v in volumes)
    # make_outcome(n_slices=6): volumes of 4 and 2 slices, the last HD95 undefined
    assert [tuple(v.values()) for v in volumes] == [
        (rid, v, 4 - 2 * v, 85.0 + v, 80.0 + v, None if v == 1 else 2.0)
        for rid in sorted([run_id, other])
        for v in (0, 1)
    ]
    assert detail["sweep"] == "test-sweep" and detail["status"] == "succeeded"
    with pytest.raises(UnknownRun, match="424242"):
        queries.run_detail(session, run_id=424242)

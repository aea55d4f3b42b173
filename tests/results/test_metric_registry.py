"""The metric registry (db.metrics): one table of what each number means, read by every
surface; the count formulas written once (worker.training.metrics) against plain
loops; a metric added in one place (its spec and its formula) reaching the stored
results, the leaderboard's rows, Table 2, the report in every format and
`segbench status --wide`; and the missed-volume rule of HD95 end to end (evaluate,
the database, the report)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from db import metrics as registry
from db import queries
from db.grid import RunSpec
from db.metrics import Metric
from db.protocol import Protocol, TestResult
from db.session import session_scope
from tests.support.mask_oracle import MaskOracle
from tests.support.runs import counted_result, finished_run, outcome_of
from worker.cli import load_commands
from worker.data.dataset import Split
from worker.results import frames, tables
from worker.results.report import build_report
from worker.results.report_text import render
from worker.training import metrics
from worker.training.evaluate import evaluate

DATASET = {"name": "medseg-synthetic", "kind": "medseg", "synthetic": True,
           "manifest_hash": "e" * 64}  # fmt: skip
SPECS = [RunSpec("lung-segmentation", a, "resnet18", "random") for a in ("unet", "fpn", "linknet")]


@pytest.fixture
def db_url(tmp_path) -> str:
    from db import migrate
    from db.session import dispose_engine

    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    migrate.upgrade(url)
    yield url
    dispose_engine(url)


def test_count_formulas_against_plain_loops():
    """Vectorised, scalar and authors-2020 forms against a loop over the counts."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, (200, 4))
    counts[:10, :3] = 0  # empty truth and prediction
    counts[10:20, [0, 2]] = 0  # empty truth, false positives
    by_mode = {mode: metrics.slice_metrics(counts, mode) for mode in ("standard", "authors-2020")}
    for i, (tp, fp, fn, tn) in enumerate(counts.tolist()):

        def ratio(a, b):
            return 1.0 if b == 0 else a / b

        standard = {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
                    "dice": ratio(2 * tp, 2 * tp + fp + fn)}  # fmt: skip
        eps = 1e-6
        authors = {"sensitivity": tp / (tp + fp + eps), "specificity": tn / (tn + fn + eps),
                   "dice": 2 * tp / (2 * tp + fp + fn + eps)}  # fmt: skip
        if tp + fn == 0:
            authors = dict.fromkeys(authors, 1.0)
        for name in standard:
            assert by_mode["standard"][name][i] == pytest.approx(standard[name], abs=1e-12)
            assert by_mode["authors-2020"][name][i] == pytest.approx(authors[name], abs=1e-12)
            assert metrics.COUNT_FORMULAS[name](tp, fp, fn, tn, 0.0) == pytest.approx(
                standard[name], abs=1e-12
            )
    assert isinstance(metrics.dice_from_counts(1, 2, 3), float)
    assert metrics.dice_from_counts(0, 0, 0) == 1.0


def test_every_count_metric_of_the_registry_has_a_formula_and_sane_fields():
    for m in registry.all_metrics():
        assert m.level in registry.LEVELS and m.kind in registry.KINDS
        assert m.help.endswith(".") and len(m.help) > 20
        if m.from_counts:
            assert m.name in metrics.COUNT_FORMULAS
    assert registry.get("hd95").higher_is_better is False
    assert registry.get("dice").header == "Dice (%)" and registry.get("hd95").coverage
    with pytest.raises(ValueError, match="Unknown metric 'iou'"):
        registry.get("iou")


IOU = Metric(
    "iou", "IoU", "%", True, "slice",
    "Intersection over union TP / (TP + FP + FN) of each test slice, mean over the slices.",
    from_counts=True,
)  # fmt: skip


@pytest.fixture
def with_iou(monkeypatch):
    """A metric added in one place: its spec and its formula."""
    monkeypatch.setattr(registry, "METRICS", (*registry.METRICS[:3], IOU, *registry.METRICS[3:]))
    monkeypatch.setitem(
        metrics.COUNT_FORMULAS,
        "iou",
        lambda tp, fp, fn, tn, eps: metrics.ratio(tp, tp + fp + fn, eps),
    )


def counts_of(seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).integers(0, 40, (12, 4))
    c[:, 3] += 1000
    return c


def store(url: str, outcomes: list[TestResult], protocol: Protocol | None = None) -> list[int]:
    protocol = protocol or Protocol(epochs=1, image_size=64)
    with session_scope(url) as session:
        return [
            finished_run(
                session, spec, outcome_of(test), protocol=protocol, sweep="reg", dataset=DATASET
            )
            for spec, test in zip(SPECS[: len(outcomes)], outcomes, strict=True)
        ]


def test_a_metric_added_in_one_place_reaches_every_surface(with_iou, db_url):
    c = [counts_of(k) for k in range(3)]
    ids = store(db_url, [counted_result(x, per_volume=6) for x in c])
    iou = [100 * np.mean([tp / (tp + fp + fn) for tp, fp, fn, _ in x.tolist()]) for x in c]
    with session_scope(db_url) as session:
        board = {r["id"]: r for r in queries.leaderboard(session)}
        frame = frames.results_frame(session, sweep="reg")
        again = frames.results_frame(session, sweep="reg", metric_mode="authors-2020")
        report = build_report(session, "reg", n_resamples=50)
    assert [board[i]["iou"] for i in ids] == pytest.approx(iou)
    assert list(frame["iou"]) == pytest.approx(iou)
    assert again["iou"].notna().all()  # recomputed from the counts in the other mode
    table = tables.table2(frame)
    assert ("random", "lung-segmentation", "iou") in table.columns
    assert "random lung-segmentation IoU (%)" in tables.render(table, "markdown")
    assert r"IoU (\%)" in tables.render(table, "latex") and "iou" in tables.render(table, "csv")
    assert [r["iou"] for r in sorted(report["runs"], key=lambda r: r["id"])] == pytest.approx(iou)
    assert report["units"]["iou"] == "percent"
    assert "| IoU (%) |" in render(report, "markdown") and r"IoU (\%)" in render(report, "latex")
    assert IOU.help in render(report, "markdown")  # the report explains each column
    out = CliRunner().invoke(load_commands(), ["status", "--db", db_url, "--wide"],
                             env={"COLUMNS": "250"})  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "IoU %" in out.stdout and f"{iou[0]:.2f}" in out.stdout


def test_a_missed_volume_never_has_a_better_mean_hd95_than_a_wrong_blob(db_url):
    """Three test volumes of 4 slices at 1 x 1 x 2 mm; two runs predict volumes 0 and 1
    exactly; in volume 2 one predicts nothing, the other a wrong blob in the far corner.
    Before, the miss left HD95 undefined there and its mean over 2 volumes (0 mm) beat
    the blob's; now it scores the volume's diagonal and the mean covers all 3."""
    n, size = 12, 32
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, size, size)).astype(np.float32)
    truth = np.zeros((n, size, size), np.uint8)
    truth[:, 4:12, 4:12] = 1
    split = Split(images, truth, truth, np.repeat([0, 1, 2], 4), np.tile(np.arange(4), 3))
    spacing = [(1.0, 1.0, 2.0)] * 3
    missed = truth.copy()
    missed[8:] = 0
    blob = missed.copy()
    blob[8:, 24:30, 24:30] = 1
    results = {}
    for name, pred in (("missed", missed), ("blob", blob)):
        results[name], _ = evaluate(MaskOracle(images, pred), split, spacing=spacing)
    diagonal = math.sqrt(32**2 + 32**2 + 8**2)
    assert results["missed"].volumes[2].hd95 == pytest.approx(diagonal)
    assert results["missed"].hd95 == pytest.approx(diagonal / 3)
    assert 0 < results["blob"].volumes[2].hd95 < diagonal
    assert results["missed"].hd95 > results["blob"].hd95
    assert results["missed"].hd95_volumes == results["missed"].nsd_volumes == 3
    ids = store(db_url, [results["missed"], results["blob"]])
    with session_scope(db_url) as session:
        board = {r["id"]: r for r in queries.leaderboard(session)}
        report = build_report(session, "reg", n_resamples=50)
    assert board[ids[0]]["hd95"] > board[ids[1]]["hd95"]
    assert (board[ids[0]]["hd95_volumes"], board[ids[0]]["test_volumes"]) == (3, 3)
    runs = {r["id"]: r for r in report["runs"]}
    assert (runs[ids[0]]["hd95_volumes"], runs[ids[0]]["nsd_volumes"]) == (3, 3)
    assert runs[ids[0]]["test_volumes"] == 3
    doc = json.loads(json.dumps(report, default=float))
    assert doc["runs"][0]["hd95_volumes"] == 3


def test_a_mean_covering_fewer_volumes_says_so():
    hd95 = registry.get("hd95")
    assert hd95.cell({"hd95": 101.351, "hd95_volumes": 2, "test_volumes": 3}) == "101.35 (2/3)"
    assert hd95.cell({"hd95": 4.0, "hd95_volumes": 3, "test_volumes": 3}) == "4.00"
    assert hd95.cell({"hd95": None}) == "–"
    assert registry.get("dice").cell({"dice": 90.0, "test_volumes": 3}) == "90.00"

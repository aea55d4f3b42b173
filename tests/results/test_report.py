"""`segbench report` on a sweep trained in this test (generated data, 64 px, one epoch,
in process through worker.queue.service.train_in_process): every key of the JSON
contract, the Markdown and LaTeX forms, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from db.grid import RunSpec
from db.protocol import Protocol
from worker.cli import load_commands
from worker.results import stats

SWEEP = "tiny-report"
SPECS = [
    RunSpec(x, a, "resnet18", "random")
    for x in ("lung-segmentation", "lesion-segmentation-a")
    for a in ("linknet", "unet", "fpn")
]
PROTOCOL = Protocol(epochs=1, image_size=64, batch_size=4)
pytestmark = pytest.mark.slow

RUN_KEYS = {"id", "experiment", "architecture", "encoder", "init", "seed", "dice", "dice_ci",
            "nsd", "hd95", "volumes"}  # fmt: skip


def cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory) -> dict:
    import torch

    from worker.queue import service

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{tmp / 'segbench.db'}"
    ids = [
        service.train_in_process(
            spec, PROTOCOL, data_dir=synthetic_data, artifacts_dir=tmp / str(i), sweep=SWEEP,
            url=url,
        ).run_id
        for i, spec in enumerate(SPECS)
    ]  # fmt: skip
    torch.set_num_threads(threads)
    return {"url": url, "ids": ids}


def report_json(url: str, *extra: str) -> dict:
    result = cli("report", "--sweep", SWEEP, "--db", url, "--format", "json",
                 "--resamples", "300", *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_report_json_has_every_key_of_the_contract(trained):
    from db.queries import slice_results
    from db.session import session_scope

    doc = report_json(trained["url"])
    assert {"sweep", "protocol", "runs", "ranking", "pairwise"} <= set(doc)
    assert doc["sweep"] == SWEEP
    assert doc["protocol"]["epochs"] == 1 and doc["protocol"]["image_size"] == 64
    assert doc["resampled"] == "volumes+slices"  # 2 test volumes
    assert doc["synthetic"] is True
    assert sorted(r["id"] for r in doc["runs"]) == sorted(trained["ids"])
    with session_scope(trained["url"]) as session:
        rows = slice_results(session, run_ids=trained["ids"])
    for run in doc["runs"]:
        assert set(run) >= RUN_KEYS
        counts = np.array([[s["tp"], s["fp"], s["fn"], s["tn"]] for s in rows
                           if s["run_id"] == run["id"]])  # fmt: skip
        # Dice in percent: the per-slice mean recomputed here from the stored counts
        assert run["dice"] == pytest.approx(100 * stats.slice_dice(counts).mean())
        lo, hi = run["dice_ci"]
        assert lo <= run["dice"] <= hi and lo >= 0 and hi <= 100
        assert run["seed"] == 0
        assert run["volumes"], run
        for v in run["volumes"]:
            assert {"volume", "dice", "nsd", "hd95"} <= set(v)
            assert 0 <= v["dice"] <= 100
    assert len(doc["ranking"]) == len(SPECS)
    for e in doc["ranking"]:
        assert {"id", "median_rank", "rank_ci"} <= set(e)
        assert 1 <= e["rank_ci"][0] <= e["median_rank"] <= e["rank_ci"][1] <= 3
    assert len(doc["pairwise"]) == 2 * 3  # 3 pairs in each of the 2 experiments
    for p in doc["pairwise"]:
        assert {"a", "b", "difference", "ci", "p_holm"} <= set(p)
        assert p["ci"][0] <= p["difference"] <= p["ci"][1]
        assert 0 <= p["p_holm"] <= 1
    assert len(doc["kendall"]["modes"]) == 2
    assert doc["kendall"]["experiments"][0]["cells"] == 3
    questions = [c["question"] for c in doc["cd"]]
    assert "architecture in lung-segmentation" in questions
    arch = next(c for c in doc["cd"] if c["question"] == "architecture in lung-segmentation")
    assert "skipped" in arch  # one encoder x init block: too few for Friedman


def test_report_top_limits_the_pairs(trained):
    doc = report_json(trained["url"], "--top", "2")
    assert len(doc["pairwise"]) == 2
    assert "2 best" in doc["pairwise_rule"]


def test_report_markdown_and_latex(trained, tmp_path):
    md = cli("report", "--sweep", SWEEP, "--db", trained["url"], "--resamples", "200")
    assert md.exit_code == 0, md.output
    assert "SYNTHETIC" in md.stdout and "## Ranking stability" in md.stdout
    assert "| run | experiment | model | Sens (%) | Spec (%) | Dice (%) | 95% CI |" in md.stdout
    assert "cluster-robust t interval" in md.stdout  # the interval's method, named
    out = tmp_path / "report.tex"
    tex = cli("report", "--sweep", SWEEP, "--db", trained["url"], "--format", "latex",
              "--resamples", "200", "--output", str(out))  # fmt: skip
    assert tex.exit_code == 0, tex.output
    assert r"\begin{tabular}" in out.read_text()


def test_report_bad_input_is_one_sentence(trained, synthetic_data):
    from db import jobs
    from db.session import session_scope
    from worker.data import dataset_info

    with session_scope(trained["url"]) as session:
        jobs.submit(session, specs=SPECS[:1], protocol=PROTOCOL, sweep="queued-only",
                    data_dir=str(synthetic_data), dataset=dataset_info(synthetic_data))  # fmt: skip
    for args, words in (
        (["--sweep", "queued-only"], "has no succeeded run yet"),
        (["--sweep", "nope"], "No sweep named 'nope'"),
        (["--sweep", SWEEP, "--format", "yaml"], "Unknown format"),
        (["--sweep", SWEEP, "--top", "1"], "--top must be at least 2"),
        (["--sweep", SWEEP, "--metric-mode", "odd"], "metric mode"),
    ):
        result = cli("report", "--db", trained["url"], *args)
        assert result.exit_code == 1, result.output
        assert words in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_add_seeds_queues_the_same_cells_with_other_seeds(trained):
    from db.queries import queue_counts, report_runs
    from db.session import session_scope
    from worker.queue import broker, service

    best = trained["ids"][:2]
    done = service.add_seeds(trained["url"], best, [1, 2])
    assert done.sweeps == [SWEEP]  # seeds are a grid dimension of the same sweep
    assert len(done.runs) == len(done.created) == 4
    again = service.add_seeds(trained["url"], best, [1])  # idempotent
    assert set(again.runs) <= set(done.runs) and again.created == []
    with session_scope(trained["url"]) as session:
        assert queue_counts(session, sweep=SWEEP)["queued"] == 4
        # the trained runs are untouched
        assert len(report_runs(session, sweep=SWEEP)) == len(SPECS)
    broker.configure(trained["url"])
    assert broker.queue_depth() == 4
    with pytest.raises(ValueError, match="whole number"):
        service.add_seeds(trained["url"], best, [-1])

"""`segbench export table` never averages runs of different protocols or data into
one cell, and states its std convention (ddof) — the paper's ddof = 0 in the
authors-2020 metric mode. Made-up results written through db.jobs (no training)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from db import jobs, protocol
from db.grid import RunSpec
from db.protocol import Protocol, RunOutcome, SliceCounts
from db.session import session_scope
from worker.cli import load_commands
from worker.training.metrics import summarize

SPECS = [RunSpec("lung-segmentation", "unet", e, "random") for e in ("resnet18", "vgg11", "vgg13")]
SYNTHETIC = {"name": "medseg-synthetic", "kind": "medseg", "synthetic": True, "manifest_hash": "m"}
REAL = {"name": "medseg", "kind": "medseg", "synthetic": False, "manifest_hash": "r"}


def cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def finish(session, run_id: int, tp: int) -> float:
    counts = np.array([[tp + i, 5 + i, 7, 4000] for i in range(8)])
    s = summarize(counts, "standard")
    jobs.claim(session, run_id=run_id, worker="pytest")
    jobs.finish(
        session,
        run_id=run_id,
        outcome=RunOutcome(
            test=protocol.TestResult(
                slices=[SliceCounts(i, i // 4, i % 4, *map(int, c)) for i, c in enumerate(counts)],
                metric_mode="standard",
                **s,
            ),
            best_epoch=1, best_val_loss=0.2, parameters_m=10.0, train_seconds_per_epoch=1.0,
            val_seconds_per_epoch=0.1, checkpoint_dir="x", checkpoint_sha256="ab" * 32,
        ),
    )  # fmt: skip
    return s["dice"]


@pytest.fixture
def url(tmp_path) -> str:
    """Sweep a (2 epochs) and b (3 epochs) on generated data, c (2 epochs) on real data."""
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    for name, epochs, dataset, tp in (("a", 2, SYNTHETIC, 50), ("b", 3, SYNTHETIC, 90),
                                      ("c", 2, REAL, 120)):  # fmt: skip
        with session_scope(url) as session:
            ids = jobs.submit(session, specs=SPECS, protocol=Protocol(epochs=epochs, image_size=64),
                              sweep=name, data_dir="d", dataset=dataset)  # fmt: skip
            for k, run_id in enumerate(ids):
                finish(session, run_id, tp + 10 * k)
    return url


def test_table_refuses_to_average_protocols_or_real_and_generated_data(url):
    for args in ([], ["--experiment", "lung-segmentation"]):
        result = cli("export", "table", "--db", url, *args)
        assert result.exit_code == 1, result.output
        assert "different protocols or data (a, b, c)" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""
    one = cli("export", "table", "--db", url, "--sweep", "c")
    assert one.exit_code == 0, one.output
    assert "SYNTHETIC" not in one.stdout


def test_std_convention_is_stated_and_the_papers_in_authors_2020(url):
    read = lambda text: pd.read_csv(io.StringIO(text), comment="#", index_col=[0, 1])  # noqa: E731
    col = "random_lung-segmentation_dice"
    for mode, ddof in (("standard", 1), ("authors-2020", 0)):
        result = cli("export", "table", "--db", url, "--sweep", "a", "--format", "csv",
                     "--metric-mode", mode)  # fmt: skip
        assert result.exit_code == 0, result.output
        notes = [line for line in result.stdout.splitlines() if line.startswith("# ")]
        assert any(f"{mode} metrics" in n and f"ddof={ddof}" in n for n in notes), notes
        t = read(result.stdout)
        encoders = t.loc[[("unet", e) for e in ("resnet18", "vgg11", "vgg13")], col]
        # numpy's std with the stated ddof, from the table's own cells
        assert t.loc[("unet", "std"), col] == pytest.approx(np.std(encoders, ddof=ddof), abs=1e-3)
    forced = cli("export", "table", "--db", url, "--sweep", "a", "--ddof", "0")
    assert forced.exit_code == 0 and "ddof=0 (population std, as the paper)" in forced.stdout
    bad = cli("export", "table", "--db", url, "--sweep", "a", "--ddof", "2")
    assert bad.exit_code == 1 and "ddof must be 0 or 1" in bad.stderr

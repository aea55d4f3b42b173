"""`segbench export table` never averages runs of different protocols or data into
one cell, and states its std convention (ddof) — the paper's ddof = 0 in the
authors-2020 metric mode. Made-up results written through db.jobs (no training)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from db.grid import RunSpec
from db.protocol import Protocol, RunOutcome
from db.session import session_scope
from tests.support.runs import counted_result, finished_run, outcome_of
from worker.cli import load_commands

SPECS = [RunSpec("lung-segmentation", "unet", e, "random") for e in ("resnet18", "vgg11", "vgg13")]
SYNTHETIC = {"name": "medseg-synthetic", "kind": "medseg", "synthetic": True, "manifest_hash": "m"}
REAL = {"name": "medseg", "kind": "medseg", "synthetic": False, "manifest_hash": "r"}


def cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def outcome(tp: int) -> RunOutcome:
    counts = np.array([[tp + i, 5 + i, 7, 4000] for i in range(8)])
    return outcome_of(counted_result(counts, per_volume=4), parameters_m=10.0)


@pytest.fixture
def url(tmp_path) -> str:
    """Sweep a (2 epochs) and b (3 epochs) on generated data, c (2 epochs) on real data."""
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    for name, epochs, dataset, tp in (("a", 2, SYNTHETIC, 50), ("b", 3, SYNTHETIC, 90),
                                      ("c", 2, REAL, 120)):  # fmt: skip
        with session_scope(url) as session:
            for k, spec in enumerate(SPECS):
                finished_run(session, spec, outcome(tp + 10 * k), sweep=name, dataset=dataset,
                             protocol=Protocol(epochs=epochs, image_size=64))  # fmt: skip
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

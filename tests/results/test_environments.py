"""Runs that differ only in where they trained (thread count, device) are never pooled
silently: over seeds they stay apart, and compare, the report and Table 2 say so in one
sentence (worker.results.environments)."""

from __future__ import annotations

import pandas as pd
import pytest

from db import queries
from db.grid import RunSpec
from db.protocol import Protocol, environment_key
from db.session import session_scope
from tests.support.runs import finished_run, make_outcome
from worker.results import environments
from worker.results.compare import compare_runs
from worker.results.report import build_report
from worker.results.seeds import over_seeds

CELL = RunSpec("lung-segmentation", "unet", "resnet18", "random")
CPU = {"device": "cpu", "device_model": "Test CPU", "threads": 2, "torch": "2.14.1",
       "math": "ieee-fp32", "deterministic": False, "machine": "x86_64"}  # fmt: skip


@pytest.fixture
def db_url(sqlite_db):
    return sqlite_db


def trained_in(url: str, seed: int, environment: dict | None, dice: float) -> int:
    """A finished run of CELL that trained in `environment`."""
    with session_scope(url) as s:
        return finished_run(
            s, CELL, make_outcome(dice=dice), config={"device": "cpu"}, environment=environment,
            worker="w", protocol=Protocol(epochs=2, image_size=64), sweep="envs", seed=seed,
        )  # fmt: skip


def test_seeds_of_two_thread_counts_are_pooled_apart_and_said(db_url):
    one = trained_in(db_url, 0, {**CPU, "threads": 1}, 90.0)
    two = trained_in(db_url, 1, CPU, 92.0)
    same = trained_in(db_url, 2, CPU, 94.0)
    with session_scope(db_url) as s:
        board = pd.DataFrame(queries.leaderboard(s))
        sweeps = pd.DataFrame(queries.sweeps(s))
        report = build_report(s, "envs", n_resamples=50)
        compared = compare_runs(s, one, two, n_resamples=50)
        alike = compare_runs(s, two, same, n_resamples=50)
    pooled = over_seeds(board, sweeps)
    # one row per environment: seeds 1 and 2 together, seed 0 alone
    assert sorted(pooled["n"]) == [1, 2]
    assert set(pooled["environment"]) == {
        environment_key({**CPU, "threads": 1}),
        environment_key(CPU),
    }
    # the report and compare name the two environments
    assert report["environment_note"] and "2 environments" in report["environment_note"]
    assert "Test CPU, 1 threads" in report["environment_note"]
    assert sorted(len(e["runs"]) for e in report["environments"]) == [1, 2]
    assert compared["environment_note"] and "1 threads" in compared["environment_note"]
    assert alike["environment_note"] is None


def test_a_run_without_a_recorded_environment_is_not_pooled_with_one_that_has_it(db_url):
    trained_in(db_url, 0, None, 90.0)
    trained_in(db_url, 1, CPU, 92.0)
    with session_scope(db_url) as s:
        board = pd.DataFrame(queries.leaderboard(s))
        sweeps = pd.DataFrame(queries.sweeps(s))
    pooled = over_seeds(board, sweeps)
    assert sorted(pooled["n"]) == [1, 1]
    assert environments.UNRECORDED in set(pooled["environment"])


def test_export_table_says_when_runs_of_several_environments_meet(db_url, monkeypatch):
    from typer.testing import CliRunner

    from worker.cli import app

    trained_in(db_url, 0, {**CPU, "device": "cuda", "device_model": "NVIDIA H200"}, 90.0)
    trained_in(db_url, 1, CPU, 92.0)
    out = CliRunner().invoke(app, ["export", "table", "--db", db_url, "--format", "markdown"])
    assert out.exit_code == 0, out.output
    assert "2 environments" in out.output and "NVIDIA H200" in out.output


def test_describe_names_what_matters():
    text = environments.describe(
        {
            **CPU,
            "device": "cuda",
            "device_model": "NVIDIA H200",
            "math": "tf32",
            "cudnn_benchmark": True,
            "cuda_graphs": True,
            "earlier": [CPU],
        }  # fmt: skip
    )
    assert text == (
        "NVIDIA H200, tf32, cuDNN benchmark, CUDA graphs, torch 2.14.1, resumed after 1 "
        "other environment(s)"
    )
    assert environments.describe(None) == "environment not recorded"

"""`segbench status` and the CLI's one vocabulary: the experiment names status prints
(db.grid.EXPERIMENT_ALIASES) work in every filter; status filters by sweep, experiment
and state, shows a sweep column when runs of several sweeps are shown, and says what
waits for a worker only when something does. SQLite, in process: about 3 s."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db import jobs
from db.grid import EXPERIMENT_ALIASES, EXPERIMENTS, SHORT_EXPERIMENT, expand
from db.protocol import Protocol
from db.session import session_scope
from worker.cli import load_commands
from worker.cli.workers import no_worker_line

DATASET = {"name": "synthetic-test", "kind": "synthetic", "synthetic": True, "manifest_hash": "m"}


def segbench(*args: str):
    return CliRunner().invoke(load_commands(), list(args), catch_exceptions=False)


@pytest.fixture
def db(sqlite_db):
    return sqlite_db


def submit(url: str, sweep: str, **filters) -> list[int]:
    with session_scope(url) as session:
        return jobs.submit(
            session,
            specs=expand(**filters),
            protocol=Protocol(epochs=2, image_size=64),
            sweep=sweep,
            data_dir="data",
            dataset=DATASET,
        )


@pytest.fixture
def two_sweeps(db) -> dict[str, list[int]]:
    """Sweep `alpha`: 2 lung + 2 lesion-b runs, one lung run failed; sweep `beta`:
    1 lesion-a run, claimed by a worker that is not alive."""
    cell = {"architectures": ["unet", "fpn"], "encoders": ["resnet18"], "inits": ["random"]}
    alpha = submit(db, "alpha", experiments=["lung-segmentation", "lesion-segmentation-b"], **cell)
    cell["architectures"] = ["unet"]
    beta = submit(db, "beta", experiments=["lesion-segmentation-a"], **cell)
    with session_scope(db) as session:
        jobs.claim(session, run_id=alpha[0], worker="gone/1")
        jobs.fail(session, run_id=alpha[0], reason="boom")
        jobs.claim(session, run_id=beta[0], worker="gone/2")
    return {"alpha": alpha, "beta": beta}


def test_the_alias_table_covers_every_experiment_once():
    assert sorted(EXPERIMENT_ALIASES.values()) == sorted(EXPERIMENTS)
    assert {SHORT_EXPERIMENT[x] for x in EXPERIMENTS} == set(EXPERIMENT_ALIASES)
    assert not set(EXPERIMENT_ALIASES) & set(EXPERIMENTS)


@pytest.mark.parametrize("short", sorted(EXPERIMENT_ALIASES))
def test_every_filter_takes_the_short_names_status_prints(db, two_sweeps, short):
    full = EXPERIMENT_ALIASES[short]
    # grid: the same selection under both names
    by_short = json.loads(segbench("grid", "-x", short, "-a", "unet", "--format", "json").stdout)
    by_full = json.loads(segbench("grid", "-x", full, "-a", "unet", "--format", "json").stdout)
    assert by_short == by_full and {r["experiment"] for r in by_short} == {full}
    # status: the names it prints are the names it takes
    rows = json.loads(segbench("status", "-x", short, "--db", db, "--format", "json").stdout)
    assert rows and {r["experiment"] for r in rows} == {full}
    table = segbench("status", "-x", short, "--db", db).stdout
    assert f" {short} " in table
    # export table and compare get as far as the data: the name itself is accepted
    for args in (("export", "table", "-x", short), ("compare", "--sweep", "alpha",
                                                     "--experiment", short)):  # fmt: skip
        result = segbench(*args, "--db", db)
        assert "Unknown experiment" not in result.output, result.output


def test_an_unknown_experiment_is_one_sentence_listing_both_spellings(db):
    for args in (("grid",), ("status", "--db", db), ("export", "table", "--db", db)):
        result = segbench(*args, "-x", "lungs")
        assert result.exit_code == 1
        text = result.output.strip()
        assert text.count("\n") == 0 and text.startswith("error: Unknown experiment 'lungs'")
        assert "lung-segmentation (lung)" in text


def test_status_filters_by_sweep_experiment_and_state(db, two_sweeps):
    def ids(*args: str) -> list[int]:
        result = segbench("status", *args, "--db", db, "--format", "json")
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.stdout)]

    alpha, beta = two_sweeps["alpha"], two_sweeps["beta"]
    assert ids() == alpha + beta
    assert ids("--sweep", "beta") == beta
    assert ids("--status", "failed") == [alpha[0]]
    assert ids("--status", "running", "--status", "failed") == [alpha[0], beta[0]]
    assert ids("-x", "lung", "--status", "queued") == [alpha[1]]
    assert ids("--sweep", "alpha", "-x", "lesion-segmentation-b") == alpha[2:]
    result = segbench("status", "--status", "done", "--db", db)
    assert result.exit_code == 1 and "Unknown status 'done'" in result.output


def test_status_shows_a_sweep_column_for_several_sweeps_and_fits_80_columns(db, two_sweeps):
    table = segbench("status", "--db", db).stdout
    header = next(line for line in table.splitlines() if line.startswith("id"))
    assert header.split()[:3] == ["id", "sweep", "exp"]
    rows = [line.split() for line in table.splitlines() if line[:3].strip().isdigit()]
    assert [r[1] for r in rows] == ["alpha"] * 4 + ["beta"]
    assert max(len(line) for line in table.splitlines()) <= 80
    one = segbench("status", "--sweep", "alpha", "--db", db).stdout
    assert "Runs of sweep alpha" in one and "sweep" not in one.split("\n")[1]
    shown = segbench("status", "--status", "queued", "--db", db).stdout
    assert "shown: 3 of 5 run(s)" in shown


def test_status_says_what_waits_for_a_worker_only_when_something_does(db, two_sweeps):
    def said(*args: str) -> str:  # the lines as one, as rich wraps them at 80 columns
        return " ".join(segbench("status", *args, "--db", db).stdout.split())

    # beta: nothing queued, one run held by a dead worker
    beta = said("--sweep", "beta")
    assert "queued run(s) wait" not in beta
    assert "1 run(s) marked running go back to the queue when their lease expires" in beta
    alpha = said("--sweep", "alpha")
    assert "3 queued run(s) wait for one" in alpha and "marked running" not in alpha
    assert no_worker_line({"queued": 2, "running": 1}) == (
        "No worker is alive: 2 queued run(s) wait for one; 1 run(s) marked running go back "
        "to the queue when their lease expires; start one with `segbench worker`."
    )

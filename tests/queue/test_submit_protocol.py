"""Presets, the override rule, seeds as a grid dimension and add_seeds, through
`segbench submit` and worker.queue.service against a real SQLite database and the
embedded broker (no worker)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db import jobs
from db.errors import InvalidInput, UnknownRun
from db.models import Run, Sweep
from db.presets import PRESETS
from db.protocol import Protocol
from db.session import session_scope
from worker.queue import service

CELL = ["-x", "lung-segmentation", "-a", "unet", "-e", "resnet18", "-i", "random"]


def submit_json(stack, *args):
    result = stack.cli("submit", *CELL, *args, "--format", "json")
    return json.loads(result.stdout)


def rows(stack):
    with session_scope(stack.db_url) as session:
        return [
            (r.id, r.sweep_id, r.seed, r.protocol_hash, r.config["protocol"]["seed"])
            for r in session.scalars(select(Run).order_by(Run.id))
        ]


def test_authors_2020_preset_is_stored_resolved_and_printed(embedded, synthetic_data):
    doc = submit_json(
        embedded, "--preset", "authors-2020", "--image-size", "64",
        "--data", str(synthetic_data), "--sweep", "a20",
    )  # fmt: skip
    assert set(doc) == {"sweep", "runs", "protocol"}
    expected = {**PRESETS["authors-2020"], "image_size": 64}  # the option overrides
    assert {k: doc["protocol"][k] for k in expected} == expected
    assert "seed" not in doc["protocol"]  # per run, not the sweep's
    with session_scope(embedded.db_url) as session:
        sweep = session.scalar(select(Sweep).where(Sweep.name == "a20"))
        assert sweep.protocol == doc["protocol"]
        assert sweep.protocol_hash == Protocol(**expected).hash()
        run = session.scalar(select(Run))
        assert run.epochs == 100


def test_explicit_options_override_the_preset(embedded, synthetic_data):
    doc = submit_json(
        embedded, "--preset", "authors-2020", "--epochs", "3", "--image-size", "64",
        "--loss", "soft-dice", "--precision", "bf16", "--data", str(synthetic_data),
    )  # fmt: skip
    p = doc["protocol"]
    assert (p["epochs"], p["loss"], p["train_precision"]) == (3, "soft-dice", "bf16")
    # what was not given comes from the preset
    assert (p["metric_mode"], p["augment_mode"], p["test_resize"]) == (
        "authors-2020",
        "authors-code",
        "pil-antialias",
    )


def test_no_preset_is_the_default_preset(embedded, synthetic_data):
    doc = submit_json(embedded, "--image-size", "64", "--data", str(synthetic_data))
    assert doc["protocol"] == Protocol(image_size=64).shared_dict()
    assert {k: doc["protocol"][k] for k in PRESETS["default"] if k != "image_size"} == {
        k: v for k, v in PRESETS["default"].items() if k != "image_size"
    }


def test_unknown_preset_fails_in_one_sentence_and_writes_nothing(embedded, synthetic_data):
    result = embedded.cli(
        "submit", *CELL, "--preset", "nnunet", "--data", str(synthetic_data), check=False
    )
    assert result.exit_code == 1
    assert (
        "Unknown preset 'nnunet'; expected one of: default, paper, authors-2020." in result.output
    )
    assert embedded.runs() == {}


def test_seeds_make_one_run_per_cell_and_seed_sharing_the_protocol(embedded, synthetic_data):
    args = ["--epochs", "2", "--image-size", "64", "--data", str(synthetic_data), "--sweep", "s"]
    doc = submit_json(embedded, *args, "--seed", "0", "--seed", "1", "--seed", "2")
    assert len(doc["runs"]) == 3
    found = rows(embedded)
    assert [r[2] for r in found] == [0, 1, 2]
    assert [r[4] for r in found] == [0, 1, 2]  # each run's config has its own seed
    assert len({r[3] for r in found}) == 1  # one protocol hash: seeds aggregate
    # submitting again with an overlapping seed list adds only the new seed
    again = submit_json(embedded, *args, "--seed", "2", "--seed", "3")
    assert again["runs"][0] == doc["runs"][2] and len(rows(embedded)) == 4
    # a claimed run trains with its own seed
    with session_scope(embedded.db_url) as session:
        claimed = jobs.claim(session, run_id=doc["runs"][1], worker="w")
    assert claimed.protocol.seed == 1 and claimed.protocol_hash == found[0][3]


def test_add_seeds_requeues_cells_in_their_sweep_skipping_existing(embedded, synthetic_data):
    ids = embedded.submit(
        "-x", "lung-segmentation", "-a", "unet", "-a", "fpn", "-e", "resnet18", "-i", "random",
        "--seed", "0", data=synthetic_data, sweep="top",
    )  # fmt: skip
    other = embedded.submit(*CELL, data=synthetic_data, sweep="elsewhere")
    result = service.add_seeds(embedded.db_url, [ids[0]], [0, 1, 2], broker_url=embedded.broker_url)
    assert result.runs[0] == ids[0]  # seed 0 of that cell existed already
    assert len(result.created) == 2 == len(result.published)
    found = {r[0]: r for r in rows(embedded)}
    new = [found[i] for i in result.created]
    assert sorted(r[2] for r in new) == [1, 2]
    assert {r[1] for r in new} == {found[ids[0]][1]}  # in the sweep of that run
    assert {r[3] for r in new} == {found[ids[0]][3]}  # with its protocol
    again = service.add_seeds(embedded.db_url, [ids[0]], [1, 2], broker_url=embedded.broker_url)
    assert again.created == [] and sorted(again.runs) == sorted(result.created)
    assert len(rows(embedded)) == 2 + 1 + 2 and other[0] in found


def test_add_seeds_refuses_unknown_runs_and_empty_seed_lists(embedded, synthetic_data):
    with pytest.raises(UnknownRun, match="No run with id 99"):
        service.add_seeds(embedded.db_url, [99], [1], broker_url=embedded.broker_url)
    with pytest.raises(InvalidInput, match="at least one seed"):
        service.add_seeds(embedded.db_url, [1], [], broker_url=embedded.broker_url)

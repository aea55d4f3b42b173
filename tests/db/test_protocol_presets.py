"""Protocol fields, the hash (the seed excluded), old stored protocols, the presets and
their override rule; and a submit into a sweep stored under an older hash."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import insert, select

from db import jobs
from db.errors import SweepConflict
from db.grid import RunSpec
from db.models import Run, Sweep, utcnow
from db.presets import (
    PRESET_DESCRIPTIONS,
    PRESETS,
    check_seeds,
    matching_presets,
    protocol_line,
    resolve,
)
from db.protocol import Protocol, ProtocolError
from db.session import session_scope
from tests.support.runs import DATASET

CELL = RunSpec("lung-segmentation", "unet", "resnet18", "random")


def test_presets_are_pinned():
    text = {
        "epochs": 200,
        "image_size": 512,
        "batch_size": 2,
        "lr": 1e-3,
        "augment": True,
        "augment_mode": "paper",
        "train_precision": "fp32",
        "test_resize": "standard",
        "deterministic": False,
        "seed_streams": "per-purpose",
    }
    assert {
        "default": {**text, "loss": "soft-dice", "metric_mode": "standard"},
        "paper": {**text, "loss": "soft-dice-per-image", "metric_mode": "paper-text"},
        "authors-2020": {
            "epochs": 100,
            "image_size": 512,
            "batch_size": 2,
            "lr": 1e-3,
            "loss": "authors-2020-dice",
            "metric_mode": "authors-2020",
            "augment": True,
            "augment_mode": "authors-code",
            "train_precision": "fp32",
            "test_resize": "pil-antialias",
            "deterministic": False,
            "seed_streams": "per-purpose",
        },
    } == PRESETS
    assert set(PRESET_DESCRIPTIONS) == set(PRESETS)
    # the default preset is segbench's default protocol; the paper's text differs from it
    # on exactly the two documented points
    assert resolve("default") == resolve(None) == Protocol()
    differ = {k for k, v in resolve("paper").to_dict().items() if getattr(Protocol(), k) != v}
    assert differ == {"loss", "metric_mode"}
    assert resolve("authors-2020").metric_eps == 1e-6
    assert matching_presets(resolve("authors-2020")) == ["authors-2020"]


def test_an_explicit_option_overrides_the_preset_and_none_does_not():
    p = resolve("authors-2020", epochs=3, loss=None, train_precision="bf16")
    assert (p.epochs, p.loss, p.train_precision) == (3, "authors-2020-dice", "bf16")
    assert p.test_resize == "pil-antialias" and p.augment_mode == "authors-code"
    assert resolve(None, epochs=7) == Protocol(epochs=7)
    assert matching_presets(p) == []
    assert "bf16 training" in protocol_line(p) and "preset" not in protocol_line(p)
    with pytest.raises(ProtocolError, match="Unknown preset 'fast'"):
        resolve("fast")
    with pytest.raises(ProtocolError, match="Unknown training precision 'fp16'"):
        resolve("paper", train_precision="fp16")
    with pytest.raises(ProtocolError, match="Unknown test resize"):
        resolve("paper", test_resize="lanczos")


def test_the_hash_covers_everything_but_the_seed():
    base = Protocol()
    shared = {k: v for k, v in base.to_dict().items() if k != "seed"}
    expected = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]
    assert base.hash() == expected
    assert Protocol(seed=5).hash() == base.hash()
    assert base.shared_dict() == shared
    for change in (
        {"train_precision": "bf16"},
        {"test_resize": "pil-antialias"},
        {"loss": "authors-2020-dice"},
        {"loss": "soft-dice-per-image"},
        {"metric_mode": "authors-2020"},
        {"train_precision": "tf32"},
        {"deterministic": True},
        {"seed_streams": "shared"},
    ):
        assert Protocol(**change).hash() != base.hash(), change


def test_an_old_stored_protocol_loads_with_fp32_and_the_renamed_loss():
    old = {
        "epochs": 100,
        "image_size": 512,
        "batch_size": 2,
        "lr": 0.001,
        "loss": "authors-dice",
        "metric_mode": "standard",
        "seed": 3,
        "augment": True,
        "augment_mode": "paper",
    }
    p = Protocol.from_dict(old)
    assert (p.train_precision, p.test_resize, p.loss, p.seed) == (
        "fp32",
        "standard",
        "smp-legacy-dice",
        3,
    )
    # it ran with the streams of its time, and nothing asked for deterministic kernels
    assert (p.seed_streams, p.deterministic) == ("shared", False)
    assert Protocol.from_dict({**old, "seed_streams": "per-purpose"}).seed_streams == "per-purpose"


def test_each_seed_has_streams_of_its_own():
    """per-purpose streams: no stream seed of one seed is any stream seed of another
    (shared streams made seed s's augmentation stream seed s + 1's shuffle stream)."""
    purposes = ("init", "shuffle", "augment")
    seen = {}
    for seed in range(500):
        p = Protocol(seed=seed)
        for purpose in purposes:
            value = p.stream_seed(purpose)
            assert 0 <= value < 2**63
            assert value not in seen, (seed, purpose, seen.get(value))
            seen[value] = (seed, purpose)
    shared = Protocol(seed=4, seed_streams="shared")
    assert [shared.stream_seed(k) for k in purposes] == [4, 4, 5]
    assert Protocol(seed=3, seed_streams="shared").stream_seed("augment") == shared.stream_seed(
        "shuffle"
    )
    with pytest.raises(ProtocolError, match="Unknown random stream 'dropout'"):
        Protocol().stream_seed("dropout")
    with pytest.raises(ProtocolError, match="deterministic must be true or false"):
        Protocol(deterministic="yes")


def test_seeds_are_checked_and_deduplicated():
    assert check_seeds(None) == [0]
    assert check_seeds([2, 0, 2]) == [2, 0]
    with pytest.raises(ProtocolError, match="seed must be a whole number"):
        check_seeds([-1])
    for bad in (True, 1.5, "1"):  # refused, never rounded or parsed
        with pytest.raises(ProtocolError, match="seed must be a whole number"):
            check_seeds([0, bad])


def test_submit_into_a_sweep_stored_under_an_older_hash_keeps_that_hash(db_url):
    protocol = Protocol(epochs=4, image_size=64, loss="smp-legacy-dice")
    old_dict = {**protocol.to_dict(), "loss": "authors-dice", "seed": 0}
    del old_dict["train_precision"], old_dict["test_resize"]
    with session_scope(db_url) as session:
        session.execute(
            insert(Sweep).values(
                name="old",
                protocol=old_dict,
                protocol_hash="0123456789abcdef",
                data_dir="data",
                dataset_name=DATASET["name"],
                synthetic=True,
                created_at=utcnow(),
            )
        )
    with session_scope(db_url) as session:
        ids = jobs.submit(
            session,
            specs=[CELL],
            protocol=protocol,
            sweep="old",
            data_dir="data",
            dataset=DATASET,
            seeds=[0, 1],
        )
        hashes = set(session.scalars(select(Run.protocol_hash).where(Run.id.in_(ids))))
    assert len(ids) == 2 and hashes == {"0123456789abcdef"}
    with pytest.raises(SweepConflict, match="different protocol"), session_scope(db_url) as s:
        jobs.submit(
            s,
            specs=[CELL],
            protocol=Protocol(epochs=4, image_size=64, train_precision="bf16"),
            sweep="old",
            data_dir="data",
            dataset=DATASET,
        )

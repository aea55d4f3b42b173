"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GENERATED dataset in the MedSeg layout, written once per session.

    64 px training slices (20: 16 train, 4 validation), 2 test volumes x 6 slices
    at 79 px (resized to 64 by the loader). Shared: treat it as read-only and copy it
    (shutil.copytree) before changing anything.
    """
    from worker.data import synth

    return synth(
        tmp_path_factory.mktemp("synthetic") / "data",
        image_size=64,
        train_slices=20,
        test_volumes=2,
        slices_per_volume=6,
        seed=0,
    )


@pytest.fixture(scope="session", autouse=True)
def _no_real_hub():
    """Nothing in the tests may reach huggingface.co: HF_ENDPOINT points at a local
    server that answers 404 to everything (a reachable Hub without files), unless a
    test sets its own (tests/support/fake_hub.py serves real weights files)."""
    import os

    from tests.support.fake_hub import FakeHub

    hub = FakeHub().start()
    previous = os.environ.get("HF_ENDPOINT")
    os.environ["HF_ENDPOINT"] = hub.endpoint
    yield
    if previous is None:
        os.environ.pop("HF_ENDPOINT", None)
    else:
        os.environ["HF_ENDPOINT"] = previous
    hub.stop()


@pytest.fixture(autouse=True)
def fresh_settings():
    """Settings are read once per process (as in production); a test that changes
    SEGBENCH_* variables must not see the values an earlier test cached."""
    from db.settings import get_settings

    caches = [get_settings]
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.fixture
def sqlite_db(tmp_path):
    """A fresh SQLite database at the schema's head, in the test's folder; its shared
    engine is closed at the end."""
    from db import migrate
    from db.session import dispose_engine

    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    migrate.upgrade(url)
    yield url
    dispose_engine(url)

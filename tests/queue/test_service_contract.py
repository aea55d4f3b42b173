"""worker.queue.service as one contract: every function that sends run ids connects
to the broker itself before it writes a row, every result is a frozen dataclass, and
the CLI and dashboard reach nothing behind the service's own names (once the
dashboard called `service.weights.check_before_submit` and read dict keys)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.grid import RunSpec
from db.models import Run
from db.protocol import Protocol
from db.session import dispose_engine, session_scope
from worker.queue import service
from worker.queue.broker import BrokerError

ROOT = Path(__file__).resolve().parents[2]
SPEC = RunSpec("lung-segmentation", "unet", "resnet18", "random")
RESULTS = {
    "submit_runs": service.Submitted,
    "add_seeds": service.SeedsAdded,
    "cancel": service.CancelResult,
    "retry": service.Retried,
    "check_weights": service.WeightsCheck,
    "train_in_process": service.InProcessResult,
}


def test_every_front_door_function_returns_its_frozen_dataclass():
    for name, result in RESULTS.items():
        hints = inspect.signature(getattr(service, name)).return_annotation
        assert hints in (result.__name__, result), (name, hints)
        assert dataclasses.is_dataclass(result) and result.__dataclass_params__.frozen, name


def test_submit_connects_to_the_broker_itself_and_writes_nothing_when_it_is_down(
    tmp_path, synthetic_data
):
    """No connect_broker call before: submit_runs takes `broker_url` as retry and
    add_seeds do, and a broker that does not answer is one sentence, no row."""
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    dead = "redis://127.0.0.1:9/0"  # the discard port: nothing answers there
    with pytest.raises(BrokerError):
        service.submit_runs(
            [SPEC], Protocol(epochs=1, image_size=64), data=synthetic_data, sweep="s",
            db_url=url, broker_url=dead,
        )  # fmt: skip
    with pytest.raises(BrokerError):
        service.retry(url, sweep="s", broker_url=dead)
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
    dispose_engine(url)


def test_results_are_dataclasses_with_their_fields_and_json(tmp_path, synthetic_data):
    """Against the embedded broker of a fresh SQLite file: submit, add seeds, cancel,
    retry, each answering its dataclass (no worker runs: the runs stay queued)."""
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    protocol = Protocol(epochs=1, image_size=64)
    done = service.submit_runs([SPEC], protocol, data=synthetic_data, sweep="s", db_url=url)
    assert isinstance(done, service.Submitted)
    assert done.sweep == "s" and done.seeds == [0] and done.published == done.runs
    assert done.weights.sentence() is None  # a random init needs no weights
    assert done.to_dict()["protocol"]["epochs"] == 1
    added = service.add_seeds(url, done.runs, [0, 1])
    assert len(added.created) == 1 and added.sweeps == ["s"]
    with pytest.raises(ValueError, match="whole number"):
        service.add_seeds(url, done.runs, [True])  # the one seed rule: no bool as 1
    cancelled = service.cancel(url, sweep="s")
    assert sorted(cancelled.cancelled) == sorted(added.runs) and cancelled.requested == []
    assert service.retry(url, sweep="s").to_dict() == {"runs": sorted(added.runs)}
    dispose_engine(url)


def _service_attributes(path: Path) -> set[str]:
    """The names used as `service.X` in a module."""
    tree = ast.parse(path.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "service"
    }


def test_cli_and_dashboard_call_only_the_services_own_names():
    own = {
        name
        for name, value in vars(service).items()
        if not isinstance(value, types.ModuleType) and not name.startswith("_")
    }
    files = sorted([*(ROOT / "worker" / "cli").glob("*.py"), *(ROOT / "dashboard").rglob("*.py")])
    bad = {
        f"{path.relative_to(ROOT)}: service.{name}"
        for path in files
        for name in _service_attributes(path)
        if name not in own
    }
    assert not bad, sorted(bad)

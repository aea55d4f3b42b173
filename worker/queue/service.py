"""The queue's one front door: what the `segbench` command and the dashboard call to
submit, cancel and retry runs, check weights, and train one run in this process.

The contract, the same for every function: the database is named by URL; a
function that sends run ids connects to the broker itself (`broker_url`, else the
one chosen for that database: the embedded one beside a SQLite file, unless
SEGBENCH_BROKER_URL is set) before it writes anything; the result is a frozen
dataclass (`Submitted`, `SeedsAdded`, `CancelResult`, `Retried`, `WeightsCheck`,
`InProcessResult`) with `to_dict()` for JSON; bad input raises a SegbenchError with
one sentence. The CLI and the dashboard call only the names defined here.

Submit writes the rows first and publishes the ids of the runs still queued after:
a broker that is down at that moment loses nothing, the rows stay queued and a
worker's reaper publishes them once the broker answers (the command says so).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from db import jobs, queries
from db.errors import DatabaseError, InvalidInput
from db.grid import RunSpec
from db.presets import check_seeds
from db.protocol import Protocol
from db.session import session_scope
from db.settings import get_settings, worker_host
from worker.data.dataset import check_targets, dataset_info
from worker.data.errors import DataError
from worker.data.layout import read_layout
from worker.data.nifti import verify
from worker.queue import broker, runner, slots, weights
from worker.queue.broker import BrokerError
from worker.queue.weights import WeightsCheck
from worker.training import catalog, custom
from worker.training.recorder import Cancelled, Recorder


class RunNotClaimable(DatabaseError):
    """The run exists but is running elsewhere, finished or out of attempts."""


class RunFailed(DatabaseError):
    """The run ended failed; the message is the reason stored with it."""


class Result:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class InProcessResult(Result):
    """A run trained in this process (`segbench train`)."""

    run_id: int
    sweep: str
    artifacts_dir: Path


@dataclass(frozen=True)
class Submitted(Result):
    """What `submit_runs` queued: `runs` are the ids of every selected run (spec by
    spec, seed by seed, new or already there), `published` the ids this call sent to
    the broker, `protocol` the sweep's protocol (without the per-run seed)."""

    sweep: str
    runs: list[int]
    published: list[int]
    protocol: dict[str, Any]
    seeds: list[int]
    weights: WeightsCheck


@dataclass(frozen=True)
class SeedsAdded(Result):
    """What `add_seeds` queued: `runs` of those cells and seeds (new or not), `created`
    the ids this call inserted, `published` those sent, `sweeps` they are in."""

    runs: list[int]
    created: list[int]
    published: list[int]
    sweeps: list[str]


@dataclass(frozen=True)
class CancelResult(Result):
    """`cancelled`: queued runs cancelled at once; `requested`: running runs asked to
    stop after their epoch. Finished runs are left alone."""

    cancelled: list[int]
    requested: list[int]


@dataclass(frozen=True)
class Retried(Result):
    """`runs`: failed or cancelled runs queued again and sent to the broker."""

    runs: list[int]


def default_sweep_name(protocol: Protocol) -> str:
    return f"train-{protocol.hash()[:8]}"


def train_in_process(
    run: RunSpec,
    protocol: Protocol,
    *,
    data_dir: Path,
    device: str = "cpu",
    artifacts_dir: Path | None = None,
    sweep: str | None = None,
    url: str | None = None,
    recorders: Callable[[Path], list[Recorder]] | None = None,
) -> InProcessResult:
    settings = get_settings()
    url = url or settings.database_url
    sweep = sweep or default_sweep_name(protocol)
    info = dataset_info(data_dir)
    models = check_models([run], protocol)
    with session_scope(url) as session:
        run_id = jobs.submit(
            session,
            specs=[run],
            protocol=protocol,
            sweep=sweep,
            data_dir=str(Path(data_dir).resolve()),
            dataset=info,
            models=models,
        )[0]
        uid = queries.run_detail(session, run_id=run_id)["uid"]
    out = Path(artifacts_dir) if artifacts_dir else runner.artifact_folder(run_id, uid)
    ended = runner.execute(
        run_id,
        worker=f"cli@{worker_host()}/{os.getpid()}",
        database_url=url,
        artifacts_dir=out,
        device=device,
        recorders=recorders(out) if recorders else (),
    )
    if ended == runner.SUCCEEDED:
        return InProcessResult(run_id=run_id, sweep=sweep, artifacts_dir=out)
    with session_scope(url) as session:
        row = queries.run_detail(session, run_id=run_id)
        status, error = row["status"], row["error"]
    if ended == runner.SKIPPED:
        raise RunNotClaimable(
            f"Run {run_id} ({run.name}) of sweep '{sweep}' is already {status}; "
            f"see `segbench status --sweep {sweep}`, or `segbench retry {run_id}` "
            "to train it again."
        )
    if ended == runner.CANCELLED:
        raise Cancelled(f"Run {run_id} ({run.name}) was cancelled.")
    raise RunFailed(f"Run {run_id} ({run.name}) {status}: {error or ended}.")


def connect_broker(db_url: str, broker_url: str | None = None) -> str:
    """Choose the broker for `db_url` (or `broker_url`) and check that it answers;
    returns its URL. Raises BrokerError with one sentence otherwise."""
    url = broker.configure(db_url, broker_url)
    broker.check_broker()
    return url


def publish_queued(ids: Sequence[int]) -> None:
    """Send run ids to the broker; a failure says the rows are safe and will be sent."""
    try:
        broker.publish(ids)
    except Exception as error:
        raise BrokerError(
            f"The runs are queued in the database, but sending their ids to the broker "
            f"failed ({error}); a worker's reaper will send them once the broker answers."
        ) from error


def default_submit_sweep(dataset: dict, protocol: Protocol) -> str:
    return f"{jobs.sweep_name_from(dataset['name'])}-{protocol.hash()[:8]}"


def submit_runs(
    specs: Sequence[RunSpec],
    protocol: Protocol,
    *,
    data: Path,
    sweep: str | None,
    db_url: str,
    allow_missing_weights: bool = False,
    seeds: Sequence[int] | None = None,
    broker_url: str | None = None,
) -> Submitted:
    """Queue `specs` x `seeds` (default: the protocol's seed; idempotent) and publish
    the ids of the runs still queued.

    With weight downloads forbidden, runs whose ImageNet weights are not cached are
    refused before anything is written (WeightsError), unless `allow_missing_weights`."""
    seeds = check_seeds(seeds or [protocol.seed])
    models = check_models(specs, protocol)
    found = weights.check(specs, allow_missing=allow_missing_weights)
    if sweep is not None:
        jobs.check_sweep_name(sweep)
    data = Path(data).resolve()
    dataset = dataset_info(data)
    check_dataset_for(data, {spec.experiment for spec in specs})
    sweep = sweep or default_submit_sweep(dataset, protocol)
    connect_broker(db_url, broker_url)
    with session_scope(db_url) as session:
        ids = jobs.submit(
            session,
            specs=list(specs),
            protocol=protocol,
            sweep=sweep,
            data_dir=str(data),
            dataset=dataset,
            seeds=seeds,
            models=models,
        )
        # Only the runs this call created get a message: a second identical submit
        # sends none. A queued run whose message was lost is the reaper's to resend.
        queued = queries.queued_run_ids(session, sorted(ids.created))
        queued = publish_order(session, queued, protocol)
    publish_queued(queued)
    return Submitted(sweep, list(ids), queued, protocol.shared_dict(), seeds, found)


def publish_order(session, run_ids: Sequence[int], protocol: Protocol) -> list[int]:
    """The order the workers get `run_ids` in: longest cells first, each cell's runs
    together (db.queries.sweep_order), by the seconds per epoch measured at the
    protocol's image and batch size in this database, else by the seconds per step of
    the GPU session's cell table (SEGBENCH_CELL_TABLE), else as submitted."""
    table = get_settings().cell_table
    return queries.sweep_order(
        session, run_ids, image_size=protocol.image_size, batch_size=protocol.batch_size,
        table_seconds=(lambda: slots.step_seconds(table)) if table else None,
    )  # fmt: skip


def add_seeds(
    db_url: str, run_ids: Sequence[int], seeds: Sequence[int], *, broker_url: str | None = None
) -> SeedsAdded:
    """Queue the grid cells of `run_ids` again with each of `seeds`, in the runs' own
    sweeps and protocols; cells that already have a run with that seed are left alone."""
    if not run_ids or not seeds:
        raise InvalidInput("Name the runs and at least one seed to add.")
    seeds = check_seeds(seeds)
    connect_broker(db_url, broker_url)
    with session_scope(db_url) as session:
        groups = queries.run_cells(session, list(run_ids))
    for group in groups:  # the dataset is checked as submit checks it, before any row
        check_dataset_for(Path(group["data_dir"]), {s.experiment for s in group["specs"]})
    with session_scope(db_url) as session:
        ids: list[int] = []
        created: set[int] = set()
        queued: list[int] = []
        for group in groups:  # each sweep's new runs in its order, as submit sends them
            submitted = jobs.submit(session, seeds=list(seeds), **group)
            ids += [i for i in submitted if i not in ids]
            created |= submitted.created
            new = queries.queued_run_ids(session, sorted(submitted.created))
            queued += publish_order(session, new, group["protocol"])
    publish_queued(queued)
    return SeedsAdded(ids, sorted(created), queued, sorted({g["sweep"] for g in groups}))


def check_weights(specs: Sequence[RunSpec]) -> WeightsCheck:
    """Which ImageNet encoders of `specs` are in the workers' weights cache; `refused`
    holds the sentence `submit_runs` would answer (downloads forbidden), else None."""
    return weights.check_quietly(specs)


def check_models(specs: Sequence[RunSpec], protocol: Protocol) -> dict[str, dict]:
    """Refuse, before anything is written, a run smp cannot build at the protocol's
    image size or a user model that cannot be imported and built here (one sentence);
    returns the provenance of each user model, by reference."""
    catalog.check_buildable(specs, protocol.image_size)
    return {
        ref: custom.check(ref, protocol.image_size)
        for ref in dict.fromkeys(s.encoder for s in specs if s.custom)
    }


def check_dataset_for(data: Path, experiments: set[str]) -> None:
    """Refuse, before any row is written, a dataset folder that training would refuse:
    damaged files, NaN voxels, bad labels, a missing target mask."""
    problems = verify(data)
    if problems:
        raise DataError(
            f"{data} is not usable ({len(problems)} problem(s); `segbench data verify --dir "
            f"{data}` lists them all): {' '.join(problems[:3])}"
        )
    layout = read_layout(data)
    for experiment in sorted(experiments):
        check_targets(layout, experiment)


def cancel(
    db_url: str, *, run_ids: Sequence[int] | None = None, sweep: str | None = None
) -> CancelResult:
    """Queued runs cancelled at once, running ones asked to stop after their epoch (no
    broker needed: the worker that gets a cancelled run's message claims the next
    queued run instead, db.jobs.affinity)."""
    with session_scope(db_url) as session:
        return CancelResult(**jobs.cancel(session, run_ids=run_ids, sweep=sweep))


def retry(
    db_url: str,
    *,
    run_ids: Sequence[int] | None = None,
    sweep: str | None = None,
    broker_url: str | None = None,
) -> Retried:
    """Failed and cancelled runs queued again and sent to the broker (the broker is
    checked first, so nothing is queued for a broker that does not answer)."""
    connect_broker(db_url, broker_url)
    with session_scope(db_url) as session:
        ids = jobs.retry(session, run_ids=run_ids, sweep=sweep)
    publish_queued(ids)
    return Retried(ids)

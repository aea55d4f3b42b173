"""Two real processes claiming the same runs at the same moment never both win."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import select, update

from db.models import Run, utcnow
from db.session import session_scope
from tests.support.claimer import claim_all
from tests.support.runs import submit_runs

RUNS = 25
WORKERS = ("worker-a", "worker-b")


def test_two_processes_never_claim_the_same_run(db_url):
    run_ids = submit_runs(db_url, RUNS)
    context = multiprocessing.get_context("spawn")
    barrier, go, results = context.Barrier(len(WORKERS)), context.Event(), context.Queue()
    processes = [
        context.Process(target=claim_all, args=(db_url, run_ids, name, 2, barrier, go, results))
        for name in WORKERS
    ]
    for process in processes:
        process.start()
    try:
        for round_ in range(2):
            won = dict(results.get(timeout=120) for _ in WORKERS)
            assert not set(won["worker-a"]) & set(won["worker-b"]), f"round {round_}"
            assert sorted(won["worker-a"] + won["worker-b"]) == run_ids, f"round {round_}"
            if round_ == 0:
                # The second round races for the same runs once their leases expired.
                with session_scope(db_url) as session:
                    session.execute(update(Run).values(lease_expires_at=utcnow()))
                go.set()
    finally:
        go.set()  # never leave a process waiting for a round that will not come
        for process in processes:
            process.join(timeout=30)
            if process.exitcode is None:
                process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    with session_scope(db_url) as session:
        assert set(session.scalars(select(Run.attempts))) == {2}

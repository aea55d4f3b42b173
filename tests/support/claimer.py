"""The bodies of the claiming processes of tests/db/test_db_claim_race.py and
tests/db/test_affinity.py (a module of their own: each spawned process imports it)."""

from __future__ import annotations


def claim_all(url: str, run_ids: list[int], worker: str, rounds: int, barrier, go, results) -> None:
    """Claim every run in `run_ids`, in step with the other process (barrier), once per
    round; the parent sets `go` between rounds."""
    from db.jobs import claim
    from db.session import session_scope

    with session_scope(url):
        pass  # schema check and engine set up before the race starts
    for round_ in range(rounds):
        if round_:
            go.wait(timeout=60)
        won = []
        for run_id in run_ids:
            barrier.wait(timeout=60)
            with session_scope(url) as session:
                if claim(session, run_id=run_id, worker=worker, lease_seconds=600) is not None:
                    won.append(run_id)
        results.put((worker, won))


def claim_tokens(
    url: str, hint: int, cell: tuple[str, str], worker: str, tokens: int, barrier, results
) -> None:
    """Spend `tokens` messages that all name run `hint`, each a claim with affinity to
    `cell` (db.jobs.claim_from_queue), in step with the other process (barrier)."""
    from db.jobs import claim_from_queue
    from db.session import session_scope

    with session_scope(url):
        pass  # schema check and engine set up before the race starts
    won = []
    for _ in range(tokens):
        barrier.wait(timeout=60)
        with session_scope(url) as session:
            claimed = claim_from_queue(
                session, run_id=hint, worker=worker, cell=cell, lease_seconds=600
            )
            won.append(None if claimed is None else claimed.run_id)
    results.put((worker, won))

"""db.jobs.claim_from_queue (a message's claim with cell affinity) and the order a
sweep is published in (db.queries.longest_cells_first), on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

from db import jobs, queries
from db.models import Run, utcnow
from db.session import session_scope
from tests.support.claimer import claim_tokens
from tests.support.runs import submit_runs

RESNET18 = ("unet", "resnet18")
VGG11 = ("unet", "vgg11")


def cells_of(url, ids):
    with session_scope(url) as session:
        rows = {r["id"]: r for r in queries.status_rows(session)}
    return [(rows[i]["architecture"], rows[i]["encoder"]) for i in ids]


def claim(url, hint, cell=None, worker="w/1"):
    with session_scope(url) as session:
        claimed = jobs.claim_from_queue(session, run_id=hint, worker=worker, cell=cell)
        return None if claimed is None else claimed.run_id


def test_a_process_takes_the_next_run_of_its_cell_before_the_hint(db_url):
    # lung, lesion A, lesion B x random, imagenet of two cells: 12 runs, in grid order
    ids = submit_runs(db_url, architectures=["unet"], encoders=["resnet18", "vgg11"])
    cells = dict(zip(ids, cells_of(db_url, ids), strict=True))
    resnet = [i for i in ids if cells[i] == RESNET18]
    vgg = [i for i in ids if cells[i] == VGG11]
    assert claim(db_url, vgg[0]) == vgg[0]  # no cell yet: the hint
    assert claim(db_url, resnet[0], cell=VGG11) == vgg[1]  # the cell before the hint
    rest = [claim(db_url, resnet[0], cell=VGG11) for _ in vgg[2:]]
    assert rest == vgg[2:]  # the whole cell, in order
    assert claim(db_url, resnet[0], cell=VGG11) == resnet[0]  # cell done: the hint


def test_a_message_whose_run_is_gone_trains_the_next_queued_run_of_its_sweep(db_url):
    first = submit_runs(db_url, 3, sweep="first")
    other = submit_runs(db_url, 2, sweep="other")
    assert claim(db_url, first[0]) == first[0]
    with session_scope(db_url) as session:
        jobs.cancel(session, run_ids=[first[1]])
    # the hint is running (taken as another process's cell), then cancelled: the
    # token goes to the next queued run, its own sweep first
    assert claim(db_url, first[0], worker="w/2") == first[2]
    assert claim(db_url, first[1], worker="w/3") == other[0]
    assert claim(db_url, first[1], worker="w/4") == other[1]
    assert claim(db_url, first[1], worker="w/5") is None  # nothing queued: nothing


def test_the_same_cell_in_another_sweep_does_not_jump_the_hint(db_url):
    (mine,) = submit_runs(db_url, 1, sweep="mine", encoders=["vgg11"])
    theirs = submit_runs(db_url, 1, sweep="theirs", encoders=["resnet18"])
    assert claim(db_url, mine, cell=RESNET18) == mine
    assert claim(db_url, theirs[0], cell=VGG11) == theirs[0]


def test_two_claims_of_one_message_never_take_one_run(db_url):
    ids = submit_runs(db_url, 4)
    taken = [claim(db_url, ids[0], worker=f"w/{n}") for n in range(5)]
    assert taken[:4] == ids and taken[4] is None
    with session_scope(db_url) as session:
        assert {r["status"] for r in queries.status_rows(session)} == {"running"}


def test_sweeps_are_published_longest_cells_first_with_each_cell_together(db_url):
    ids = submit_runs(db_url, architectures=["unet", "fpn"], encoders=["resnet18", "vgg11"])
    cells = dict(zip(ids, cells_of(db_url, ids), strict=True))
    seconds = {("unet", "vgg11"): 9.0, ("fpn", "resnet18"): 2.0, ("unet", "resnet18"): 5.0}
    with session_scope(db_url) as session:
        order = queries.longest_cells_first(session, ids, seconds)
    assert sorted(order) == sorted(ids)
    seen = [cells[i] for i in order]
    runs_per_cell = len(ids) // 4
    # the unmeasured cell first (it may be long), then 9 s, 5 s, 2 s per epoch
    expected = [("fpn", "vgg11"), ("unet", "vgg11"), ("unet", "resnet18"), ("fpn", "resnet18")]
    assert seen == [c for c in expected for _ in range(runs_per_cell)]
    with session_scope(db_url) as session:  # nothing measured: the order given
        assert queries.longest_cells_first(session, ids, {}) == sorted(
            ids, key=lambda i: [c for c in dict.fromkeys(cells[j] for j in ids)].index(cells[i])
        )


def test_a_gone_hint_claims_in_the_published_order_so_long_cells_stay_first(db_url):
    # the grid's order (the ids) puts the short cell first; its published order, by
    # the cell table's seconds, puts the long one first
    ids = submit_runs(db_url, architectures=["unet"], encoders=["resnet18", "vgg11"])
    cells = dict(zip(ids, cells_of(db_url, ids), strict=True))
    short = cells[ids[0]]
    long_ = RESNET18 if short == VGG11 else VGG11
    table = {short: 1.0, long_: 5.0}
    with session_scope(db_url) as session:
        published = queries.sweep_order(
            session, ids, image_size=64, batch_size=8, table_seconds=lambda: table
        )
        assert [cells[i] for i in published] == [long_] * 6 + [short] * 6
        jobs.cancel(session, run_ids=[published[0]])
    last, trained = None, []
    for hint in published:  # one process spends the messages in their order
        with session_scope(db_url) as session:
            claimed = jobs.claim_from_queue(
                session, run_id=hint, worker="w/1", cell=last, table_seconds=lambda: table
            )
        if claimed is not None:
            last = (claimed.spec.architecture, claimed.spec.encoder)
            trained.append(claimed.run_id)
    # the cancelled run's message trains the long cell's next run, not the lowest id
    # (the short cell, which the process would then have kept by affinity)
    assert trained == published[1:]


def test_two_processes_spending_one_cells_messages_never_take_one_run(db_url):
    ids = submit_runs(db_url, architectures=["unet"], encoders=["resnet18", "vgg11"])
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(
            target=claim_tokens, args=(db_url, ids[0], cell, f"w/{n}", 7, barrier, results)
        )
        for n, cell in enumerate((RESNET18, VGG11))
    ]
    for process in processes:
        process.start()
    try:
        won = dict(results.get(timeout=120) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.exitcode is None:
                process.kill()
    taken = [i for runs in won.values() for i in runs if i is not None]
    assert sorted(taken) == ids  # 14 messages for 12 runs: each run once, two spare
    with session_scope(db_url) as session:
        assert {r["status"] for r in queries.status_rows(session)} == {"running"}


def test_the_run_taken_for_affinity_is_leased_to_the_process_and_the_hint_stays_queued(db_url):
    ids = submit_runs(db_url, architectures=["unet"], encoders=["resnet18", "vgg11"])
    cells = dict(zip(ids, cells_of(db_url, ids), strict=True))
    hint = next(i for i in ids if cells[i] == RESNET18)
    with session_scope(db_url) as session:
        claimed = jobs.claim_from_queue(
            session, run_id=hint, worker="n@h/7", cell=VGG11, lease_seconds=60
        )
    assert cells[claimed.run_id] == VGG11 and claimed.attempts == 1
    with session_scope(db_url) as session:
        run, hinted = session.get(Run, claimed.run_id), session.get(Run, hint)
        assert (run.worker, run.status) == ("n@h/7", "running")
        assert run.lease_expires_at > utcnow()
        assert (hinted.status, hinted.attempts, hinted.worker) == ("queued", 0, None)


def test_a_redelivered_message_resumes_its_run_held_by_a_dead_process_first(db_url):
    ids = submit_runs(db_url, 3)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with session_scope(db_url) as session:
        jobs.claim(session, run_id=ids[0], worker=f"n@h/{process.pid}")
    # another host cannot know whether that pid lives: the message trains the next run
    assert claim(db_url, ids[0], worker="m@other/1") == ids[1]
    with session_scope(db_url) as session:  # the same host: the dead holder's run at once
        claimed = jobs.claim_from_queue(session, run_id=ids[0], worker="n@h/2", node="n@h")
    assert (claimed.run_id, claimed.attempts) == (ids[0], 2)

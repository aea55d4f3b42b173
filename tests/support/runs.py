"""Runs made through db.jobs, as a worker makes them: submitted sweeps, epoch records
and run outcomes with made-up numbers, for every test folder."""

from __future__ import annotations

from db.grid import expand
from db.protocol import (
    EpochRecord,
    Protocol,
    RunOutcome,
    SliceCounts,
    TestResult,
    VolumeMetrics,
)
from db.session import session_scope

DATASET = {"name": "synthetic-test", "kind": "synthetic", "synthetic": True, "manifest_hash": "m1"}
PROTOCOL = Protocol(epochs=4, image_size=64)


def submit_runs(url: str, n: int | None = None, sweep: str = "test-sweep", **filters) -> list[int]:
    from db.jobs import submit

    specs = expand(**filters)[:n]
    with session_scope(url) as session:
        return submit(
            session, specs=specs, protocol=PROTOCOL, sweep=sweep, data_dir="data", dataset=DATASET
        )


def epoch_record(epoch: int, val_loss: float = 0.5, is_best: bool = True) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=val_loss + 0.1,
        val_loss=val_loss,
        train_seconds=2.0,
        val_seconds=0.5,
        is_best=is_best,
    )


def make_outcome(n_slices: int = 12, dice: float | None = 90.0) -> RunOutcome:
    slices = [
        SliceCounts(i, i // 4, i % 4, tp=10 + i, fp=i, fn=2, tn=1000) for i in range(n_slices)
    ]
    test = TestResult(
        slices=slices,
        sensitivity=91.0,
        specificity=99.0,
        dice=dice,
        dice_std=2.0,
        pooled_dice=89.0,
        metric_mode="standard",
        seconds=3.0,
        # volume v: NSD 80 + v %, HD95 2 + v mm; the last volume's HD95 undefined (NaN)
        volumes=[
            VolumeMetrics(v, min(4, n_slices - 4 * v), 85.0 + v, 80.0 + v, 2.0 + v)
            for v in range((n_slices + 3) // 4)
        ],
        nsd=81.0,
        hd95=2.5,
    )
    test.volumes[-1].hd95 = float("nan")
    return RunOutcome(
        test=test,
        best_epoch=3,
        best_val_loss=0.2,
        parameters_m=14.3,
        train_seconds_per_epoch=2.0,
        val_seconds_per_epoch=0.5,
        checkpoint_dir="artifacts/run-1/checkpoint_best",
        checkpoint_sha256="ab" * 32,
        gallery={5: b"\x0f" * 8, 7: b"\xf0" * 8},
        gallery_shape=(8, 8),
        first_layer_before=b"\x00" * 16,
        first_layer_after=b"\x01" * 16,
        first_layer_shape=(1, 1, 2, 2),
    )

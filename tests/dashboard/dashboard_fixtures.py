"""Hand-made benchmark results written through db.jobs, for the dashboard's tests.

One synthetic sweep over 3 experiments x 4 architectures x 2 encoders x 2 inits: most
runs succeeded (known Dice values, epochs, gallery masks, first-layer filters), and a
few are running, queued, failed or cancelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.testing.v1 import AppTest

from db import jobs
from db.grid import expand
from db.protocol import EpochRecord, Protocol, RunOutcome, SliceCounts, TestResult
from db.session import session_scope
from db.settings import get_settings
from tests.support.runs import finished_run

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
TIMEOUT_S = 30
SWEEP = "demo"
OTHER_SWEEP = "other"
PROTOCOL = Protocol(epochs=6, image_size=64)
ENCODERS = ["resnet18", "vgg11"]
GALLERY_INDEXES = (3, 10)
DATASET = {
    "name": "medseg-synthetic",
    "kind": "medseg",
    "synthetic": True,
    "manifest_hash": "f" * 64,
}


@dataclass
class Populated:
    """What populate() wrote, for the tests' assertions."""

    url: str
    ids: list[int]
    best_id: int
    best_dice: float
    counts: dict[str, int]
    running: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    other_ids: list[int] = field(default_factory=list)


def _dice(i: int, architecture: str) -> float:
    bonus = {"unet": 1.5, "linknet": 1.8, "fpn": 0.8, "pspnet": 0.0}[architecture]
    return round(84.0 + bonus + (i * 37 % 23) / 10.0, 3)


def _loss_scale(spec, i: int) -> float:
    architecture = {"unet": 0.0, "linknet": 0.1, "fpn": 0.2, "pspnet": 0.35}[spec.architecture]
    masked = -(0.05 + architecture / 3) if spec.experiment == "lesion-segmentation-b" else 0.0
    return 1.0 + architecture + masked + (i % 4) / 20


def _epochs(n: int, scale: float, nan_from: int | None = None) -> list[EpochRecord]:
    records = []
    for e in range(1, n + 1):
        train = 0.9 * math.exp(-e / 3) * scale + 0.08
        val = train + 0.04
        if nan_from is not None and e >= nan_from:
            train = val = float("nan")
        records.append(EpochRecord(e, train, val, 2.0 + scale, 0.5, is_best=nan_from is None))
    return records


def _gallery(rng: np.random.Generator, truth: dict[int, np.ndarray] | None, shift: int):
    """Predictions that look like a model's: the true mask, shifted by `shift` pixels,
    with a few stray pixels."""
    masks = {}
    for index in GALLERY_INDEXES:
        if truth is not None and index in truth:
            base = truth[index].astype(bool)
        else:
            yy, xx = np.mgrid[:64, :64]
            base = (yy - 32) ** 2 / 300 + (xx - 22) ** 2 / 120 < 1
        predicted = np.roll(base, (shift, -(shift // 2)), axis=(0, 1))
        predicted ^= rng.random(base.shape) > 0.997
        masks[index] = np.packbits(predicted.astype(np.uint8).ravel()).tobytes()
    return masks


def outcome(
    dice: float,
    parameters_m: float,
    rng: np.random.Generator,
    truth: dict[int, np.ndarray] | None = None,
    filters: bool = False,
) -> RunOutcome:
    slices = [SliceCounts(i, i // 8, i % 8, tp=50 + i, fp=3, fn=4, tn=4000) for i in range(16)]
    test = TestResult(
        slices=slices,
        sensitivity=min(dice + 2.0, 100.0),
        specificity=99.0 + (dice % 1) / 2,
        dice=dice,
        dice_std=1.5,
        pooled_dice=dice - 0.5,
        metric_mode="standard",
        seconds=1.0,
        nsd=dice - 5.0,  # means over volumes, as stored; per-volume rows are not needed here
        hd95=(100.0 - dice) / 10,
    )
    before = after = None
    if filters:
        before = (rng.normal(0, 0.15, (64, 1, 7, 7))).astype(np.float32).tobytes()
        after = (rng.normal(0, 0.3, (64, 1, 7, 7))).astype(np.float32).tobytes()
    return RunOutcome(
        test=test,
        best_epoch=PROTOCOL.epochs,
        best_val_loss=0.12,
        parameters_m=parameters_m,
        train_seconds_per_epoch=2.0 + parameters_m / 10,
        val_seconds_per_epoch=0.5,
        checkpoint_dir="artifacts/x/checkpoint_best",
        checkpoint_sha256="ab" * 32,
        gallery=_gallery(rng, truth, 1 + int(max(0.0, 90 - dice))),
        gallery_shape=(64, 64),
        first_layer_before=before,
        first_layer_after=after,
        first_layer_shape=(64, 1, 7, 7) if filters else (),
    )


PARAMETERS = {"resnet18": 14.3, "vgg11": 18.8}
ARCH_PARAMS = {"unet": 0.0, "linknet": -2.8, "fpn": -1.2, "pspnet": -12.0}


def populate(
    url: str,
    *,
    data_dir: str = "data",
    truth: dict[str, dict[int, np.ndarray]] | None = None,
    nan_losses: bool = False,
) -> Populated:
    """Fill the database at `url` (schema already at head). `truth`: ground-truth masks
    by experiment and test index, so stored predictions look like predictions on
    that dataset."""
    rng = np.random.default_rng(0)
    specs = expand(encoders=ENCODERS)
    with session_scope(url) as session:
        ids = jobs.submit(
            session,
            specs=specs,
            protocol=PROTOCOL,
            sweep=SWEEP,
            data_dir=data_dir,
            dataset=DATASET,
        )
    by_id = dict(zip(ids, specs, strict=True))
    queued = ids[-3:]
    running = ids[-6:-3]
    failed = [ids[-7]]
    cancelled = [ids[-8]]
    finished = ids[:-8]
    result = Populated(url=url, ids=ids, best_id=-1, best_dice=-1.0, counts={})
    for i, run_id in enumerate(finished):
        spec = by_id[run_id]
        dice = _dice(i, spec.architecture)
        filters = (spec.architecture, spec.encoder, spec.experiment) == (
            "unet",
            "resnet18",
            "lung-segmentation",
        )
        params = PARAMETERS[spec.encoder] + ARCH_PARAMS[spec.architecture]
        made = outcome(dice, params, rng, (truth or {}).get(spec.experiment), filters)
        epochs = _epochs(PROTOCOL.epochs, _loss_scale(spec, i))
        with session_scope(url) as session:
            finished_run(session, run_id, made, epochs=epochs, worker="gpu-0")
        if dice > result.best_dice:
            result.best_id, result.best_dice = run_id, dice
    for n, run_id in enumerate(running):
        with session_scope(url) as session:
            jobs.claim(session, run_id=run_id, worker=f"gpu-{n + 1}")
            nan_from = 3 if nan_losses and n == 2 else None
            for record in _epochs(2 + n, 1.1 + n / 5, nan_from=nan_from):
                jobs.record_epoch(session, run_id=run_id, record=record)
    with session_scope(url) as session:
        jobs.claim(session, run_id=failed[0], worker="gpu-9")
        jobs.fail(session, run_id=failed[0], reason="CUDA out of memory at epoch 2 (batch 2).")
        jobs.cancel(session, run_ids=cancelled)
    with session_scope(url) as session:
        other = expand(
            experiments=["lung-segmentation"], architectures=["unet"], encoders=["vgg13"]
        )
        other_ids = jobs.submit(
            session,
            specs=other,
            protocol=Protocol(epochs=3, image_size=64),
            sweep=OTHER_SWEEP,
            data_dir=data_dir,
            dataset=DATASET,
        )
    result.running, result.failed, result.other_ids = running, failed, other_ids
    result.counts = {
        "queued": len(queued) + len(other_ids),
        "running": len(running),
        "succeeded": len(finished),
        "failed": 1,
        "cancelled": 1,
    }
    return result


def point_dashboard_at(monkeypatch, url: str) -> None:
    monkeypatch.setenv("SEGBENCH_DATABASE_URL", url)
    monkeypatch.delenv("SEGBENCH_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.delenv("SEGBENCH_BROKER_URL", raising=False)
    clear_settings()


def clear_settings() -> None:
    """Forget every cached settings object and cached read (the env changed)."""
    get_settings.cache_clear()
    st.cache_data.clear()


def broker_messages(url: str) -> int:
    """Run ids waiting in the embedded broker beside the SQLite database."""
    from worker.queue import broker

    broker.configure(url)
    return broker.queue_depth()


def open_page(page: str | None = None) -> AppTest:
    """Run the app (its default page is Live), then switch to `page` if given."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def texts(at: AppTest) -> str:
    """Every text the page shows (markdown, captions, info/error boxes, metrics)."""
    parts = []
    for kind in ("markdown", "caption", "info", "error", "warning", "success", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}={m.value}" for m in at.metric]
    return "\n".join(parts)

"""What a run reports while it trains: the Recorder interface and recorders that
write files, show progress or forward to several others.

worker.training.trainer calls a recorder; the database's recorder
(worker.queue.lease) and the CLI's (files, a progress bar) implement it.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

from db.errors import SegbenchError
from db.protocol import EpochRecord, RunOutcome, TestResult
from worker.training.metrics import summarize


class Cancelled(SegbenchError):
    """Raised inside fit() when the recorder reports that the run was cancelled."""


class Recorder:
    """Receives a run's progress. The base class records nothing.

    worker.training.trainer.fit calls, in order: start(config) once (also on resume),
    epoch(record) after every epoch (before that epoch's checkpoint, if one is
    written: every epoch on CPU, at most once a minute on CUDA; a crash repeats the
    epochs since the last checkpoint with the same numbers, and the upsert is
    idempotent), cancelled() after every epoch, testing(done, total) while the best
    model is tested (once with done=0, then after each batch of test slices),
    finish(outcome) once at the end.
    """

    def start(self, config: dict) -> None:  # noqa: B027 - optional hook
        """config: run spec, protocol, library versions, git commit, device,
        dataset {name, kind, synthetic, manifest_hash}, parameters_m, resumed_from."""

    def epoch(self, record: EpochRecord) -> None:  # noqa: B027
        """One finished epoch; also the heartbeat of the run."""

    def cancelled(self) -> bool:
        """True when the run should stop at the end of this epoch."""
        return False

    def testing(self, done: int, total: int) -> None:  # noqa: B027
        """Progress of the test pass: `done` of `total` test slices predicted and scored
        (per-volume metrics included)."""

    def finish(self, outcome: RunOutcome) -> None:  # noqa: B027
        """Test results and artifacts of the best model."""


class TeeRecorder(Recorder):
    """Forwards every call to several recorders (e.g. database + progress bar)."""

    def __init__(self, *recorders: Recorder):
        self.recorders = [r for r in recorders if r is not None]

    def start(self, config: dict) -> None:
        for r in self.recorders:
            r.start(config)

    def epoch(self, record: EpochRecord) -> None:
        for r in self.recorders:
            r.epoch(record)

    def cancelled(self) -> bool:
        return any(r.cancelled() for r in self.recorders)

    def testing(self, done: int, total: int) -> None:
        for r in self.recorders:
            r.testing(done, total)

    def finish(self, outcome: RunOutcome) -> None:
        for r in self.recorders:
            r.finish(outcome)


def all_background_dice(test: TestResult) -> float:
    """Mean Dice an empty prediction would score on the same slices (for context)."""
    counts = [[0, 0, s.tp + s.fn, s.tn + s.fp] for s in test.slices]
    return summarize(counts, test.metric_mode)["dice"] if counts else float("nan")


class FileRecorder(Recorder):
    """Writes epochs.csv and summary.json into a run's artifact folder."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.config: dict = {}

    def start(self, config: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = config
        (self.directory / "config.json").write_text(json.dumps(config, indent=2, default=str))

    def epoch(self, record: EpochRecord) -> None:
        path = self.directory / "epochs.csv"
        rows = []
        if path.exists():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < record.epoch]
        rows.append({k: v for k, v in asdict(record).items()})
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(record)))
            w.writeheader()
            w.writerows(rows)
        tmp.replace(path)

    def finish(self, outcome: RunOutcome) -> None:
        t = outcome.test
        protocol = self.config.get("protocol") or {}
        summary = {
            "run": self.config.get("run"),
            "dataset": self.config.get("dataset"),
            "synthetic": bool(self.config.get("dataset", {}).get("synthetic")),
            "metric_mode": t.metric_mode,
            "dice": t.dice,
            "dice_std": t.dice_std,
            "sensitivity": t.sensitivity,
            "specificity": t.specificity,
            "pooled_dice": t.pooled_dice,
            "nsd": t.nsd,
            "hd95": t.hd95,
            "boundary_mode": protocol.get("boundary_mode"),
            "nsd_tolerance_mm": protocol.get("nsd_tolerance_mm"),
            "volumes": [asdict(v) for v in t.volumes],
            "all_background_dice": all_background_dice(t),
            "test_slices": len(t.slices),
            "best_epoch": outcome.best_epoch,
            "best_val_loss": outcome.best_val_loss,
            "parameters_m": outcome.parameters_m,
            "train_seconds_per_epoch": outcome.train_seconds_per_epoch,
            "val_seconds_per_epoch": outcome.val_seconds_per_epoch,
            "checkpoint": outcome.checkpoint_dir,
            "checkpoint_sha256": outcome.checkpoint_sha256,
        }
        (self.directory / "summary.json").write_text(json.dumps(summary, indent=2))


class ProgressRecorder(Recorder):
    """A tqdm bar over epochs with the latest losses, then one over the test slices."""

    def __init__(self, total: int, name: str, device: str | None = None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=name, unit="epoch", file=sys.stderr)
        self.test_bar = None
        self.device = device  # said once training starts: "cpu (--device auto: no CUDA here)"

    def start(self, config: dict) -> None:
        if self.device:
            self.bar.write(f"training on {self.device}", file=sys.stderr)
        done = config.get("resumed_from", 0)
        if done:
            self.bar.update(done - self.bar.n)
        if config.get("dataset", {}).get("synthetic"):
            self.bar.write(
                "note: training on SYNTHETIC stand-in data (not the paper's CT scans)",
                file=sys.stderr,
            )

    def epoch(self, record: EpochRecord) -> None:
        self.bar.set_postfix(train=f"{record.train_loss:.4f}", val=f"{record.val_loss:.4f}")
        self.bar.update(1)

    def testing(self, done: int, total: int) -> None:
        if self.test_bar is None:
            from tqdm import tqdm

            self.bar.close()
            self.test_bar = tqdm(
                total=total, desc="testing the best model", unit="slice", file=sys.stderr
            )
        self.test_bar.update(done - self.test_bar.n)

    def finish(self, outcome: RunOutcome) -> None:
        self.bar.close()
        if self.test_bar is not None:
            self.test_bar.close()

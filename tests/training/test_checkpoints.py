"""Checkpoints that never resume the wrong run: identity, damaged files, temporary files
left by killed writes, a full disk, and what a finished run keeps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol
from worker.training.checkpoints import (
    CHECKPOINT_LATEST,
    CHECKPOINT_PREVIOUS,
    DiskFull,
    find_resumable,
    remove_temp_files,
)
from worker.training.recorder import Cancelled, Recorder
from worker.training.trainer import TrainSpec, fit

RUN = RunSpec("lung-segmentation", "pspnet", "resnet18", "random")
OTHER = RunSpec("lesion-segmentation-a", "pspnet", "resnet18", "random")


class Losses(Recorder):
    def __init__(self, cancel_after: int | None = None):
        self.config, self.losses = {}, []
        self.cancel_after = cancel_after

    def start(self, config):
        self.config = config

    def epoch(self, record):
        self.losses.append((record.epoch, record.train_loss, record.val_loss))

    def cancelled(self):
        return self.cancel_after is not None and len(self.losses) >= self.cancel_after


def spec(data, folder: Path, run=RUN, uid="a" * 32, epochs=3) -> TrainSpec:
    protocol = Protocol(epochs=epochs, image_size=64, seed=0)
    identity = {"run_uid": uid, "run": run.name, "protocol_hash": protocol.hash()}
    return TrainSpec(
        run=run, protocol=protocol, data_dir=data, artifacts_dir=folder, identity=identity
    )


def interrupted(data, folder: Path, after: int, **kw) -> Losses:
    rec = Losses(cancel_after=after)
    with pytest.raises(Cancelled):
        fit(spec(data, folder, **kw), rec)
    return rec


@pytest.fixture(scope="module")
def reference(synthetic_data, tmp_path_factory):
    rec = Losses()
    fit(spec(synthetic_data, tmp_path_factory.mktemp("ref")), rec)
    return rec.losses


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_never_resumed(synthetic_data, tmp_path, reference):
    interrupted(synthetic_data, tmp_path, after=2, run=OTHER, uid="b" * 32)
    rec = Losses()
    fit(spec(synthetic_data, tmp_path), rec)
    assert rec.config["resumed_from"] == 0
    assert [e for e, *_ in rec.losses] == [1, 2, 3]
    assert rec.losses == reference  # as if the folder had been empty
    note = rec.config["resume_note"]
    assert "written by run bbbbbbbbbbbb (lesion-segmentation-a-pspnet-resnet18-random)" in note
    assert note.endswith("started from epoch 1.")


@pytest.mark.slow
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(
    synthetic_data, tmp_path, reference
):
    interrupted(synthetic_data, tmp_path, after=2)
    latest = tmp_path / CHECKPOINT_LATEST
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a cut-short write
    rec = Losses()
    fit(spec(synthetic_data, tmp_path), rec)
    assert rec.config["resumed_from"] == 1
    assert "checkpoint_latest.pt could not be read" in rec.config["resume_note"]
    assert "resumed from epoch 1 (checkpoint_previous.pt)" in rec.config["resume_note"]
    assert rec.losses == reference[1:]  # epochs 2 and 3 again, with the same numbers


@pytest.mark.slow
def test_random_bytes_in_both_checkpoints_start_the_run_afresh(synthetic_data, tmp_path, reference):
    interrupted(synthetic_data, tmp_path, after=2)
    for name in (CHECKPOINT_LATEST, CHECKPOINT_PREVIOUS):
        (tmp_path / name).write_bytes(os.urandom(4096))
    rec = Losses()
    fit(spec(synthetic_data, tmp_path), rec)
    assert rec.config["resumed_from"] == 0
    assert rec.losses == reference
    assert "checkpoint_previous.pt could not be read" in rec.config["resume_note"]


def test_temporary_files_of_killed_writes_are_removed(tmp_path):
    (tmp_path / "checkpoint_latest.pt.tmp1234").write_bytes(b"half")
    (tmp_path / "checkpoint_best_epoch3.pt.tmp99").write_bytes(b"half")
    (tmp_path / "epochs.csv").write_text("kept")
    assert sorted(remove_temp_files(tmp_path)) == [
        "checkpoint_best_epoch3.pt.tmp99",
        "checkpoint_latest.pt.tmp1234",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["epochs.csv"]


def test_a_best_weights_name_outside_the_folder_is_refused(synthetic_data, tmp_path):
    interrupted(synthetic_data, tmp_path, after=1)
    ckpt = torch.load(tmp_path / CHECKPOINT_LATEST, weights_only=True)
    ckpt["state"]["best_weights"] = "../../etc/passwd"
    torch.save(ckpt, tmp_path / CHECKPOINT_LATEST)
    found, notes = find_resumable(tmp_path, ckpt["identity"])
    assert found is None
    assert "names best weights ../../etc/passwd that could not be read" in notes[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 120 MB tmpfs: room for one checkpoint of the model with its best weights
    (about 50 + 43 MB), not for the two that are kept."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_with_the_folder_named(synthetic_data, small_disk):
    with pytest.raises(DiskFull, match=rf"disk full at {small_disk} while writing"):
        fit(spec(synthetic_data, small_disk, epochs=4), Losses())
    assert not [p.name for p in small_disk.iterdir() if ".tmp" in p.name]
    found, notes = find_resumable(small_disk, spec(synthetic_data, small_disk, epochs=4).identity)
    assert found is not None and found.checkpoint["state"]["epoch"] >= 1, notes

"""A run's checkpoint files: written atomically, the last two kept, checked before a
resume, removed when the run has finished.

- ``checkpoint_latest.pt`` and ``checkpoint_previous.pt``: model, optimizer, RNG
  states, epoch, best-so-far bookkeeping, and the identity of the run that wrote
  them (run uid, grid name, protocol hash). A resume refuses a checkpoint of
  another run, and falls back to the previous checkpoint when the latest one
  cannot be read (a write cut short, a damaged disk); with neither usable the run
  starts from epoch 1. What happened is said in one sentence on the run.
- ``checkpoint_best_epoch{N}.pt``: the best-so-far weights, written when they
  change; the files both kept checkpoints name are kept.
- Writes go to ``<name>.tmp<pid>`` and are renamed into place; a full disk raises
  DiskFull with the folder named, and leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from db.errors import SegbenchError

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_PREVIOUS = "checkpoint_previous.pt"
BEST_WEIGHTS = "checkpoint_best_epoch{epoch}.pt"
BEST_WEIGHTS_NAME = re.compile(r"checkpoint_best_epoch\d+\.pt")
TEMP_NAME = re.compile(r".+\.tmp\d+")
STATE_KEYS = ("model", "optimizer", "shuffle_rng", "augment_rng", "rng", "state")


class DiskFull(SegbenchError):
    """No room left where a run writes its checkpoints."""


@dataclass
class Resumable:
    """A checkpoint that passed every check, with the best weights it names."""

    checkpoint: dict
    best_model: dict | None
    source: str  # the file it came from


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save `obj` to `path` through a temporary file and a rename.

    The bytes are serialised in memory first, so a full disk shows as an OSError
    of the file write (torch's own writer reports it as an internal assertion)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free / 2**20
            raise DiskFull(
                f"disk full at {path.parent} while writing {path.name} "
                f"({buffer.tell() / 2**20:.0f} MB needed, {free:.0f} MB free); the earlier "
                "checkpoints are intact: free space there, then retry the run."
            ) from None
        raise


def save_latest(obj: dict, folder: Path) -> None:
    """Keep the current latest checkpoint as the previous one, then write the new one."""
    latest = folder / CHECKPOINT_LATEST
    if latest.exists():
        os.replace(latest, folder / CHECKPOINT_PREVIOUS)
    save_atomic(obj, latest)


def remove_temp_files(folder: Path) -> list[str]:
    """Delete what killed writes left behind (``*.tmp<pid>``); returns their names."""
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and TEMP_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return removed


def remove_best_weights_except(folder: Path, keep: set[str]) -> None:
    for path in folder.glob(BEST_WEIGHTS.format(epoch="*")):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def remove_training_state(folder: Path) -> None:
    """What a finished run no longer needs: its latest/previous checkpoints (with the
    optimizer state), best-so-far weights and temporary files. The best model
    (``checkpoint_best/``) and the run's summaries stay."""
    for name in (CHECKPOINT_LATEST, CHECKPOINT_PREVIOUS):
        (folder / name).unlink(missing_ok=True)
    remove_best_weights_except(folder, set())
    remove_temp_files(folder)


def _described(identity: dict | None) -> str:
    if not identity:
        return "a run of unknown identity"
    return f"run {identity.get('run_uid', '?')[:12]} ({identity.get('run', '?')})"


def find_resumable(folder: Path, identity: dict | None) -> tuple[Resumable | None, list[str]]:
    """The newest usable checkpoint in `folder` for the run `identity`, and one
    sentence per checkpoint that was passed over and why.

    With `identity` None (fit() called directly, outside the database) any
    readable checkpoint of the folder is taken."""
    notes: list[str] = []
    for name in (CHECKPOINT_LATEST, CHECKPOINT_PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(ckpt, dict) or any(k not in ckpt for k in STATE_KEYS):
                raise ValueError("not a segbench checkpoint")
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            notes.append(f"{name} could not be read ({type(error).__name__}: {reason})")
            continue
        if identity is not None and ckpt.get("identity") != identity:
            notes.append(
                f"{name} was written by {_described(ckpt.get('identity'))}, not this run; "
                "it was ignored"
            )
            continue
        best_name = ckpt["state"].get("best_weights")
        best_model = ckpt["state"].pop("best_model", None)  # older checkpoints: inline
        if best_name:
            try:
                if not BEST_WEIGHTS_NAME.fullmatch(str(best_name)):
                    raise ValueError(f"unexpected file name {best_name!r}")
                best_model = torch.load(folder / best_name, map_location="cpu", weights_only=True)[
                    "model"
                ]
            except Exception as error:
                notes.append(
                    f"{name} names best weights {best_name} that could not be read "
                    f"({type(error).__name__})"
                )
                continue
        return Resumable(ckpt, best_model, name), notes
    return None, notes

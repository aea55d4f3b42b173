"""Results and models out of the database: the frames behind `segbench export` and
`segbench compare`, and the model folders with their model cards.

Reads go through SQLAlchemy against db.models (plain selects; nothing is written).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import queries
from db.errors import UnknownSweep
from db.models import Artifact, Run, Sweep, TestSummary
from worker.data import sha256_file
from worker.grid import expand
from worker.metrics import summarize
from worker.predict import MODEL_FILES

log = logging.getLogger(__name__)

FILTERS = ("experiment", "architecture", "encoder", "family", "init")


class ExportError(ValueError):
    """Nothing to export, or a model file that is not where the database says."""


def run_name(run: Any) -> str:
    """The grid name of a run row (ORM object or dict)."""
    get = run.get if isinstance(run, dict) else lambda k: getattr(run, k)
    return f"{get('experiment')}-{get('architecture')}-{get('encoder')}-{get('init')}"


def _values(v: str | Sequence[str] | None) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


def runs_query(session: Session, *, sweep: str | None = None, **filters: Any):
    """Select succeeded runs (joined with sweep, summary, checkpoint) by grid filters."""
    chosen = {k: _values(filters.get(k)) for k in FILTERS}
    expand(
        chosen["experiment"],
        chosen["architecture"],
        chosen["encoder"],
        chosen["family"],
        chosen["init"],
    )  # raises GridError naming a bad value
    if sweep is not None and session.scalar(select(Sweep.id).where(Sweep.name == sweep)) is None:
        known = ", ".join(session.scalars(select(Sweep.name).order_by(Sweep.name))) or "none"
        raise UnknownSweep(f"No sweep named '{sweep}'; known sweeps: {known}.")
    stmt = (
        select(Run, Sweep, TestSummary, Artifact)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .join(TestSummary, TestSummary.run_id == Run.id)
        .outerjoin(Artifact, (Artifact.run_id == Run.id) & (Artifact.kind == "checkpoint"))
        .where(Run.status == "succeeded")
        .order_by(Run.id)
    )
    if sweep is not None:
        stmt = stmt.where(Sweep.name == sweep)
    columns = {"experiment": Run.experiment, "architecture": Run.architecture, "init": Run.init}
    for key, column in columns.items():
        if chosen[key]:
            stmt = stmt.where(column.in_(chosen[key]))
    if chosen["encoder"] or chosen["family"]:  # union, as in worker.grid.expand
        stmt = stmt.where(Run.encoder.in_(chosen["encoder"]) | Run.family.in_(chosen["family"]))
    return stmt


def run_counts(session: Session, run_ids: Sequence[int]) -> dict[int, pd.DataFrame]:
    """Per-slice counts of each run: DataFrame (idx, volume, slice, tp, fp, fn, tn)."""
    rows = queries.slice_results(session, run_ids=run_ids)
    df = pd.DataFrame(rows, columns=["run_id", *SLICE_COLUMNS])
    return {
        int(k): g.drop(columns="run_id").reset_index(drop=True) for k, g in df.groupby("run_id")
    }


SLICE_COLUMNS = ["idx", "volume", "slice", "tp", "fp", "fn", "tn"]
RESULT_COLUMNS = [
    "id",
    "sweep",
    "experiment",
    "architecture",
    "encoder",
    "family",
    "init",
    "synthetic",
    "dataset_name",
    "metric_mode",
    "sensitivity",
    "specificity",
    "dice",
    "dice_std",
    "pooled_dice",
    "parameters_m",
    "train_seconds_per_epoch",
    "val_seconds_per_epoch",
]


def results_frame(
    session: Session, *, metric_mode: str = "standard", sweep: str | None = None, **filters: Any
) -> pd.DataFrame:
    """One row per succeeded run with its test metrics (percent) in ``metric_mode``.

    Runs whose stored summary used another mode are recomputed from their per-slice
    counts, so every row is in the same mode.
    """
    rows = []
    for run, sw, summary, _ in session.execute(runs_query(session, sweep=sweep, **filters)):
        rows.append(
            {
                "id": run.id,
                "sweep": sw.name,
                **{k: getattr(run, k) for k in ("experiment", "architecture", "encoder")},
                "family": run.family,
                "init": run.init,
                "synthetic": bool(run.synthetic),
                "dataset_name": run.dataset_name,
                "metric_mode": summary.metric_mode,
                **{
                    k: getattr(summary, k)
                    for k in ("sensitivity", "specificity", "dice", "dice_std", "pooled_dice")
                },
                "parameters_m": run.parameters_m,
                "train_seconds_per_epoch": run.train_seconds_per_epoch,
                "val_seconds_per_epoch": run.val_seconds_per_epoch,
            }
        )
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    stale = df.index[df["metric_mode"] != metric_mode]
    if len(stale):
        counts = run_counts(session, df.loc[stale, "id"].tolist())
        for i in stale:
            c = counts.get(int(df.at[i, "id"]))
            if c is None or c.empty:
                raise ExportError(
                    f"Run {df.at[i, 'id']} has no per-slice counts, so its metrics cannot be "
                    f"recomputed in mode {metric_mode}; export it in mode "
                    f"{df.at[i, 'metric_mode']}."
                )
            s = summarize(c[["tp", "fp", "fn", "tn"]].to_numpy(), metric_mode)
            for k, v in s.items():
                df.at[i, k] = v
            df.at[i, "metric_mode"] = metric_mode
    return df


# ---------------------------------------------------------------- models


def _versions_table(versions: dict | None) -> str:
    if not versions:
        return "not recorded"
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def model_card(meta: dict, run: dict) -> str:
    """README.md of an exported model: what it is, how it was made, how to use it."""
    name = run["name"]
    test = meta.get("test") or {}
    pre = meta.get("preprocessing") or {}
    norm = pre.get("normalisation") or {"mean": -500.0, "std": 500.0}
    protocol = meta.get("protocol") or {}
    synthetic = bool(run.get("synthetic"))
    warning = (
        "\n> **SYNTHETIC — not a medical model.** This model was trained and tested on "
        "GENERATED stand-in data (`segbench data synth`), not on CT scans of patients. "
        "Its weights and scores say nothing about real CT; use it only to test software.\n"
        if synthetic
        else ""
    )
    lung = (
        "\nThis is a lesion-segmentation-b model: its input is the normalised slice "
        "multiplied by a binary lung mask. Run it behind a lung-segmentation model "
        "(`--lung-model`).\n"
        if pre.get("lung_masked_input")
        else ""
    )
    metric = lambda k: f"{test[k]:.2f}" if isinstance(test.get(k), int | float) else "-"  # noqa: E731
    return f"""---
library_name: segmentation-models-pytorch
tags: [segmentation, ct, covid-19, lung, segbench{", synthetic" if synthetic else ""}]
---
# {name}
{warning}
A {run["architecture"]} with a {run["encoder"]} encoder ({run["init"]} initialisation)
trained for **{run["experiment"]}** with segbench, which reproduces the 600-model
benchmark of Bizopoulos, Vretos and Daras (2020), "Comprehensive Comparison of Deep
Learning Models for Lung and COVID-19 Lesion Segmentation in CT scans"
(arXiv:2009.06412). Sweep `{run["sweep"]}`, run id {run["id"]}.
{lung}
## Input and preprocessing
- One axial CT slice (`volume[..., i]`), Hounsfield units, one channel.
- Resized to {pre.get("image_size")} x {pre.get("image_size")} (bilinear), normalised
  as (HU - ({norm["mean"]})) / {norm["std"]}.
- Output: sigmoid probability per pixel; threshold {pre.get("threshold", 0.5)}.

## Test metrics ({test.get("metric_mode", "standard")} mode, mean over test slices, %)
| Dice | Sensitivity | Specificity |
|---:|---:|---:|
| {metric("dice")} | {metric("sensitivity")} | {metric("specificity")} |

## Training
- Data: `{run["dataset_name"]}` (manifest {run.get("manifest_hash") or "-"})
  {"— **SYNTHETIC generated data**" if synthetic else ""}
- Protocol: {json.dumps(protocol, sort_keys=True)}
- Best epoch {meta.get("best_epoch", "-")} of {protocol.get("epochs", "-")};
  {run.get("parameters_m") or 0:.2f} M parameters.
- Library versions: {_versions_table(run.get("library_versions"))}.
- Code: segbench git commit `{run.get("git_commit") or "unknown"}`.

## Use
```python
import segmentation_models_pytorch as smp
model = smp.from_pretrained("{name}")  # this folder; safetensors, no pickle
```
or segment a whole NIfTI volume on CPU:
```
segbench predict --model {name} --input CT.nii.gz --output mask.nii.gz
```
Files: model.safetensors (sha256 {run.get("sha256") or "-"}), config.json (smp),
segbench.json (run spec, protocol, preprocessing, test metrics).
"""


def export_models(session: Session, dest: Path | str, **filters: Any) -> list[dict]:
    """Copy the best model of every selected succeeded run into ``dest/<run name>/``
    with a README.md model card. Each folder is written next to its final name and
    renamed into place, so an interrupted export leaves no half-written model."""
    dest = Path(dest)
    rows = session.execute(runs_query(session, **filters)).all()
    if not rows:
        raise ExportError("No succeeded run matches the selection; nothing to export.")
    names = [run_name(r) for r, *_ in rows]
    dest.mkdir(parents=True, exist_ok=True)
    exported = []
    for (run, sweep, _, artifact), name in zip(rows, names, strict=True):
        folder = name if names.count(name) == 1 else f"{name}-run{run.id}"
        source = Path(artifact.path) if artifact is not None and artifact.path else None
        if source is None or not all((source / f).is_file() for f in MODEL_FILES):
            raise ExportError(
                f"Run {run.id} ({name}): its best model is not at {source} (expected "
                f"{', '.join(MODEL_FILES)}); run the export where the worker's artifacts are."
            )
        if artifact.sha256 and sha256_file(source / "model.safetensors") != artifact.sha256:
            raise ExportError(
                f"Run {run.id} ({name}): {source / 'model.safetensors'} does not match "
                "the sha256 the database recorded; it was changed after the run."
            )
        meta = json.loads((source / "segbench.json").read_text())
        info = {
            "id": run.id,
            "name": folder,
            "sweep": sweep.name,
            **{k: getattr(run, k) for k in ("experiment", "architecture", "encoder", "init")},
            "synthetic": bool(run.synthetic),
            "dataset_name": run.dataset_name,
            "manifest_hash": run.manifest_hash,
            "parameters_m": run.parameters_m,
            "library_versions": run.library_versions,
            "git_commit": run.git_commit,
            "sha256": artifact.sha256,
        }
        tmp = dest / f".{folder}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for f in MODEL_FILES:
                shutil.copy2(source / f, tmp / f)
            (tmp / "README.md").write_text(model_card(meta, info))
            final = dest / folder
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        exported.append({"id": run.id, "name": folder, "path": str(dest / folder)})
    return exported

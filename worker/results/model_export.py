"""Trained models out of the database: each run's best model copied with a model card
(`segbench export models`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import queries
from db.grid import run_name
from worker.data.layout import sha256_file
from worker.data.preprocess import HU_MEAN, HU_STD
from worker.results.frames import ExportError
from worker.training.models import MODEL_FILES

log = logging.getLogger(__name__)


def _versions_table(versions: dict | None) -> str:
    if not versions:
        return "not recorded"
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def model_card(meta: dict, run: dict) -> str:
    """README.md of an exported model: what it is, how it was made, how to use it."""
    name = run["name"]
    test = meta.get("test") or {}
    pre = meta.get("preprocessing") or {}
    norm = pre.get("normalisation") or {"mean": HU_MEAN, "std": HU_STD}
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
    with a README.md model card. Every model is checked (present, the sha256 the
    database recorded) before the first is written, and each folder is written next
    to its final name and renamed into place: a failed export writes nothing."""
    dest = Path(dest)
    rows = queries.succeeded_runs(session, **filters)
    if not rows:
        raise ExportError("No succeeded run matches the selection; nothing to export.")
    names = [run_name(r) for r in rows]
    checked = []
    for run, name in zip(rows, names, strict=True):
        folder = name if names.count(name) == 1 else f"{name}-run{run['id']}"
        folder = folder.replace(":", ".")  # a user model's module:function
        checked.append((run, folder, _checked_source(run, name)))
    dest.mkdir(parents=True, exist_ok=True)
    exported = []
    for run, folder, source in checked:
        meta = json.loads((source / "segbench.json").read_text())
        info = {
            **{k: run[k] for k in ("id", "sweep", "experiment", "architecture", "encoder")},
            "name": folder,
            "init": run["init"],
            "synthetic": bool(run["synthetic"]),
            **{k: run[k] for k in ("dataset_name", "manifest_hash", "parameters_m")},
            **{k: run[k] for k in ("library_versions", "git_commit")},
            "sha256": run["checkpoint_sha256"],
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
        exported.append({"id": run["id"], "name": folder, "path": str(dest / folder)})
    return exported


def _checked_source(run: dict, name: str) -> Path:
    """The run's best-model folder, present and as the database recorded it."""
    source = Path(run["checkpoint_path"]) if run["checkpoint_path"] else None
    if source is None or not all((source / f).is_file() for f in MODEL_FILES):
        raise ExportError(
            f"Run {run['id']} ({name}): its best model is not at {source} (expected "
            f"{', '.join(MODEL_FILES)}); run the export where the worker's artifacts are."
        )
    sha = run["checkpoint_sha256"]
    if sha and sha256_file(source / "model.safetensors") != sha:
        raise ExportError(
            f"Run {run['id']} ({name}): {source / 'model.safetensors'} does not match "
            "the sha256 the database recorded; it was changed after the run."
        )
    return source

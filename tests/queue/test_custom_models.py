"""A user's own model through the queue: the tiny model module of tests/fixtures
trains through a real `segbench worker` process on the embedded broker (SQLite) beside
a grid baseline, shows in `segbench status` and the leaderboard, exports and predicts
a NIfTI mask; a module only the submitting machine can import fails its run with one
sentence naming the module and the worker's host, while the rest of the sweep
succeeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model.py"
ROOT = Path(__file__).resolve().parents[2]


def test_own_model_trains_beside_a_baseline_and_unimportable_one_fails(
    embedded, synthetic_data, tmp_path, monkeypatch
):
    shared = tmp_path / "shared-models"  # importable here and on the worker
    laptop = tmp_path / "laptop-models"  # importable only where the runs are submitted
    shared.mkdir()
    laptop.mkdir()
    shutil.copy(FIXTURE, shared / "tiny_model.py")
    shutil.copy(FIXTURE, laptop / "laptop_model.py")
    monkeypatch.syspath_prepend(str(shared))
    monkeypatch.syspath_prepend(str(laptop))

    x = ["-x", "lung-segmentation"]
    baseline = embedded.submit(*x, "-a", "pspnet", "-e", "resnet18", "-i", "random",
                               data=synthetic_data, sweep="mine")  # fmt: skip
    (own,) = embedded.submit(*x, "--model", "tiny_model:build", data=synthetic_data, sweep="mine")
    (lost,) = embedded.submit(
        *x, "--model", "laptop_model:build", data=synthetic_data, sweep="mine"
    )
    # submit refuses a model it cannot import itself, writing nothing
    refused = embedded.cli("submit", *x, "--model", "absent_module:build", "--data",
                           str(synthetic_data), "--sweep", "mine", check=False)  # fmt: skip
    assert refused.exit_code == 1
    assert "Cannot import the model module 'absent_module'" in refused.output

    pythonpath = os.pathsep.join(p for p in (str(shared), os.environ.get("PYTHONPATH")) if p)
    embedded.start_worker(env={"PYTHONPATH": pythonpath, "SEGBENCH_WORKER_HOST": "gpu-node-7"})
    runs = embedded.wait_finished(300)
    assert sorted(runs) == sorted([*baseline, own, lost])
    assert runs[baseline[0]]["status"] == "succeeded", runs[baseline[0]]["error"]
    assert runs[own]["status"] == "succeeded", runs[own]["error"]
    assert runs[lost]["status"] == "failed"
    error = runs[lost]["error"]
    assert error.startswith("Cannot import the model module 'laptop_model' on host gpu-node-7")
    assert error.count(". ") == 0 and error.endswith(".")

    # provenance: the name, the source file's sha256, the package version
    from db import queries
    from db.session import session_scope

    with session_scope(embedded.db_url) as session:
        detail = queries.run_detail(session, run_id=own)
        board = queries.leaderboard(session, sweep=["mine"])
    model = detail["config"]["model"]
    assert model["name"] == "tiny_model.build" and model["ref"] == "tiny_model:build"
    assert model["sha256"] == __import__("hashlib").sha256(FIXTURE.read_bytes()).hexdigest()
    assert model["output"] == "logits" and model["output_from"] == "attribute"
    assert "version" in model and detail["config"]["paper"] is False
    assert detail["family"] == "custom" and detail["init"] == "own"

    status = json.loads(embedded.cli("status", "--format", "json").stdout)
    mine = {r["id"]: r for r in status}
    assert mine[own]["architecture"] == "custom" and mine[own]["status"] == "succeeded"
    scored = {r["id"]: r for r in board if r["dice"] is not None}
    assert set(scored) == {baseline[0], own}

    # Table 2 shows the model beside the baseline, marked
    table = embedded.cli("export", "table", "--sweep", "mine", "--format", "markdown").stdout
    assert "◆ tiny_model:build" in table and "resnet18" in table
    assert "a user's own model" in table

    # the report ranks it with the baseline and marks it
    report = json.loads(embedded.cli("report", "--sweep", "mine", "--format", "json").stdout)
    grids = {r["id"]: r["grid"] for r in report["runs"]}
    assert grids == {baseline[0]: "paper", own: "custom"}
    assert {r["id"] for r in report["ranking"]} == {baseline[0], own}
    text = embedded.cli("report", "--sweep", "mine", "--format", "markdown").stdout
    assert "◆custom tiny_model:build" in text and "a user's own model" in text

    # compared against the sweep's paper-grid baselines (one here: pspnet-resnet18)
    compared = json.loads(
        embedded.cli("compare", "--run", str(own), "--against", "mine", "--resamples", "200",
                     "--format", "json").stdout
    )  # fmt: skip
    assert compared["baselines"] == 1 and compared["best_baseline"]["id"] == baseline[0]
    assert compared["rank"]["of"] == 2 and 1 <= compared["rank"]["low"] <= 2
    # the synthetic test set has 2 volumes: volumes are resampled, then slices
    assert compared["rank"]["resampled"] == compared["difference"]["resampled"]
    assert compared["rank"]["resampled"] == "volumes+slices"
    assert compared["run"]["dice"] == pytest.approx(scored[own]["dice"], abs=1e-6)
    text = embedded.cli("compare", "--run", str(own), "--against", "mine").stdout
    assert "rank" in text and "Holm" in text and "volumes+slices resampled" in text

    # export and predict in fresh processes, with and without the module importable
    exported = json.loads(
        embedded.cli("export", "models", "--dir", str(tmp_path / "export"), "--sweep", "mine",
                     "--format", "json").stdout
    )  # fmt: skip
    folder = Path(next(e["path"] for e in exported if e["id"] == own))
    config = json.loads((folder / "config.json").read_text())
    assert config["_model_class"] == "segbench-custom" and config["ref"] == "tiny_model:build"
    ct = synthetic_data / "rp_im" / "1.nii.gz"
    out = tmp_path / "mask.nii.gz"
    predict = [sys.executable, "-m", "worker.cli", "predict", "--model", str(folder),
               "--input", str(ct), "--output", str(out), "--format", "json"]  # fmt: skip
    env = {**embedded.env, "PYTHONPATH": pythonpath}
    proc = subprocess.run(predict, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    mask = np.asarray(nib.load(str(out)).dataobj)
    assert mask.shape == nib.load(str(ct)).shape and set(np.unique(mask)) <= {0, 1}

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    out.unlink()
    proc = subprocess.run(predict, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "needs its builder tiny_model:build importable" in proc.stderr
    assert not out.exists()


def test_worker_refuses_a_module_that_changed_since_submit(tmp_path, synthetic_data, monkeypatch):
    """The worker's copy of the module must have the sha256 recorded at submit."""
    from db import jobs
    from db import migrate as alembic
    from db.grid import custom_specs
    from db.protocol import Protocol
    from db.session import dispose_engine, session_scope
    from worker.data import dataset_info
    from worker.queue.runner import check_model
    from worker.training import custom

    monkeypatch.syspath_prepend(str(FIXTURE.parent))
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    alembic.upgrade(url)
    (spec,) = custom_specs("tiny_model:build", ["lung-segmentation"])
    submitted = {**custom.check("tiny_model:build", 64), "sha256": "0" * 64}
    try:
        with session_scope(url) as session:
            (run_id,) = jobs.submit(
                session, specs=[spec], protocol=Protocol(epochs=1, image_size=64),
                sweep="changed", data_dir=str(synthetic_data),
                dataset=dataset_info(synthetic_data), models={spec.encoder: submitted},
            )  # fmt: skip
        with pytest.raises(custom.ModelImportError, match=r"is not the code submitted"):
            check_model(url, run_id, spec)
    finally:
        dispose_engine(url)

"""`segbench predict`: a model trained on generated data segments a test volume in a
fresh process exactly as the run's evaluation did; bad inputs end in one sentence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from db.grid import RunSpec
from db.protocol import Protocol
from worker.cli import load_commands
from worker.data import dataset_info, load_dataset, resize_nearest
from worker.inference.predict import (
    PredictError,
    load_saved_model,
    model_input,
    predict_slices,
    read_ct,
    segment,
)
from worker.results import stats

ROOT = Path(__file__).resolve().parents[2]
# The same thread count as the in-process evaluation, so the floating-point sums agree.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = RunSpec("lung-segmentation", "linknet", "resnet18", "random")
PROTOCOL = Protocol(epochs=3, image_size=64)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory) -> Iterator[dict]:
    """One run trained for 3 epochs on the generated data, recorded in a SQLite DB."""
    import torch

    from db import jobs
    from db.session import session_scope
    from worker.queue.lease import DbRecorder
    from worker.training.trainer import TrainSpec, fit

    # One thread: several times faster than two when other processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("trained")
    url = f"sqlite:///{tmp / 'segbench.db'}"
    with session_scope(url) as session:
        (run_id,) = jobs.submit(
            session,
            specs=[RUN],
            protocol=PROTOCOL,
            sweep="predict-test",
            data_dir=str(synthetic_data),
            dataset=dataset_info(synthetic_data),
        )
        jobs.claim(session, run_id=run_id, worker="pytest")
    spec = TrainSpec(
        run=RUN, protocol=PROTOCOL, data_dir=synthetic_data, artifacts_dir=tmp / "artifacts"
    )
    outcome = fit(spec, DbRecorder(url, run_id))
    yield {
        "url": url,
        "run_id": run_id,
        "model": Path(outcome.checkpoint_dir),
        "data": synthetic_data,
        "tmp": tmp,
    }
    torch.set_num_threads(threads)


def stored_counts(url: str, run_id: int) -> np.ndarray:
    from db.queries import slice_results
    from db.session import session_scope

    with session_scope(url) as session:
        rows = slice_results(session, run_ids=[run_id])
    return np.array([[r["volume"], r["slice"], r["tp"], r["fp"], r["fn"], r["tn"]] for r in rows])


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    p, t = pred.reshape(len(pred), -1) > 0, truth.reshape(len(truth), -1) > 0
    tp, fp, fn = (p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)
    return np.stack([tp, fp, fn, p.shape[1] - tp - fp - fn], 1)


def test_predict_in_fresh_process_matches_stored_counts(trained):
    """Volume 2 of the test set (0-based volume 1) through the command line: resized
    back to the image size (nearest), the written mask is exactly the mask the run's
    evaluation scored, so its per-slice counts and 3-D Dice equal the stored ones."""
    out = trained["tmp"] / "volume2_mask.nii.gz"
    ct = trained["data"] / "rp_im" / "2.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "predict", "--model", str(trained["model"]),
         "--input", str(ct), "--output", str(out), "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["synthetic_training_data"] is True

    img, written = nib.load(str(ct)), nib.load(str(out))
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, img.affine)
    assert written.shape == img.shape
    assert written.header.get_zooms() == img.header.get_zooms()
    mask = np.asarray(written.dataobj)
    assert set(np.unique(mask)) <= {0, 1}

    model_size = resize_nearest(np.moveaxis(mask, -1, 0), PROTOCOL.image_size)
    test = load_dataset(trained["data"], RUN.experiment, PROTOCOL.image_size).test
    truth = test.masks[test.volume == 1]
    ours = counts(model_size, truth)
    stored = stored_counts(trained["url"], trained["run_id"])
    stored_v1 = stored[stored[:, 0] == 1]
    np.testing.assert_array_equal(stored_v1[:, 1], np.arange(len(truth)))
    np.testing.assert_array_equal(ours, stored_v1[:, 2:])

    dice_3d = 2 * (model_size & truth).sum() / (model_size.sum() + truth.sum())
    per_volume = stats.volume_dice(stored[:, 2:], stored[:, 0])
    assert dice_3d == pytest.approx(per_volume[1], abs=1e-12)
    assert per_volume[1] > 0.5  # three epochs learn the lungs of the generated data


def test_segment_matches_evaluation_on_every_test_volume(trained):
    saved = load_saved_model(trained["model"])
    test = load_dataset(trained["data"], RUN.experiment, PROTOCOL.image_size).test
    stored = stored_counts(trained["url"], trained["run_id"])
    for v in np.unique(test.volume):
        _, hu = read_ct(trained["data"] / "rp_im" / f"{v + 1}.nii.gz")
        seg = segment(saved, hu)
        np.testing.assert_array_equal(
            counts(seg.model_mask, test.masks[test.volume == v]), stored[stored[:, 0] == v, 2:]
        )


def test_non_square_input_keeps_geometry(trained, tmp_path):
    _, hu = read_ct(trained["data"] / "rp_im" / "1.nii.gz")
    hu = hu[:70, :75, :3]
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 30]
    src = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), str(src))
    out = tmp_path / "mask.nii"
    result = CliRunner().invoke(
        load_commands(),
        ["predict", "--model", str(trained["model"]), "--input", str(src), "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    written = nib.load(str(out))
    assert written.shape == (70, 75, 3)
    np.testing.assert_allclose(written.affine, affine)


def fake_lesion_b(model: Path, tmp: Path) -> Path:
    """The lung model's weights relabelled as a lesion-segmentation-b model."""
    folder = tmp / "lesion-b"
    shutil.copytree(model, folder)
    meta = json.loads((folder / "segbench.json").read_text())
    meta["experiment"] = "lesion-segmentation-b"
    meta["preprocessing"]["lung_masked_input"] = True
    (folder / "segbench.json").write_text(json.dumps(meta))
    return folder


def test_cascade_masks_input_with_predicted_lungs(trained, tmp_path):
    lesion_b = load_saved_model(fake_lesion_b(trained["model"], tmp_path))
    lungs = load_saved_model(trained["model"])
    _, hu = read_ct(trained["data"] / "rp_im" / "1.nii.gz")
    seg = segment(lesion_b, hu, lung_model=lungs)
    x = model_input(hu, 64)
    expected_lungs = predict_slices(lungs, x)
    np.testing.assert_array_equal(seg.lungs, expected_lungs)
    np.testing.assert_array_equal(seg.model_mask, predict_slices(lesion_b, x * expected_lungs))
    with pytest.raises(PredictError, match="expected a lung-segmentation model"):
        segment(lungs, hu, lung_model=lesion_b)


def bad_inputs(trained, tmp: Path) -> dict[str, tuple[list[str], str]]:
    ct = str(trained["data"] / "rp_im" / "1.nii.gz")
    model = str(trained["model"])
    garbage = tmp / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file at all")
    flat = tmp / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8), -1000, np.int16), np.eye(4)), str(flat))
    unit = tmp / "unit.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(8, 8, 2).astype(np.float32), np.eye(4)), str(unit))
    no_meta = tmp / "no-meta"
    shutil.copytree(model, no_meta)
    (no_meta / "segbench.json").unlink()
    lesion_b = str(fake_lesion_b(trained["model"], tmp))
    return {
        "missing file": (["--model", model, "--input", str(tmp / "nope.nii.gz")], "does not exist"),
        "not a NIfTI": (["--model", model, "--input", str(garbage)], "not a readable NIfTI"),
        "not 3-D": (["--model", model, "--input", str(flat)], "expected a 3-D volume"),
        "not HU": (["--model", model, "--input", str(unit)], "Hounsfield"),
        "lesion-b alone": (["--model", lesion_b, "--input", ct], "--lung-model"),
        "no segbench.json": (["--model", str(no_meta), "--input", ct], "lacks segbench.json"),
        "no model folder": (["--model", str(tmp / "none"), "--input", ct], "does not exist"),
        "lung model not lung": (
            ["--model", lesion_b, "--lung-model", lesion_b, "--input", ct],
            "expected a lung-segmentation model",
        ),
    }


def test_bad_inputs_end_in_one_sentence_and_write_nothing(trained, tmp_path):
    app = load_commands()
    out = tmp_path / "out.nii.gz"
    for case, (args, expected) in bad_inputs(trained, tmp_path).items():
        result = CliRunner().invoke(app, ["predict", *args, "--output", str(out)])
        assert result.exit_code == 1, (case, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.stderr)
        assert expected in lines[0], (case, lines[0])
        assert not out.exists(), case
    assert list(tmp_path.glob(".out*")) == []


def test_bad_input_exit_code_in_a_fresh_process(trained, tmp_path):
    unit = tmp_path / "unit.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), str(unit))
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "predict", "--model", str(trained["model"]),
         "--input", str(unit), "--output", str(tmp_path / "m.nii.gz")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Hounsfield" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mesh_of_predicted_lungs(trained, tmp_path):
    from worker.inference.mesh import mask_surface, mesh_volume

    ct = trained["data"] / "rp_im" / "1.nii.gz"
    out = tmp_path / "lungs.stl"
    result = CliRunner().invoke(
        load_commands(),
        [
            "export",
            "mesh",
            "--model",
            str(trained["model"]),
            "--input",
            str(ct),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    img, hu = read_ct(ct)
    mask = segment(load_saved_model(trained["model"]), hu).mask
    verts, faces = mask_surface(mask, img.header.get_zooms()[:3])
    assert out.read_text().count("facet normal") == len(faces) > 0
    voxel_ml = float(np.prod(img.header.get_zooms()[:3]))
    assert mesh_volume(verts, faces) == pytest.approx(mask.sum() * voxel_ml, rel=0.35)


def test_predict_against_a_reference_mask(trained, tmp_path):
    from worker.training.boundary import boundary_metrics

    ct = trained["data"] / "rp_im" / "1.nii.gz"
    truth_path = trained["data"] / "rp_lung_msk" / "1.nii.gz"
    out = tmp_path / "lungs.nii.gz"
    result = CliRunner().invoke(
        load_commands(),
        ["predict", "--model", str(trained["model"]), "--input", str(ct), "--output", str(out),
         "--reference", str(truth_path), "--nsd-tolerance-mm", "5", "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = json.loads(result.stdout)["reference"]
    truth = np.asarray(nib.load(str(truth_path)).dataobj) > 0
    pred = np.asarray(nib.load(str(out)).dataobj) > 0
    zooms = nib.load(str(ct)).header.get_zooms()[:3]
    fractions = boundary_metrics(truth, pred, zooms, 5.0)
    # percent, like `segbench train --format json`, with the units named
    assert reference["dice"] == pytest.approx(100 * fractions["dice"])
    assert reference["nsd"] == pytest.approx(100 * fractions["nsd"])
    assert reference["hd95"] == pytest.approx(fractions["hd95"])
    assert reference["units"] == {"dice": "percent", "nsd": "percent", "hd95": "mm"}
    assert 50 < reference["dice"] <= 100 and 0 < reference["nsd"] <= 100
    assert reference["boundary_mode"] == "surface-area"
    # The table names the mode; the border-voxel mode is one option away.
    table = CliRunner().invoke(
        load_commands(),
        ["predict", "--model", str(trained["model"]), "--input", str(ct), "--output", str(out),
         "--reference", str(truth_path), "--boundary-mode", "border-voxel"],
    )  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "(border-voxel surfaces)" in table.stdout
    # both outputs say at which resolution they scored
    assert "input's resolution" in reference["resolution"] and not reference["missed"]
    assert "input's resolution" in table.stdout
    # an empty reference: HD95 is the volume's diagonal, as in a run's test pass
    img = nib.load(str(truth_path))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine, img.header), empty)
    missed = CliRunner().invoke(
        load_commands(),
        ["predict", "--model", str(trained["model"]), "--input", str(ct), "--output", str(out),
         "--reference", str(empty), "--format", "json"],
    )  # fmt: skip
    assert missed.exit_code == 0, missed.output
    got = json.loads(missed.stdout)["reference"]
    diagonal = float(np.sqrt(sum((n * z) ** 2 for n, z in zip(img.shape, zooms, strict=True))))
    assert got["missed"] and got["hd95"] == pytest.approx(diagonal) and got["nsd"] == 0
    bad = CliRunner().invoke(
        load_commands(),
        ["predict", "--model", str(trained["model"]), "--input", str(ct), "--output", str(out),
         "--reference", str(truth_path), "--boundary-mode", "mesh"],
    )  # fmt: skip
    assert bad.exit_code != 0 and "Unknown --boundary-mode 'mesh'" in bad.output

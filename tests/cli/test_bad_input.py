"""Bad input gets one sentence and exit 1 (or a refused option range), and nothing is
written: each case is one a hostile but realistic user tried."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import Run, Sweep
from db.session import dispose_engine, session_scope
from worker.cli import load_commands

TINY = ["-x", "lung-segmentation", "-a", "pspnet", "-e", "resnet18", "-i", "random"]


def segbench(*args: str, env: dict | None = None):
    return CliRunner().invoke(load_commands(), list(args), env=env, catch_exceptions=False)


def one_sentence(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.count("\n") == 0 and text.startswith("error: "), text
    assert "Traceback" not in text and "\x1b" not in text
    for needle in needles:
        assert needle in text, text


def runs_in(url: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count(Run.id))) + session.scalar(
            select(func.count(Sweep.id))
        )


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    yield url
    dispose_engine(url)


def submit(db, data, *extra):
    broker = f"sqla+sqlite:///{Path(db.removeprefix('sqlite:///')).with_suffix('.broker')}"
    return segbench("submit", *TINY, "--data", str(data), "--db", db, "--broker", broker, *extra)


def test_an_absurd_number_of_epochs_is_refused_before_any_row(db, synthetic_data):
    result = submit(db, synthetic_data, "--epochs", "99999999999999999999")
    one_sentence(result, "epochs must be a whole number from 1 to 100000")
    result = segbench("train", *TINY, "--data", str(synthetic_data), "--db", db, "--epochs", "0")
    one_sentence(result, "epochs must be a whole number from 1 to 100000")
    assert runs_in(db) == 0


@pytest.mark.parametrize(
    "name",
    ["two words", "x" * 5000, "evil\x1b[31mred", "-starts-with-a-dash", ""],
    ids=["spaces", "5000-chars", "escape-codes", "dash", "empty"],
)
def test_sweep_names_are_checked_and_never_echoed_raw(db, synthetic_data, name):
    result = submit(db, synthetic_data, "--sweep", name, "--epochs", "1")
    one_sentence(result, "is not usable; expected 1 to 100 letters")
    assert len(result.output) < 400
    assert runs_in(db) == 0


def test_a_file_that_is_not_a_database(tmp_path):
    fake = tmp_path / "passwd"
    fake.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    result = segbench("status", "--db", f"sqlite:///{fake}")
    one_sentence(result, "is not a segbench database")
    assert fake.read_text().startswith("root:x")


def test_reading_a_mistyped_sqlite_path_creates_nothing(tmp_path):
    typo = tmp_path / "segbnech.db"
    for command in (["status"], ["export", "table"], ["compare", "1", "2"]):
        result = segbench(*command, "--db", f"sqlite:///{typo}")
        one_sentence(result, "No database at", "segbnech.db")
    assert not typo.exists()


@pytest.mark.parametrize(
    ("device", "says"),
    [("tpu", "Unknown device 'tpu'"), ("cuda", "CUDA is not available here")],
)
def test_a_device_that_is_not_here_writes_no_run(db, synthetic_data, device, says):
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    result = segbench("train", *TINY, "--data", str(synthetic_data), "--db", db, "--device", device)
    one_sentence(result, says)
    assert runs_in(db) == 0
    # and the same run then trains on the CPU: nothing blocks it
    result = segbench(
        "train", *TINY, "--data", str(synthetic_data), "--db", db, "--epochs", "1",
        "--image-size", "64", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_submit_verifies_the_dataset_as_train_does(db, synthetic_data, tmp_path):
    data = tmp_path / "nan-data"
    shutil.copytree(synthetic_data, data)
    image = nib.load(data / "tr_im.nii.gz")
    array = np.asarray(image.dataobj).astype(np.float32)
    array[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(array, image.affine), data / "tr_im.nii.gz")
    (data / "manifest.json").unlink()  # no checksum to trip over first: the NaN must be found
    result = submit(db, data, "--epochs", "1")
    one_sentence(result, "is not usable", "NaN")
    assert runs_in(db) == 0


def test_dataset_toml_paths_stay_inside_the_folder(tmp_path):
    outside = tmp_path / "secret.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), outside)
    root = tmp_path / "ct"
    root.mkdir()
    tables = "".join(
        f'[[{split}]]\nimage = "../secret.nii.gz"\n' for split in ("train", "validation", "test")
    )
    (root / "dataset.toml").write_text(tables)
    result = segbench("data", "verify", "--dir", str(root))
    assert result.exit_code == 1
    assert "outside the dataset folder" in result.output


def test_predict_refuses_a_zero_batch_and_a_negative_tolerance(tmp_path):
    args = ["predict", "--model", str(tmp_path), "--input", str(tmp_path / "ct.nii.gz")]
    args += ["--output", str(tmp_path / "mask.nii.gz")]
    result = segbench(*args, "--batch-size", "0")
    assert result.exit_code == 2 and "Invalid value" in result.output
    one_sentence(segbench(*args, "--nsd-tolerance-mm", "-1"), "--nsd-tolerance-mm must be above 0")
    # the old name still works, and says it is deprecated
    old = segbench(*args, "--tolerance-mm", "-1")
    assert old.exit_code == 1
    warning, error = old.output.strip().splitlines()
    assert (
        warning.startswith("warning: --tolerance-mm is deprecated")
        and "--nsd-tolerance-mm" in warning
    )
    assert error == "error: --tolerance-mm must be above 0, got -1."
    assert "--tolerance-mm " not in segbench("predict", "--help").output
    assert not (tmp_path / "mask.nii.gz").exists()


BROKEN_MODELS = {
    "raises": "        return self.conv(x)  # 3 input channels: a 1-channel slice fails\n",
    "returns a tuple": "        return (x, x)\n",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_MODELS))
def test_a_user_model_whose_test_forward_pass_fails_is_one_sentence(
    db, synthetic_data, tmp_path, monkeypatch, kind
):
    (tmp_path / "broken_net.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.conv = nn.Conv2d(3, 1, 3, padding=1)\n\n"
        "    def forward(self, x):\n" + BROKEN_MODELS[kind] + "\n\n"
        "def build(in_channels, classes):\n    return Net()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    result = segbench(
        "submit", "--model", "broken_net:build", "-x", "lung", "--data", str(synthetic_data),
        "--db", db, "--broker", broker, "--epochs", "1", "--image-size", "64",
    )  # fmt: skip
    one_sentence(result, "The model broken_net.build", "(2, 1, 64, 64)")
    assert runs_in(db) == 0


def test_a_model_folder_cannot_make_predict_allocate_terabytes(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_text("{}")
    (model / "segbench.json").write_text(
        json.dumps({"experiment": "lung-segmentation", "preprocessing": {"image_size": 1048576}})
    )
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), -1000, np.int16), np.eye(4)), ct)
    result = segbench(
        "predict", "--model", str(model), "--input", str(ct), "--output", str(tmp_path / "m.nii.gz")
    )
    one_sentence(result, "image_size 1048576 is not usable")


def test_four_concurrent_upgrades_of_a_fresh_database_all_succeed(tmp_path):
    from tests.support.pg_databases import create_database, drop_database

    for url in (f"sqlite:///{tmp_path / 'fresh.db'}", create_database("segbench_upgrade")):
        try:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "worker.cli", "db", "upgrade", "--db", url],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(4)
            ]
            outcomes = [(p.wait(120), p.stderr.read()) for p in procs]
            assert all(code == 0 for code, _ in outcomes), outcomes
            assert not any("Traceback" in err for _, err in outcomes)
        finally:
            if url.startswith("postgresql"):
                dispose_engine(url)
                drop_database(url)


def test_a_finished_runs_deleted_artifacts_give_one_sentence(db, synthetic_data, tmp_path):
    result = segbench(
        "train", *TINY, "--data", str(synthetic_data), "--db", db, "--epochs", "1",
        "--image-size", "64", "--format", "json", "--artifacts", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shutil.rmtree(tmp_path / "run")  # moved or deleted after the run
    out = tmp_path / "released"
    one_sentence(
        segbench("export", "models", "--dir", str(out), "--db", db), "best model is not at"
    )
    assert not out.exists() or not any(out.iterdir())
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((64, 64, 2), -1000, np.int16), np.eye(4)), ct)
    result = segbench(
        "predict", "--model", str(tmp_path / "run" / "checkpoint_best"), "--input", str(ct),
        "--output", str(tmp_path / "mask.nii.gz"),
    )  # fmt: skip
    one_sentence(result)
    assert not (tmp_path / "mask.nii.gz").exists()
    assert segbench("status", "--db", db).exit_code == 0  # nothing else breaks

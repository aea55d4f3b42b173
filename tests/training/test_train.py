"""Training and evaluation of one run: real learning, resume, cancel, CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from db.grid import RunSpec
from db.protocol import Protocol
from worker import data
from worker.training.evaluate import gallery_indices
from worker.training.metrics import summarize
from worker.training.recorder import Cancelled, Recorder
from worker.training.trainer import TrainSpec, fit

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def learnable_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("learnable")
    data.synth(path, image_size=64, train_slices=40, test_volumes=2, slices_per_volume=10, seed=3)
    return path


def _all_background_dice(path, experiment):
    ds = data.load_dataset(path, experiment, 64)
    area = ds.test.masks.reshape(len(ds.test.masks), -1).sum(1)
    counts = np.array([[0, 0, a, ds.test.masks[0].size - a] for a in area])
    return summarize(counts)["dice"]


@pytest.mark.slow
def test_model_learns_lungs_well_above_chance(learnable_data, tmp_path):
    spec = TrainSpec(
        run=RunSpec("lung-segmentation", "unet", "resnet18", "random"),
        protocol=Protocol(epochs=4, image_size=64),
        data_dir=learnable_data,
        artifacts_dir=tmp_path,
    )
    outcome = fit(spec)
    baseline = _all_background_dice(learnable_data, "lung-segmentation")
    assert outcome.test.pooled_dice > 70, outcome.test
    assert outcome.test.dice > baseline + 30, (outcome.test.dice, baseline)
    assert 1 <= outcome.best_epoch <= 4
    assert (tmp_path / "checkpoint_best" / "model.safetensors").exists()
    assert len(outcome.test.slices) == 20
    assert outcome.gallery and outcome.first_layer_shape == (64, 1, 7, 7)


class ListRecorder(Recorder):
    def __init__(self, cancel_after=None):
        self.epochs, self.config, self.outcome = [], None, None
        self.cancel_after = cancel_after

    def start(self, config):
        self.config = config

    def epoch(self, record):
        self.epochs.append(record)

    def cancelled(self):
        return self.cancel_after is not None and len(self.epochs) >= self.cancel_after

    def finish(self, outcome):
        self.outcome = outcome


@pytest.mark.slow
def test_recorder_sees_every_epoch_and_synthetic_flag(synthetic_data, tmp_path):
    rec = ListRecorder()
    spec = TrainSpec(
        run=RunSpec("lesion-segmentation-b", "fpn", "mobilenet_v2", "random"),
        protocol=Protocol(epochs=2, image_size=64),
        data_dir=synthetic_data,
        artifacts_dir=tmp_path,
    )
    outcome = fit(spec, rec)
    assert [r.epoch for r in rec.epochs] == [1, 2]
    assert rec.config["dataset"]["synthetic"] is True
    assert "synthetic" in rec.config["dataset"]["name"]
    assert rec.config["protocol_hash"] == spec.protocol.hash()
    assert rec.outcome is outcome
    assert all(np.isfinite(r.train_loss) and np.isfinite(r.val_loss) for r in rec.epochs)


def test_cancel_stops_after_the_epoch(synthetic_data, tmp_path):
    rec = ListRecorder(cancel_after=1)
    spec = TrainSpec(
        run=RunSpec("lung-segmentation", "linknet", "mobilenet_v2", "random"),
        protocol=Protocol(epochs=5, image_size=64),
        data_dir=synthetic_data,
        artifacts_dir=tmp_path,
    )
    with pytest.raises(Cancelled):
        fit(spec, rec)
    assert len(rec.epochs) == 1 and rec.outcome is None


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from dataclasses import asdict
    from db.grid import RunSpec
    from db.protocol import Protocol
    from worker.training.recorder import Recorder
    from worker.training.trainer import TrainSpec, fit

    data_dir, artifacts, log, crash_epoch, where = sys.argv[1:6]
    crash_epoch = int(crash_epoch)

    class R(Recorder):
        last = 0
        def epoch(self, record):
            with open(log, "a") as f:
                f.write(json.dumps(asdict(record)) + "\\n")
            self.last = record.epoch
            if where == "before-checkpoint" and record.epoch == crash_epoch:
                os._exit(3)
        def cancelled(self):
            if where == "after-checkpoint" and self.last == crash_epoch:
                os._exit(3)
            return False

    spec = TrainSpec(run=RunSpec("lesion-segmentation-a", "pspnet", "resnet18", "random"),
                     protocol=Protocol(epochs=4, image_size=64, seed=7),
                     data_dir=data_dir, artifacts_dir=artifacts)
    out = fit(spec, R())
    print(json.dumps({"counts": [[s.tp, s.fp, s.fn, s.tn] for s in out.test.slices],
                      "dice": out.test.dice, "best_epoch": out.best_epoch,
                      "best_val_loss": out.best_val_loss,
                      "sha": out.checkpoint_sha256}))
    """
)


def _run(data_dir, artifacts, log, crash_epoch=0, where="none"):
    return subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(data_dir),
            str(artifacts),
            str(log),
            str(crash_epoch),
            where,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def _losses(log):
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    by_epoch = {}
    for r in rows:  # a repeated epoch must repeat its numbers exactly
        if r["epoch"] in by_epoch:
            assert by_epoch[r["epoch"]] == (r["train_loss"], r["val_loss"])
        by_epoch[r["epoch"]] = (r["train_loss"], r["val_loss"])
    return by_epoch


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-checkpoint", "after-checkpoint"])
def test_interrupted_run_resumes_to_identical_numbers(synthetic_data, tmp_path, where):
    ref = _run(synthetic_data, tmp_path / "ref", tmp_path / "ref.jsonl")
    assert ref.returncode == 0, ref.stderr
    crashed = _run(synthetic_data, tmp_path / "res", tmp_path / "res.jsonl", 2, where)
    assert crashed.returncode == 3, crashed.stderr
    assert (tmp_path / "res" / "checkpoint_latest.pt").exists()
    resumed = _run(synthetic_data, tmp_path / "res", tmp_path / "res.jsonl")
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(tmp_path / "res.jsonl") == _losses(tmp_path / "ref.jsonl")
    a, b = json.loads(ref.stdout), json.loads(resumed.stdout)
    assert a == b


def test_gallery_indices_prefer_large_targets():
    masks = np.zeros((10, 4, 4), dtype=np.uint8)
    masks[3, :2] = 1
    masks[7, :1, :1] = 1
    idx = gallery_indices(masks, 3)
    assert 3 in idx and 7 in idx and len(idx) <= 3


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


@pytest.mark.slow
def test_cli_train_writes_results_and_labels_synthetic(synthetic_data, tmp_path):
    out = _cli(
        "train",
        "--data",
        str(synthetic_data),
        "--experiment",
        "lesion-segmentation-b",
        "--architecture",
        "unet",
        "--encoder",
        "resnet18",
        "--init",
        "random",
        "--preset",
        "authors-2020",
        "--epochs",
        "2",
        "--image-size",
        "64",
        "--artifacts",
        str(tmp_path / "a"),
        "--format",
        "json",
        "--db",
        f"sqlite:///{tmp_path / 'runs.db'}",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["synthetic"] is True and summary["test_slices"] > 0
    assert 0 <= summary["dice"] <= 100
    # per-volume metrics of the 2 test volumes, measured as the protocol says
    assert [v["volume"] for v in summary["volumes"]] == [0, 1]
    assert 0 <= summary["nsd"] <= 100 and summary["boundary_mode"] == "surface-area"
    assert summary["nsd_tolerance_mm"] == 2.0
    assert (tmp_path / "a" / "epochs.csv").read_text().count("\n") == 3
    assert "SYNTHETIC" in out.stderr
    # the preset, with the options given beside it overriding it, is what trained
    p = summary["protocol"]
    assert (p["epochs"], p["image_size"], p["loss"], p["test_resize"]) == (
        2,
        64,
        "authors-2020-dice",
        "pil-antialias",
    )
    assert summary["protocol_hash"] == Protocol(**p).hash()


@pytest.mark.slow
def test_cli_train_bad_names_and_bad_data(synthetic_data, tmp_path):
    out = _cli(
        "train",
        "--data",
        str(synthetic_data),
        "--experiment",
        "lung-segmentation",
        "--architecture",
        "unet",
        "--encoder",
        "resnet19",
        "--epochs",
        "1",
    )
    assert out.returncode == 1
    assert "resnet19" in out.stderr and "Traceback" not in out.stderr
    out = _cli(
        "train",
        "--data",
        str(tmp_path / "nowhere"),
        "--experiment",
        "lung-segmentation",
        "--architecture",
        "unet",
        "--encoder",
        "resnet18",
        "--epochs",
        "1",
        "--db",
        f"sqlite:///{tmp_path / 'runs.db'}",
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "runs.db").exists()  # refused before anything was written
    for option, value in (("--nsd-tolerance-mm", "-1"), ("--boundary-mode", "mesh")):
        out = _cli(
            "train",
            "--data",
            str(synthetic_data),
            "--experiment",
            "lung-segmentation",
            "--architecture",
            "unet",
            "--encoder",
            "resnet18",
            option,
            value,
            "--db",
            f"sqlite:///{tmp_path / 'runs.db'}",
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "runs.db").exists()


def test_cli_train_imagenet_without_local_weights_is_refused_before_any_row(
    synthetic_data, tmp_path
):
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "train", "--data", str(synthetic_data),
         "--experiment", "lung-segmentation", "--architecture", "unet", "--encoder", "resnet34",
         "--init", "imagenet", "--epochs", "1", "--image-size", "64",
         "--db", f"sqlite:///{tmp_path / 'runs.db'}"],
        capture_output=True, text=True, timeout=300,
        env={**ENV, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 1
    assert "segbench weights fetch --encoder resnet34" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.slow
def test_cli_train_a_users_own_model(synthetic_data, tmp_path):
    """`train --model module:function` trains the tests' tiny model module in this
    process and records it as a custom run; a grid option beside --model, or neither a
    grid cell nor a model, is refused with one sentence before any row is written."""
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [fixtures, ENV.get("PYTHONPATH")]))}
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    common = ["train", "--data", str(synthetic_data), "-x", "lung-segmentation", "--db", db]

    def run(*args):
        return subprocess.run([sys.executable, "-m", "worker.cli", *common, *args],
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip

    for args, says in (
        (("--model", "tiny_model:build", "-e", "resnet18"), "give it without --architecture"),
        ((), "Give --architecture and --encoder"),
        (("--model", "absent_module:build"), "Cannot import the model module 'absent_module'"),
    ):
        out = run(*args)
        assert out.returncode == 1 and says in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "runs.db").exists()  # refused before anything was written

    out = run("--model", "tiny_model:build", "--epochs", "2", "--image-size", "64",
              "--artifacts", str(tmp_path / "a"), "--format", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert 0 <= summary["dice"] <= 100 and summary["test_slices"] > 0
    assert (tmp_path / "a" / "epochs.csv").read_text().count("\n") == 3
    status = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--db", db, "--format", "json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    (row,) = json.loads(status.stdout)
    assert (row["architecture"], row["encoder"], row["status"]) == (
        "custom", "tiny_model:build", "succeeded"
    )  # fmt: skip

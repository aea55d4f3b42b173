"""`segbench export models|table|figures|mesh` and `segbench compare`, on a database
filled with made-up results (no training) and models with random weights."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from typer.testing import CliRunner

from db.grid import RunSpec
from db.protocol import Protocol
from tests.support.runs import counted_result, finished_run, outcome_of
from worker.cli import load_commands
from worker.inference.mesh import mask_surface, mesh_volume
from worker.results import stats
from worker.results.tables import best_mask, render, table2
from worker.training.metrics import summarize

ROOT = Path(__file__).resolve().parents[2]
SPECS = [
    RunSpec("lung-segmentation", "linknet", "resnet18", "random"),
    RunSpec("lung-segmentation", "unet", "resnet18", "random"),
    RunSpec("lung-segmentation", "unet", "vgg11", "random"),
]
PROTOCOL = Protocol(epochs=2, image_size=64)
DATASET = {"name": "medseg-synthetic", "kind": "medseg", "synthetic": True, "manifest_hash": "m"}


def cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def slice_counts(seed: int, n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tp = rng.integers(0, 400, n)
    tp[::4] = 0  # some slices without target...
    fn = np.where(tp > 0, rng.integers(0, 80, n), 0)
    fp = rng.integers(0, 60 + 20 * seed, n)
    fp[::8] = 0  # ...and some of them also without prediction
    return np.stack([tp, fp, fn, 4096 - tp - fp - fn], 1)


def saved_model(spec: RunSpec, folder: Path) -> Path:
    from worker.training.models import build_model, save_model

    torch.manual_seed(0)
    meta = {
        **spec.to_dict(),
        "protocol": PROTOCOL.to_dict(),
        "dataset": {"name": DATASET["name"], "synthetic": True, "manifest_hash": "m"},
        "preprocessing": {
            "normalisation": {"mean": -500.0, "std": 500.0},
            "image_size": 64,
            "lung_masked_input": False,
            "threshold": 0.5,
        },
        "best_epoch": 2,
        "test": {"dice": 80.0, "sensitivity": 81.0, "specificity": 99.0, "metric_mode": "standard"},
    }
    save_model(build_model(spec).eval(), folder, metadata=meta)
    return folder


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> dict:
    """Three succeeded runs with per-slice counts; run 1 has a real model folder."""
    from db.session import session_scope
    from worker.data import sha256_file

    tmp = tmp_path_factory.mktemp("export")
    url = f"sqlite:///{tmp / 'segbench.db'}"
    model_dir = saved_model(SPECS[0], tmp / "artifacts" / "checkpoint_best")
    counts = {}
    ids = []
    with session_scope(url) as session:
        for k, spec in enumerate(SPECS):
            c = slice_counts(k)
            outcome = outcome_of(
                counted_result(c, per_volume=8),
                best_epoch=2,
                best_val_loss=0.3,
                parameters_m=10.0 + k,
                train_seconds_per_epoch=1.0 + k,
                val_seconds_per_epoch=0.2,
                checkpoint_dir=str(model_dir),
                checkpoint_sha256=sha256_file(model_dir / "model.safetensors"),
            )
            config = {"versions": {"torch": torch.__version__}, "git_commit": "abc"}
            run_id = finished_run(
                session,
                spec,
                outcome,
                config=config,
                protocol=PROTOCOL,
                sweep="s1",
                dataset=DATASET,
            )
            ids.append(run_id)
            counts[run_id] = c
    return {"url": url, "ids": ids, "counts": counts, "model": model_dir, "tmp": tmp}


# ------------------------------------------------------------------ table2


def hand_made_results() -> pd.DataFrame:
    rows = []
    for arch, enc, init, exp in itertools.product(
        ["unet", "fpn"],
        ["vgg11", "resnet18"],
        ["random", "imagenet"],
        ["lung-segmentation", "lesion-segmentation-a"],
    ):
        dice = {"vgg11": 90.0, "resnet18": 92.0}[enc] + (arch == "fpn") * 1 + (init == "imagenet")
        rows.append(
            {
                "architecture": arch,
                "encoder": enc,
                "init": init,
                "experiment": exp,
                "sensitivity": dice + 1,
                "specificity": 99.0,
                "dice": dice,
                "parameters_m": {"vgg11": 18.0, "resnet18": 14.0}[enc],
                "train_seconds_per_epoch": 3.0 if arch == "unet" else 2.0,
            }
        )
    return pd.DataFrame(rows)


def test_table2_layout_and_summary_rows():
    t = table2(hand_made_results())
    assert list(t.index) == [
        ("unet", "vgg11"),
        ("unet", "resnet18"),
        ("unet", "mean"),
        ("unet", "std"),
        ("fpn", "vgg11"),
        ("fpn", "resnet18"),
        ("fpn", "mean"),
        ("fpn", "std"),
    ]
    assert t.columns.names == ["init", "experiment", "metric"]
    assert list(t.columns[:3]) == [
        ("random", "lung-segmentation", "sensitivity"),
        ("random", "lung-segmentation", "specificity"),
        ("random", "lung-segmentation", "dice"),
    ]
    assert list(t.columns[-2:]) == [("", "", "parameters_m"), ("", "", "train_seconds_per_epoch")]
    assert len(t.columns) == 2 * 2 * 3 + 2
    dice = ("imagenet", "lesion-segmentation-a", "dice")
    assert t.loc[("fpn", "resnet18"), dice] == 94.0
    assert t.loc[("unet", "mean"), dice] == 92.0
    assert t.loc[("unet", "std"), dice] == pytest.approx(np.std([91.0, 93.0], ddof=1))
    assert t.loc[("fpn", "vgg11"), ("", "", "parameters_m")] == 18.0
    assert t.loc[("unet", "mean"), ("", "", "train_seconds_per_epoch")] == 3.0


def test_table2_bold_marks_best_model_per_metric_column():
    t = table2(hand_made_results())
    bold = best_mask(t)
    dice = ("random", "lung-segmentation", "dice")
    assert bold[dice].tolist() == [False, False, False, False, False, True, False, False]
    assert bold[("random", "lung-segmentation", "specificity")].sum() == 4  # a 4-way tie
    assert not bold[("", "", "parameters_m")].any()
    md = render(t, "markdown")
    assert md.count("**94.00**") == 4  # best Dice of each imagenet column... and the Sens ones
    row = next(line for line in md.splitlines() if line.startswith("| fpn | resnet18 |"))
    assert row.split(" | ")[4] == "**93.00**"  # random lung Dice
    assert "| unet | *mean* |" in md
    tex = render(t, "latex")
    assert r"\textbf{93.00}" in tex and r"\multicolumn{6}{c}{random}" in tex
    assert r"\textit{mean}" in tex and "**" not in tex
    csv = render(t, "csv")
    assert "**" not in csv and "textbf" not in csv
    assert csv.splitlines()[0].startswith("architecture,encoder,random_lung-segmentation_sens")


def test_table2_rejects_missing_columns():
    with pytest.raises(ValueError, match="lacks column"):
        table2(hand_made_results().drop(columns="dice"))


def test_export_table_from_database_in_both_metric_modes(db):
    std = cli("export", "table", "--format", "csv", "--db", db["url"])
    assert std.exit_code == 0, std.output
    assert std.stdout.startswith("# SYNTHETIC")
    assert "\n# protocol " in std.stdout and "fp32 training" in std.stdout  # shown with results
    authors = cli(
        "export", "table", "--format", "csv", "--metric-mode", "authors-2020", "--db", db["url"]
    )
    assert authors.exit_code == 0, authors.output
    read = lambda text: pd.read_csv(__import__("io").StringIO(text), comment="#")  # noqa: E731
    s, a = read(std.stdout), read(authors.stdout)
    col = "random_lung-segmentation_dice"
    row = (s["architecture"] == "linknet") & (s["encoder"] == "resnet18")
    c = db["counts"][db["ids"][0]]
    assert s.loc[row, col].item() == pytest.approx(summarize(c, "standard")["dice"], abs=1e-4)
    assert a.loc[row, col].item() == pytest.approx(summarize(c, "authors-2020")["dice"], abs=1e-4)
    assert a.loc[row, col].item() > s.loc[row, col].item()  # empty-truth rule inflates Dice
    md = cli("export", "table", "--architecture", "unet", "--db", db["url"])
    assert md.exit_code == 0 and "linknet" not in md.stdout and "| unet | *std* |" in md.stdout
    bad = cli("export", "table", "--encoder", "resnet19", "--db", db["url"])
    assert bad.exit_code == 1 and "Unknown encoder 'resnet19'" in bad.stderr


# ------------------------------------------------------------------ models


def test_export_models_reload_in_fresh_process(db, tmp_path):
    out = tmp_path / "models"
    result = cli("export", "models", "--dir", str(out), "--encoder", "resnet18",
                 "--architecture", "linknet", "--db", db["url"], "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (done,) = json.loads(result.stdout)
    folder = out / "lung-segmentation-linknet-resnet18-random"
    assert done["path"] == str(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "segbench.json"]
    card = (folder / "README.md").read_text()
    assert "SYNTHETIC" in card and "linknet" in card and "resnet18" in card
    assert "(HU - (-500.0)) / 500.0" in card and "torch" in card
    assert not list(out.glob(".*"))  # no temporary folder left behind

    from worker.training.models import load_model

    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.inference_mode():
        expected = load_model(db["model"]).eval()(x).numpy()
    code = (
        "import sys, numpy as np, torch, segmentation_models_pytorch as smp\n"
        "m = smp.from_pretrained(sys.argv[1]).eval()\n"
        "with torch.inference_mode():\n"
        "    y = m(torch.from_numpy(np.load(sys.argv[2])))\n"
        "np.save(sys.argv[3], y.numpy())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def test_export_models_refuses_a_changed_checkpoint(db, tmp_path):
    from db.models import Artifact
    from db.session import session_scope

    with session_scope(db["url"]) as session:
        session.query(Artifact).filter(
            Artifact.run_id == db["ids"][1], Artifact.kind == "checkpoint"
        ).update({"sha256": "0" * 64})
    result = cli("export", "models", "--dir", str(tmp_path), "--architecture", "unet",
                 "--encoder", "resnet18", "--db", db["url"])  # fmt: skip
    assert result.exit_code == 1
    assert "does not match the sha256" in result.stderr
    assert list(tmp_path.iterdir()) == []
    nothing = cli(
        "export", "models", "--dir", str(tmp_path), "--init", "imagenet", "--db", db["url"]
    )
    assert nothing.exit_code == 1 and "nothing to export" in nothing.stderr


# ------------------------------------------------------------------ compare


def test_compare_two_runs(db):
    a, b = db["ids"][0], db["ids"][2]
    result = cli("compare", str(a), str(b), "--db", db["url"], "--format", "json",
                 "--resamples", "500")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    da = 100 * stats.slice_dice(db["counts"][a])
    db_ = 100 * stats.slice_dice(db["counts"][b])
    assert out["slices"] == 24
    assert out["a"]["dice"]["mean"] == pytest.approx(da.mean())
    assert out["a"]["dice"]["low"] <= da.mean() <= out["a"]["dice"]["high"]
    assert out["wilcoxon"]["p_value"] == pytest.approx(sps.wilcoxon(da, db_).pvalue)
    assert set(out["a"]["volume_dice"]) == {"0", "1", "2"}
    assert out["a"]["volume_dice"]["0"] == pytest.approx(
        100 * stats.volume_dice(db["counts"][a], np.arange(24) // 8)[0]
    )
    modes = out["a"]["modes"]
    assert modes["authors-2020"]["dice"] >= modes["standard"]["dice"]
    assert out["a"]["synthetic"] is True
    table = cli("compare", str(a), str(b), "--db", db["url"], "--resamples", "200")
    assert table.exit_code == 0 and "Wilcoxon" in table.stdout and "SYNTHETIC" in table.stdout


def test_compare_sweep_with_holm(db):
    result = cli("compare", "--sweep", "s1", "--experiment", "lung-segmentation",
                 "--db", db["url"], "--format", "json", "--resamples", "200")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["models"]) == 3 and len(out["pairs"]) == 3
    raw = [p["p_value"] for p in out["pairs"]]
    assert [p["p_holm"] for p in out["pairs"]] == pytest.approx(list(stats.holm(raw)))
    means = [m["dice"]["mean"] for m in out["models"]]
    assert means == sorted(means, reverse=True)


def test_compare_errors_are_one_sentence(db):
    for args, expected in [
        (["compare", "1", "999"], "No run with id 999"),
        (["compare", "1"], "exactly two run ids"),
        (["compare", "--sweep", "s1"], "--experiment"),
        (["compare", "--sweep", "nope", "--experiment", "lung-segmentation"], "No sweep"),
    ]:
        result = cli(*args, "--db", db["url"])
        assert result.exit_code == 1, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, args


def test_compare_refuses_runs_of_other_experiments_sizes_or_protocols(tmp_path):
    """`compare A B` and `compare --run X --against S` say in one sentence what differs
    (worker.results.identity.comparable) instead of testing 828 "shared" slices."""
    from db import migrate
    from db.session import session_scope

    url = f"sqlite:///{tmp_path / 'segbench.db'}"
    migrate.upgrade(url)
    made = [("lung", "lung-segmentation", PROTOCOL),
            ("lesion-b", "lesion-segmentation-b", Protocol(epochs=2, image_size=128)),
            ("lung-longer", "lung-segmentation", Protocol(epochs=3, image_size=64))]  # fmt: skip
    ids = []
    with session_scope(url) as session:
        for seed, (sweep, experiment, protocol) in enumerate(made, start=1):
            spec = RunSpec(experiment, "unet", "resnet18", "random")
            test = counted_result(slice_counts(seed), per_volume=8)
            run_id = finished_run(session, spec, outcome_of(test, best_val_loss=0.3),
                                  protocol=protocol, sweep=sweep, dataset=DATASET)  # fmt: skip
            ids.append(run_id)
    lung, lesion, longer = ids
    for args, words in (
        ([str(lung), str(lesion)], ["experiment (lung-segmentation vs lesion-segmentation-b)",
                                    "image size (64 px vs 128 px)", "protocol"]),
        ([str(lung), str(longer)], ["differ in protocol (2 epochs vs 3 epochs, "]),
        (["--run", str(lung), "--against", "lung-longer"], ["protocol (2 epochs vs 3 epochs"]),
    ):  # fmt: skip
        out = cli("compare", *args, "--db", url)
        assert out.exit_code == 1, out.output
        assert len(out.stderr.strip().splitlines()) == 1
        assert all(w in out.stderr for w in words), out.stderr


# ------------------------------------------------------------------ figures and meshes


def test_export_figures(db, tmp_path):
    result = cli("export", "figures", "--dir", str(tmp_path), "--formats", "svg", "--db", db["url"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "dice_boxplot.svg",
        "dice_by_encoder.svg",
        "dice_vs_parameters.svg",
        "init_boxplot.svg",
    ]  # the made-up runs have no epochs: no loss curves
    assert "SYNTHETIC" in (tmp_path / "dice_boxplot.svg").read_text()
    empty = cli("export", "figures", "--dir", str(tmp_path), "--experiment",
                "lesion-segmentation-b", "--db", db["url"])  # fmt: skip
    assert empty.exit_code == 1 and "nothing to plot" in empty.stderr


def test_loss_figures_and_png(tmp_path):
    from worker.results.figures import figures, loss_difference_frame, save_chart

    def bands(scale):
        return pd.DataFrame(
            [
                {"architecture": a, "epoch": e, "train_mean": scale / e, "train_std": 0.1,
                 "val_mean": 1.2 * scale / e, "val_std": None}
                for a in ("unet", "fpn") for e in range(1, 4)
            ]
        )  # fmt: skip

    b = {"lesion-segmentation-a": bands(1.0), "lesion-segmentation-b": bands(0.5)}
    diff = loss_difference_frame(b)
    assert len(diff) == 12 and set(diff["split"]) == {"train", "validation"}
    first = diff[(diff.architecture == "unet") & (diff.epoch == 1) & (diff.split == "train")]
    assert first["difference"].item() == pytest.approx(-0.5)
    results = hand_made_results().assign(synthetic=False)
    charts = figures(results, b)
    assert {"loss_curves", "loss_difference", "dice_vs_parameters"} <= set(charts)
    path = save_chart(charts["loss_curves"], tmp_path / "loss.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def ball(shape=(24, 24, 12), radius=6.0) -> np.ndarray:
    g = np.indices(shape, dtype=float)
    centre = np.array(shape, dtype=float)[:, None, None, None] / 2
    scale = np.array([1.0, 1.0, 2.0])[:, None, None, None]  # slices 2 mm apart
    return (((g - centre) * scale) ** 2).sum(0) <= radius**2


def test_mesh_of_a_mask_in_stl_and_obj(tmp_path):
    mask = ball()
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    verts, faces = mask_surface(mask, (1.0, 1.0, 2.0))
    assert mesh_volume(verts, faces) == pytest.approx(4 / 3 * np.pi * 6**3, rel=0.1)
    for suffix in ("stl", "obj"):
        out = tmp_path / f"lesion.{suffix}"
        result = cli("export", "mesh", "--mask", str(path), "--output", str(out))
        assert result.exit_code == 0, result.output
        text = out.read_text()
        if suffix == "stl":
            assert text.startswith("solid lesion") and text.count("facet normal") == len(faces)
        else:
            lines = text.splitlines()
            assert sum(ln.startswith("v ") for ln in lines) == len(verts)
            assert sum(ln.startswith("f ") for ln in lines) == len(faces)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(empty))
    result = cli("export", "mesh", "--mask", str(empty), "--output", str(tmp_path / "e.stl"))
    assert result.exit_code == 1 and "no surface" in result.stderr
    assert not (tmp_path / "e.stl").exists()
    wrong = cli("export", "mesh", "--mask", str(path), "--output", str(tmp_path / "x.ply"))
    assert wrong.exit_code == 1 and ".stl or .obj" in wrong.stderr

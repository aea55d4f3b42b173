"""worker.data: generated data, loading and splits, nifti-folder, verify, fetch, CLI."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from worker import data
from worker.data import DataError
from worker.data.layout import files_hash

EXPERIMENTS = ("lung-segmentation", "lesion-segmentation-a", "lesion-segmentation-b")


def read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)


@pytest.fixture
def copied(synthetic_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_data, tmp_path / "copy"))


# -------------------------------------------------------------------- synth


def test_synth_writes_the_medseg_layout_with_real_dtypes_and_labels(synthetic_data: Path):
    image = read(synthetic_data / "tr_im.nii.gz")
    lesions = read(synthetic_data / "tr_mask.nii.gz")
    lungs = read(synthetic_data / "tr_lungmasks_updated.nii.gz")
    assert image.shape == lesions.shape == lungs.shape == (64, 64, 20)
    assert image.dtype == np.int16 and lesions.dtype == lungs.dtype == np.uint8
    assert image.min() >= -1024 and image.max() <= 3000
    assert set(np.unique(lesions)) <= {0, 1, 2, 3} and {1, 2} <= set(np.unique(lesions))
    assert set(np.unique(lungs)) == {0, 1, 2}
    assert not np.any((lesions > 0) & (lungs == 0)), "lesions lie inside the lungs"
    with_lesions = (lesions > 0).any(axis=(0, 1)).mean()
    assert 0.4 <= with_lesions <= 0.85
    # Lesions are not one intensity band: some lesion and non-lesion pixels share HU.
    consolidation = image[lesions == 2]
    outside = image[(lungs == 0) & (image > -200)]
    assert np.percentile(consolidation, 90) > np.percentile(outside, 10)

    names = sorted(p.name for p in (synthetic_data / "rp_im").iterdir())
    assert names == ["1.nii.gz", "2.nii.gz"]
    for folder in ("rp_im", "rp_msk", "rp_lung_msk"):
        for name in names:
            assert read(synthetic_data / folder / name).shape == (79, 79, 6)  # 64 * 630/512
    test_lungs = np.concatenate([read(synthetic_data / "rp_lung_msk" / n) for n in names], -1)
    test_lesions = np.concatenate([read(synthetic_data / "rp_msk" / n) for n in names], -1)
    assert not test_lungs.any(axis=(0, 1)).all(), "top/bottom slices have no lungs"
    assert 0 < test_lesions.any(axis=(0, 1)).mean() < 1

    manifest = json.loads((synthetic_data / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "synthetic" in manifest["dataset"]
    assert manifest["generator"] == "segbench data synth"
    assert manifest["parameters"]["image_size"] == 64
    assert len(manifest["files"]) == 9
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((synthetic_data / rel).read_bytes()).hexdigest() == sha


def test_synth_is_deterministic_for_a_seed(tmp_path: Path):
    kwargs = dict(image_size=32, train_slices=4, test_volumes=1, slices_per_volume=3)
    a = data.synth(tmp_path / "a", seed=5, **kwargs)
    b = data.synth(tmp_path / "b", seed=5, **kwargs)
    c = data.synth(tmp_path / "c", seed=6, **kwargs)
    files = [json.loads((p / "manifest.json").read_text())["files"] for p in (a, b, c)]
    assert files[0] == files[1] != files[2]
    data.synth(a, seed=5, **kwargs)  # rewriting a synthetic folder is allowed
    assert json.loads((a / "manifest.json").read_text())["files"] == files[0]


def test_synth_refuses_bad_arguments_and_folders_with_other_data(tmp_path: Path):
    with pytest.raises(DataError, match="image size"):
        data.synth(tmp_path / "x", image_size=8)
    real = tmp_path / "real"
    real.mkdir()
    (real / "manifest.json").write_text(json.dumps({"synthetic": False, "files": {}}))
    with pytest.raises(DataError, match="synthetic"):
        data.synth(real, image_size=32, train_slices=2, test_volumes=1, slices_per_volume=2)


# -------------------------------------------------------------------- load_dataset


def test_dataset_info_is_labelled_synthetic(synthetic_data: Path):
    info = data.dataset_info(synthetic_data)
    manifest = json.loads((synthetic_data / "manifest.json").read_text())
    assert info == {
        "name": "medseg-synthetic",
        "kind": "medseg",
        "synthetic": True,
        "manifest_hash": files_hash(manifest["files"]),
    }


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_load_dataset_splits_80_20_and_every_test_slice(synthetic_data: Path, experiment: str):
    ds = data.load_dataset(synthetic_data, experiment, 64)
    assert ds.synthetic and "synthetic" in ds.name and ds.kind == "medseg"
    assert ds.manifest_hash == data.dataset_info(synthetic_data)["manifest_hash"]
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (16, 4, 12)
    assert ds.train.slice.tolist() == list(range(16))
    assert ds.validation.slice.tolist() == list(range(16, 20))
    assert ds.test.volume.tolist() == [0] * 6 + [1] * 6
    assert ds.test.slice.tolist() == list(range(6)) * 2
    for split in (ds.train, ds.validation, ds.test):
        assert split.images.shape == split.masks.shape == split.lungs.shape
        assert split.images.shape[1:] == (64, 64)
        assert split.images.dtype == np.float32
        assert split.masks.dtype == split.lungs.dtype == np.uint8
        assert set(np.unique(split.masks)) <= {0, 1} and set(np.unique(split.lungs)) <= {0, 1}
        assert split.volume.dtype == split.slice.dtype == np.int64

    hu = read(synthetic_data / "tr_im.nii.gz").astype(np.float32)
    lesions = read(synthetic_data / "tr_mask.nii.gz")
    lungs = read(synthetic_data / "tr_lungmasks_updated.nii.gz")
    expected = (hu[..., 3] + 500) / 500
    if experiment == "lesion-segmentation-b":
        expected = expected * (lungs[..., 3] > 0)
    np.testing.assert_allclose(ds.train.images[3], expected, rtol=1e-6, atol=1e-6)
    target = lungs if experiment == "lung-segmentation" else lesions
    np.testing.assert_array_equal(ds.validation.masks[1], target[..., 17] > 0)
    np.testing.assert_array_equal(ds.train.lungs[5], lungs[..., 5] > 0)


def test_lesion_b_input_is_zero_outside_the_lungs(synthetic_data: Path):
    a = data.load_dataset(synthetic_data, "lesion-segmentation-a", 64)
    b = data.load_dataset(synthetic_data, "lesion-segmentation-b", 64)
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        outside = sb.lungs == 0
        assert np.all(sb.images[outside] == 0)
        assert np.any(sa.images[outside] != 0)
        np.testing.assert_array_equal(sa.images[~outside], sb.images[~outside])
        np.testing.assert_array_equal(sa.masks, sb.masks)
        assert not np.any(sb.masks & (sb.lungs == 0))


def test_test_volumes_are_resized_to_the_image_size(synthetic_data: Path):
    ds = data.load_dataset(synthetic_data, "lung-segmentation", 64, keep_hu=True)
    raw = read(synthetic_data / "rp_im" / "2.nii.gz").astype(np.float32)  # 79 x 79 x 6
    resized = data.resize_bilinear(np.moveaxis(raw, -1, 0), 64)
    np.testing.assert_allclose(ds.test.images[6:], (resized + 500) / 500, atol=1e-5)
    np.testing.assert_allclose(ds.test_hu[6:], resized, atol=1e-2)
    assert ds.test.masks.shape == (12, 64, 64) and ds.test.masks.max() == 1
    spacing = nib.load(synthetic_data / "rp_im" / "1.nii.gz").header.get_zooms()
    assert ds.test_spacing[0] == pytest.approx(
        (spacing[0] * 79 / 64, spacing[1] * 79 / 64, spacing[2])
    )
    small = data.load_dataset(synthetic_data, "lesion-segmentation-a", 32)
    assert small.train.images.shape == (16, 32, 32) and small.test.images.shape == (12, 32, 32)


def test_resize_bilinear_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(3, 79, 61)).astype(np.float32)
    for size in (64, 100):
        ours = data.resize_bilinear(x, size)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(x)[None], size=(size, size), mode="bilinear", align_corners=False
        )[0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-4)  # torch: float32 scale


def test_load_dataset_rejects_unknown_experiment_and_missing_folder(tmp_path: Path):
    with pytest.raises(DataError, match="experiment"):
        data.load_dataset(tmp_path, "lesion-segmentation-c", 64)
    with pytest.raises(DataError, match="dataset.toml.*tr_im.nii.gz"):
        data.load_dataset(tmp_path, "lung-segmentation", 64)
    assert data.verify(tmp_path / "nope")[0].startswith(f"{tmp_path / 'nope'}: no such folder")


# -------------------------------------------------------------------- nifti-folder


def make_nifti_folder(root: Path, *, lesions: bool = True, toml_extra: str = "") -> Path:
    rng = np.random.default_rng(1)
    for name, n in (("a", 10), ("b", 4)):
        hu = rng.integers(-1000, 400, size=(40, 48, n)).astype(np.int16)
        lung = np.zeros((40, 48, n), np.uint8)
        lung[5:35, 6:40] = 1
        lesion = np.zeros((40, 48, n), np.uint8)
        lesion[10:20, 10:20, ::2] = 7  # any positive integer is foreground
        write_nifti(root / "img" / f"{name}.nii.gz", hu, (0.8, 0.8, 2.0))
        write_nifti(root / "lung" / f"{name}.nii", lung)  # uncompressed works too
        if lesions:
            write_nifti(root / "lesion" / f"{name}.nii.gz", lesion)
    les = 'lesions = "lesion/{}.nii.gz"' if lesions else ""
    (root / "dataset.toml").write_text(
        f'name = "tiny-ct"\n{toml_extra}\n'
        f'[[train]]\nimage = "img/a.nii.gz"\nlungs = "lung/a.nii"\n{les.format("a")}\n'
        f"slices = [0, 7]\n"
        f'[[validation]]\nimage = "img/a.nii.gz"\nlungs = "lung/a.nii"\n{les.format("a")}\n'
        f"slices = [7, 10]\n"
        f'[[test]]\nimage = "img/b.nii.gz"\nlungs = "lung/b.nii"\n{les.format("b")}\n'
    )
    return root


def test_nifti_folder_is_detected_and_loaded(tmp_path: Path):
    root = make_nifti_folder(tmp_path / "ct")
    assert data.verify(root) == []
    info = data.dataset_info(root)
    assert info["kind"] == "nifti-folder" and info["name"] == "tiny-ct"
    assert info["synthetic"] is False
    ds = data.load_dataset(root, "lesion-segmentation-b", 32)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (7, 3, 4)
    assert ds.validation.slice.tolist() == [7, 8, 9]
    assert ds.test.images.shape == (4, 32, 32)
    assert ds.test_spacing == [pytest.approx((0.8 * 40 / 32, 0.8 * 48 / 32, 2.0))]
    assert set(np.unique(ds.train.masks)) == {0, 1}
    assert ds.train.masks[1].sum() == 0 and ds.train.masks[0].sum() > 0
    assert np.all(ds.train.images[ds.train.lungs == 0] == 0)


def test_nifti_folder_intensity_options(tmp_path: Path):
    root = make_nifti_folder(tmp_path / "hu")
    hu = data.load_dataset(root, "lung-segmentation", 40).train.images
    # Same voxels stated as normalised input: loaded as is.
    norm = make_nifti_folder(tmp_path / "norm", toml_extra='intensity = "normalised"')
    raw = read(root / "img" / "a.nii.gz").astype(np.float32)
    write_nifti(norm / "img" / "a.nii.gz", (raw + 500) / 500, (0.8, 0.8, 2.0))
    np.testing.assert_allclose(
        data.load_dataset(norm, "lung-segmentation", 40).train.images, hu, atol=1e-4
    )
    unit = make_nifti_folder(tmp_path / "unit", toml_extra='intensity = "unit"')
    with pytest.raises(DataError, match="window"):
        data.load_dataset(unit, "lung-segmentation", 40)


def test_nifti_folder_without_the_target_mask_is_refused(tmp_path: Path):
    root = make_nifti_folder(tmp_path / "lungs-only", lesions=False)
    assert data.load_dataset(root, "lung-segmentation", 32).train.masks.any()
    with pytest.raises(DataError, match="lesions.*lesion-segmentation-a"):
        data.load_dataset(root, "lesion-segmentation-a", 32)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[[train]\n", "not valid TOML"),
        ('colour = "red"\n', "unknown key"),
        ('[[train]]\nimage = "a.nii.gz"\n', r"no \[\[validation\]\]"),
        ('intensity = "kelvin"\n', "intensity"),
    ],
)
def test_bad_dataset_toml_is_one_clear_problem(tmp_path: Path, text: str, match: str):
    (tmp_path / "dataset.toml").write_text(text)
    problems = data.verify(tmp_path)
    assert len(problems) == 1 and "dataset.toml" in problems[0]
    with pytest.raises(DataError, match=match):
        data.load_dataset(tmp_path, "lung-segmentation", 32)


# -------------------------------------------------------------------- verify


def flip_bit(path: Path, position: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * position)] ^= 0x10
    path.write_bytes(bytes(raw))


def reseal(root: Path, rel: str) -> None:
    """Update manifest.json so only the file's content, not its checksum, is wrong."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))


def corrupt_truncated(root):
    path = root / "rp_im" / "2.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "rp_im/2.nii.gz", "truncated or corrupt"


def corrupt_bit_flip(root):
    flip_bit(root / "tr_im.nii.gz")
    return "tr_im.nii.gz", "truncated or corrupt"


def corrupt_replaced(root):
    write_nifti(root / "rp_im" / "1.nii.gz", np.zeros((79, 79, 6), np.int16))
    return "rp_im/1.nii.gz", "sha256 does not match"


def corrupt_bit_flip_without_manifest(root):
    (root / "manifest.json").unlink()
    flip_bit(root / "tr_mask.nii.gz", 0.9)
    return "tr_mask.nii.gz", "truncated or corrupt"


def corrupt_empty(root):
    (root / "rp_lung_msk" / "1.nii.gz").write_bytes(b"")
    return "rp_lung_msk/1.nii.gz", "empty"


def corrupt_wrong_shape(root):
    write_nifti(root / "rp_msk" / "1.nii.gz", np.zeros((79, 79, 5), np.uint8))
    reseal(root, "rp_msk/1.nii.gz")
    return "rp_msk/1.nii.gz", "differs from rp_im/1.nii.gz"


def corrupt_nan(root):
    image = read(root / "tr_im.nii.gz").astype(np.float32)
    image[3, 4, 5] = np.nan
    write_nifti(root / "tr_im.nii.gz", image)
    reseal(root, "tr_im.nii.gz")
    return "tr_im.nii.gz", "NaN"


def corrupt_4d(root):
    write_nifti(root / "rp_im" / "1.nii.gz", np.zeros((79, 79, 6, 2), np.int16))
    reseal(root, "rp_im/1.nii.gz")
    return "rp_im/1.nii.gz", "4-D"


def corrupt_labels(root):
    lungs = read(root / "tr_lungmasks_updated.nii.gz").copy()
    lungs[0, 0, 0] = 5
    write_nifti(root / "tr_lungmasks_updated.nii.gz", lungs)
    reseal(root, "tr_lungmasks_updated.nii.gz")
    return "tr_lungmasks_updated.nii.gz", "value(s) 5; expected labels 0, 1, 2"


def corrupt_missing_mask(root):
    (root / "rp_msk" / "2.nii.gz").unlink()
    return "rp_msk/2.nii.gz", "missing"


def corrupt_extra_mask(root):
    shutil.copy(root / "rp_msk" / "2.nii.gz", root / "rp_msk" / "3.nii.gz")
    return "rp_msk/3.nii.gz", "no matching test image"


CORRUPTIONS = [
    corrupt_truncated,
    corrupt_bit_flip,
    corrupt_replaced,
    corrupt_bit_flip_without_manifest,
    corrupt_empty,
    corrupt_wrong_shape,
    corrupt_nan,
    corrupt_4d,
    corrupt_labels,
    corrupt_missing_mask,
    corrupt_extra_mask,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__[8:])
def test_verify_names_the_broken_file_and_load_refuses_it(copied: Path, corrupt):
    assert data.verify(copied) == []
    rel, words = corrupt(copied)
    problems = data.verify(copied)
    assert problems, "the damage must be found"
    assert any(p.startswith(rel) and words in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(DataError, match="is not usable"):
        data.load_dataset(copied, "lesion-segmentation-a", 64, cache=False)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "data", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_verify_exit_codes_and_one_line_per_problem(copied: Path):
    ok = run_cli("verify", "--dir", str(copied))
    assert ok.returncode == 0, ok.stderr
    assert "medseg-synthetic (synthetic)" in ok.stdout

    corrupt_truncated(copied)
    corrupt_labels(copied)
    bad = run_cli("verify", "--dir", str(copied))
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and bad.stdout == ""
    assert lines == data.verify(copied) and len(lines) == 2


def test_cli_synth_and_one_sentence_errors(copied: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from worker.cli import load_commands

    app, runner = load_commands(), CliRunner()
    sizes = "--image-size 32 --train-slices 4 --test-volumes 1 --slices-per-volume 3 --seed 2"
    made = runner.invoke(app, ["data", "synth", "--dir", str(tmp_path / "new"), *sizes.split()])
    assert made.exit_code == 0 and "(synthetic)" in made.stdout, made.output
    assert data.verify(tmp_path / "new") == []
    for args, words in (
        (["synth", "--dir", str(tmp_path / "x"), "--image-size", "8"], "image size"),
        (["fetch", "--dir", str(copied)], "synthetic"),
        (["verify", "--dir", str(tmp_path / "missing")], "no such folder"),
    ):
        result = runner.invoke(app, ["data", *args])
        assert result.exit_code == 1, args
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)


# -------------------------------------------------------------------- fetch


class FileServer:
    """A local HTTP server for fetch(): serves bytes by name, honours Range requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: set[str] = set()  # names whose next response stops half-way
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                ranged = self.headers.get("Range")
                server.requests.append((name, ranged))
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = int(ranged.split("=")[1].split("-")[0]) if ranged else 0
                self.send_response(206 if ranged else 200)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in server.cut_next:
                    server.cut_next.discard(name)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def zipped(folder: Path, prefix: str, junk: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, prefix + p.name)
        if junk:
            zf.writestr("__MACOSX/._1.nii.gz", b"junk")
    return buffer.getvalue()


@pytest.fixture
def server(synthetic_data: Path):
    files = {n: (synthetic_data / n).read_bytes() for n in data.MEDSEG_FILES[:3]}
    files["rp_im.zip"] = zipped(synthetic_data / "rp_im", "")  # files at the top
    files["rp_msk.zip"] = zipped(synthetic_data / "rp_msk", "rp_msk/")  # in a folder
    files["rp_lung_msk.zip"] = zipped(synthetic_data / "rp_lung_msk", "a/b/", junk=True)
    srv = FileServer(files)
    yield srv
    srv.close()


def test_fetch_downloads_unpacks_and_writes_a_manifest(
    server: FileServer, tmp_path, synthetic_data
):
    urls = {n: server.url(n) for n in data.MEDSEG_FILES}
    root = data.fetch(tmp_path / "medseg", urls=urls, progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["synthetic"] is False and manifest["dataset"] == "medseg-covid19"
    source = json.loads((synthetic_data / "manifest.json").read_text())["files"]
    assert manifest["files"] == source  # same bytes, whatever the zip's folder layout
    assert data.verify(root) == []
    assert data.dataset_info(root)["synthetic"] is False
    assert sorted(p.name for p in (root / "rp_lung_msk").iterdir()) == ["1.nii.gz", "2.nii.gz"]

    count = len(server.requests)
    data.fetch(root, urls=urls, progress=False)
    assert len(server.requests) == count, "complete files are not downloaded again"

    (root / "tr_mask.nii.gz").write_bytes(b"\x1f\x8b broken")
    shutil.rmtree(root / "rp_msk")
    data.fetch(root, urls=urls, progress=False)
    assert [r[0] for r in server.requests[count:]] == ["tr_mask.nii.gz"]  # rp_msk from its zip
    assert data.verify(root) == []


def test_fetch_resumes_an_interrupted_download(server: FileServer, tmp_path: Path):
    urls = {n: server.url(n) for n in data.MEDSEG_FILES}
    root = tmp_path / "medseg"
    body = server.files["tr_im.nii.gz"]
    server.cut_next.add("tr_im.nii.gz")
    with pytest.raises(DataError, match=r"tr_im.nii.gz: .*run fetch again"):
        data.fetch(root, urls=urls, progress=False)
    part = root / "tr_im.nii.gz.part"
    assert 0 < part.stat().st_size < len(body)
    assert not (root / "tr_im.nii.gz").exists()

    received = part.stat().st_size
    data.fetch(root, urls=urls, progress=False)
    assert ("tr_im.nii.gz", f"bytes={received}-") in server.requests
    assert (root / "tr_im.nii.gz").read_bytes() == body
    assert not part.exists()
    assert data.verify(root) == []


def test_fetch_failures_are_one_sentence(server: FileServer, tmp_path: Path):
    urls = {n: server.url(n) for n in data.MEDSEG_FILES}
    with pytest.raises(DataError, match="HTTP 404"):
        data.fetch(
            tmp_path / "a", urls={**urls, "tr_mask.nii.gz": server.url("nope")}, progress=False
        )
    server.files["tr_im.nii.gz"] = b"<!DOCTYPE html><html>quota exceeded</html>"
    with pytest.raises(DataError, match="not a gz file"):
        data.fetch(tmp_path / "b", urls=urls, progress=False)
    dead = {n: "http://127.0.0.1:9/" + n for n in data.MEDSEG_FILES}
    with pytest.raises(DataError, match="could not reach"):
        data.fetch(tmp_path / "c", urls=dead, progress=False)
    with pytest.raises(DataError, match="no entry for"):
        data.fetch(tmp_path / "d", urls={"tr_im.nii.gz": urls["tr_im.nii.gz"]}, progress=False)


def test_gzip_check_reads_the_whole_stream(tmp_path: Path):
    from worker.data.fetch import _gzip_ok

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes(3_000_000) + b"end"))
    assert _gzip_ok(path)
    flip_bit(path, 0.99)
    assert not _gzip_ok(path)

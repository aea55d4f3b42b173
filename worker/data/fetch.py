"""Download the paper's six public MedSeg files into a folder, resumably.

Google Drive ids are resolved past Drive's confirmation page (worker.data.drive);
that URL, or a plain URL (``urls={file name: url}``, or ``mirror``: a base URL that
serves the six files), is fetched with an HTTP Range request that continues
``<name>.part``. An HTML page where a file was expected (Drive's quota page, a
sign-in page, a mirror's error page) is one sentence saying which and what to do. Complete files are
skipped, so running fetch again only finishes what is missing or broken. The three
zips are unpacked into rp_im/, rp_msk/ and rp_lung_msk/ (files at the top of the
zip or inside a folder both work), and manifest.json records the sha256 of every
data file with ``"synthetic": false``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from worker.data import drive
from worker.data.errors import DataError
from worker.data.layout import MEDSEG_FILES, MEDSEG_NAME, TEST_DIRS, TRAIN_FILES, sha256_file

log = logging.getLogger(__name__)

# The six public downloads; the paper's authors download them from Google Drive by id.
GOOGLE_DRIVE_IDS: dict[str, str] = {
    "tr_im.nii.gz": "1SJoMelgRqb0EuqlTuq6dxBWf2j9Kno8S",
    "tr_mask.nii.gz": "1MEqpbpwXjrLrH42DqDygWeSkDq0bi92f",
    "tr_lungmasks_updated.nii.gz": "1zj4N_KV0LBko1VSQ7FPZ38eaEGNU0K6-",
    "rp_im.zip": "1ruTiKdmqhqdbE9xOEmjQGing76nrTK2m",
    "rp_msk.zip": "1gVuDwFeAGa6jIVX9MeJV5ByIHFpOo5Bp",
    "rp_lung_msk.zip": "1MIp89YhuAKh4as2v_5DUoExgt6-y3AnH",
}
CHUNK = 1 << 20
TIMEOUT_S = 60
MAGIC = {".gz": (b"\x1f\x8b",), ".zip": (b"PK\x03\x04", b"PK\x05\x06")}


def _gzip_ok(path: Path) -> bool:
    """True when the whole gzip stream decompresses and its CRC matches."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    d = zlib.decompressobj(wbits=31)  # gzip only; checks the CRC and length trailer
    try:
        with open(path, "rb") as f:
            while not d.eof:
                block = d.unconsumed_tail or f.read(CHUNK)
                out = d.decompress(block, CHUNK)  # bounded output: constant memory
                if not block and not out:
                    break
    except zlib.error:
        return False
    return d.eof


def _zip_ok(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return False


def _folder_ok(folder: Path, zip_path: Path) -> bool:
    files = [p for p in folder.glob("*.nii*")] if folder.is_dir() else []
    if not files or not all(_gzip_ok(p) for p in files if p.name.endswith(".gz")):
        return False
    if _zip_ok(zip_path):
        return {p.name for p in files} == set(_members(zip_path))
    return True


def _members(zip_path: Path) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(zip_path) as zf:
        infos = [
            m
            for m in zf.infolist()
            if not m.is_dir()
            and m.filename.endswith((".nii.gz", ".nii"))
            and "__MACOSX" not in m.filename
            and not PurePosixPath(m.filename).name.startswith("._")
        ]
    out: dict[str, zipfile.ZipInfo] = {}
    for m in infos:
        name = PurePosixPath(m.filename).name
        if name in out:
            raise DataError(
                f"{zip_path.name}: holds two files named {name}; expected one volume per name."
            )
        out[name] = m
    return out


def _unzip(zip_path: Path, folder: Path) -> None:
    members = _members(zip_path)
    if not members:
        raise DataError(
            f"{zip_path.name}: holds no .nii.gz files; expected the test volumes "
            f"1.nii.gz … 9.nii.gz."
        )
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for name, info in members.items():
                with zf.open(info) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"{zip_path.name}: could not be unpacked ({exc}); delete it and run fetch again."
        ) from exc
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log.info("unpacked %s into %s/ (%d files)", zip_path.name, folder.name, len(members))


def _download_url(url: str, dest: Path, progress: bool) -> None:
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        resp = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as exc:
        if exc.code == 416 and start:  # the .part is longer than the file: start over
            part.unlink()
            return _download_url(url, dest, progress)
        raise DataError(
            f"{dest.name}: download from {url} failed (HTTP {exc.code} {exc.reason})."
        ) from exc
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"{dest.name}: could not reach {url} ({reason}); check the network and run fetch again."
        ) from exc
    with resp:
        if start and resp.status != 206:  # server ignored the Range header
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        try:
            with (
                open(part, "ab" if start else "wb") as f,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"{dest.name}: download from {url} was interrupted ({exc}); run fetch again "
                f"to resume."
            ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise DataError(
            f"{dest.name}: download from {url} stopped at {size} of {total} bytes; run fetch "
            f"again to resume."
        )
    os.replace(part, dest)


def _download_drive(file_id: str, dest: Path, progress: bool) -> None:
    _download_url(drive.resolve(file_id, dest.name, dest.parent), dest, progress)


def _is_drive(source: str) -> bool:
    return not source.startswith(("http://", "https://", "file:")) or "drive.google.com" in source


def _download(name: str, source: str, dest: Path, progress: bool) -> None:
    log.info("downloading %s from %s", name, source)
    if not _is_drive(source):
        _download_url(source, dest, progress)
    else:
        file_id = source.rsplit("id=", 1)[-1]
        _download_drive(file_id, dest, progress)
    with open(dest, "rb") as f:
        head = f.read(drive.MAX_PAGE)
    magic = MAGIC[dest.suffix]
    if not head.startswith(magic):
        dest.unlink()
        if head.lstrip()[:1] == b"<":  # an HTML page: say which one
            where = "Google Drive" if _is_drive(source) else source
            raise DataError(
                drive.explain_page(
                    name, head.decode("utf-8", errors="replace"), dest.parent, where=where
                )
            )
        raise DataError(
            f"{name}: the download is not a {dest.suffix[1:]} file (starts with {head[:8]!r}); "
            f"try again later or put the file in {dest.parent} by hand."
        )


def mirror_urls(mirror: str) -> dict[str, str]:
    """The six files under base URL `mirror` (``{mirror}/tr_im.nii.gz``, ...)."""
    base = mirror.rstrip("/")
    if not base.startswith(("http://", "https://", "file:")):
        raise DataError(
            f"--mirror {mirror}: expected a base URL (http://, https:// or file:) under which "
            f"the six files {', '.join(MEDSEG_FILES)} are served."
        )
    return {n: f"{base}/{n}" for n in MEDSEG_FILES}


def _sources(urls: dict[str, str] | None) -> dict[str, str]:
    if urls is None:
        return {n: f"https://drive.google.com/uc?id={GOOGLE_DRIVE_IDS[n]}" for n in MEDSEG_FILES}
    missing = [n for n in MEDSEG_FILES if n not in urls]
    if missing:
        raise DataError(
            f"urls has no entry for {', '.join(missing)}; expected one URL for each of "
            f"{', '.join(MEDSEG_FILES)}."
        )
    return {n: urls[n] for n in MEDSEG_FILES}


def fetch(
    path: str | Path,
    *,
    urls: dict[str, str] | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> Path:
    """Download (or finish downloading) the six public files into `path`; returns it.

    From Google Drive by default, from `urls` ({file name: URL}) or from the base URL
    `mirror` (``{mirror}/{file name}``) when given.

    Raises DataError with one sentence when a download fails; what was received so
    far is kept, and running fetch again resumes it.
    """
    root = Path(path)
    sources = _sources(mirror_urls(mirror) if mirror else urls)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        try:
            synthetic = json.loads(manifest_path.read_text()).get("synthetic")
        except (OSError, ValueError, AttributeError):
            synthetic = None
        if synthetic:
            raise DataError(
                f"{root} holds generated (synthetic) data; expected an empty folder or an "
                f"earlier download, so fetch into another folder."
            )
    root.mkdir(parents=True, exist_ok=True)
    for name in MEDSEG_FILES:
        dest = root / name
        if name.endswith(".zip"):
            folder = root / name.removesuffix(".zip")
            if _folder_ok(folder, dest):
                log.info("%s/ is complete; skipping %s", folder.name, name)
                continue
            if not _zip_ok(dest):
                dest.unlink(missing_ok=True)
                _download(name, sources[name], dest, progress)
                if not _zip_ok(dest):
                    raise DataError(f"{name}: the downloaded zip is corrupt; run fetch again.")
            _unzip(dest, folder)
        elif _gzip_ok(dest):
            log.info("%s is complete; skipping", name)
        else:
            dest.unlink(missing_ok=True)
            _download(name, sources[name], dest, progress)
            if not _gzip_ok(dest):
                raise DataError(
                    f"{name}: the downloaded gzip data is truncated or corrupt; run fetch again."
                )
    files = {n: sha256_file(root / n) for n in TRAIN_FILES.values()}
    for folder in TEST_DIRS.values():
        for p in sorted((root / folder).glob("*.nii*")):
            files[f"{folder}/{p.name}"] = sha256_file(p)
    manifest = {
        "dataset": MEDSEG_NAME,
        "synthetic": False,
        "source": sources,
        "files": files,
    }
    tmp = manifest_path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, manifest_path)
    return root

"""`segbench data fetch` against what Google Drive really answers, served by a local
HTTP server (the setting drive_url points at it): the file itself, the "can't scan
this file for viruses" page whose form must be submitted, the quota-exceeded page, a
sign-in page; and --mirror, a base URL that serves the six files."""

from __future__ import annotations

import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from worker import data
from worker.cli import load_commands
from worker.data.errors import DataError

BIG = {"rp_im.zip", "rp_msk.zip"}  # answered with the virus-scan warning first

VIRUS_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan
this file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size">
<a href="/open?id={id}">{name}</a> (95M)</span> is too large for Google to scan for viruses.
Would you still like to download this file?</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button
jfk-button-action" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export"
value="download"><input type="hidden" name="confirm" value="t"><input type="hidden"
name="uuid" value="{uuid}"></form></div></div></body></html>"""

QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>
<body><div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can't view
or download this file at this time.</p><p class="uc-error-subcaption">Too many users have
viewed or downloaded this file recently. Please try accessing the file again later. If the
file you are trying to access is particularly large or is shared with many people, it may
take up to 24 hours to be able to view or download the file.</p></div></div></body></html>"""

SIGN_IN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive: Sign-in</title></head><body>
<form action="https://accounts.google.com/v3/signin/identifier"><p>Sign in to continue to
Google Drive</p></form></body></html>"""

INDEX_PAGE = "<!doctype html><html><head><title>My files</title></head><body>hi</body></html>"


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    return buffer.getvalue()


class Drive:
    """Answers /uc?export=download&id=ID like Google Drive: a 303 to /download, where a
    small file is sent at once and a big one after its warning form is submitted."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.by_id = {i: n for n, i in data.GOOGLE_DRIVE_IDS.items()}
        self.mode: dict[str, str] = {}  # name -> "quota" | "sign-in" | "ignore-confirm"
        self.requests: list[str] = []
        drive = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, code: int, body: bytes, ctype: str, **headers: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                drive.requests.append(self.path)
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path.startswith("/mirror/"):
                    name = url.path.removeprefix("/mirror/")
                    if name == "tr_mask.nii.gz" and drive.mode.get(name) == "index":
                        return self.send(200, INDEX_PAGE.encode(), "text/html")
                    body = drive.files.get(name)
                    if body is None:
                        return self.send(404, b"not found", "text/plain")
                    return self.send(200, body, "application/octet-stream")
                name = drive.by_id.get(query.get("id", ""))
                if name is None:
                    return self.send(404, b"", "text/html")
                if url.path == "/uc":
                    location = f"/download?id={query['id']}&export=download"
                    return self.send(303, b"", "text/html", Location=location)
                mode = drive.mode.get(name)
                if mode == "quota":
                    return self.send(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
                if mode == "sign-in":
                    return self.send(200, SIGN_IN_PAGE.encode(), "text/html; charset=utf-8")
                confirmed = query.get("confirm") == "t" and query.get("uuid") == "u-123"
                if name in BIG and (not confirmed or mode == "ignore-confirm"):
                    page = VIRUS_PAGE.format(id=query["id"], name=name, uuid="u-123",
                                             action="/download")  # fmt: skip
                    return self.send(200, page.encode(), "text/html; charset=utf-8")
                disposition = f'attachment; filename="{name}"'
                self.send(200, drive.files[name], "application/octet-stream",
                          **{"Content-Disposition": disposition})  # fmt: skip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def drive(synthetic_data, monkeypatch):
    files = {n: (synthetic_data / n).read_bytes() for n in data.MEDSEG_FILES[:3]}
    for name in ("rp_im", "rp_msk", "rp_lung_msk"):
        files[f"{name}.zip"] = zipped(synthetic_data / name)
    server = Drive(files)
    monkeypatch.setenv("SEGBENCH_DRIVE_URL", f"{server.base}/uc")
    from db.settings import get_settings

    get_settings.cache_clear()
    yield server
    server.close()


def test_fetch_by_drive_id_submits_the_virus_scan_confirmation(drive, tmp_path):
    root = data.fetch(tmp_path / "medseg", progress=False)
    assert data.verify(root) == []
    confirmed = [p for p in drive.requests if "confirm=t" in p and "uuid=u-123" in p]
    assert len(confirmed) >= len(BIG)  # the two big zips came after their form


@pytest.mark.parametrize(
    ("mode", "name", "expected"),
    [
        ("quota", "tr_im.nii.gz", "download quota is exceeded"),
        ("sign-in", "tr_mask.nii.gz", "asks to sign in, so the file is not public"),
        ("ignore-confirm", "rp_im.zip", "asked to confirm the download of a file too large"),
    ],
)
def test_each_drive_page_is_one_sentence_with_what_to_do(drive, tmp_path, mode, name, expected):
    drive.mode[name] = mode
    result = CliRunner().invoke(load_commands(), ["data", "fetch", "--dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    message = result.output[result.output.index("error: ") :].strip()  # after the progress bars
    assert message.startswith(f"error: {name}: Google Drive") and expected in message
    assert "--mirror URL" in message and str(tmp_path / "d") in message
    assert message.count("\n") == 0 and "Traceback" not in message
    assert not (tmp_path / "d" / name).exists()


def test_mirror_serves_the_six_files_and_an_html_page_is_named(drive, tmp_path):
    result = CliRunner().invoke(
        load_commands(), ["data", "fetch", "--dir", str(tmp_path / "m"),
                          "--mirror", f"{drive.base}/mirror/"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "OK: medseg-covid19" in result.output
    assert not [p for p in drive.requests if p.startswith(("/uc", "/download"))]

    drive.mode["tr_mask.nii.gz"] = "index"
    with pytest.raises(DataError) as error:
        data.fetch(tmp_path / "m2", mirror=f"{drive.base}/mirror", progress=False)
    assert str(error.value).startswith(
        f'tr_mask.nii.gz: {drive.base}/mirror/tr_mask.nii.gz answered with a web page ("My files"),'
        " not a gz file"
    )
    with pytest.raises(DataError, match="expected a base URL"):
        data.fetch(tmp_path / "m3", mirror="ftp.example.org/medseg", progress=False)

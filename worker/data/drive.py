"""Google Drive, as it really answers a download of a public file by id.

``GET {drive_url}?export=download&id=ID`` (the setting ``drive_url``, normally
https://drive.google.com/uc) redirects to the download host and then either sends the
file, or, for a file too large to scan, sends an HTML page ("Google Drive can't scan
this file for viruses") whose form (``id``, ``export``, ``confirm``, ``uuid``) must be
submitted to get the file. When the file was downloaded too often it sends the
"quota exceeded" page; a file that is not public gets a sign-in page.

``resolve`` follows that dance with plain HTTP and returns the URL that sends the
file itself (worker.data.fetch then downloads it resumably); every HTML answer it
cannot follow becomes one sentence saying what happened and what to do.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urljoin
from urllib.request import Request, urlopen

from db.settings import get_settings
from worker.data.errors import DataError

TIMEOUT_S = 60
MAX_PAGE = 2 << 20  # an HTML answer is read up to this many bytes
HEADERS = {"User-Agent": "Mozilla/5.0 (segbench data fetch)"}
MIRROR_HINT = "`segbench data fetch --mirror URL` (a server that hosts the six files)"


class _Form(HTMLParser):
    """The download form of Drive's virus-scan warning: its action and hidden fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.title = ""
        self._in_form = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and (a.get("id") == "download-form" or "download" in a.get("action", "")):
            self._in_form, self.action = True, a.get("action")
        elif tag == "input" and self._in_form and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def page_title(page: str) -> str:
    form = _Form()
    form.feed(page)
    return " ".join(form.title.split()) or "no title"


def explain_page(name: str, page: str, folder: Path, *, where: str = "Google Drive") -> str:
    """One sentence for an HTML page received where `name` was expected."""
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split()).lower()
    by_hand = f"or download it in a browser and put it in {folder}"
    if where != "Google Drive":
        pass  # a mirror's page: only its title says what it is
    elif "quota exceeded" in text or "too many users have viewed or downloaded" in text:
        return (
            f"{name}: Google Drive refuses the download for now because the file's download "
            f"quota is exceeded (too many downloads in the last 24 hours); try again later, "
            f"use {MIRROR_HINT}, {by_hand}."
        )
    elif "can't scan this file for viruses" in text or "virus scan warning" in text:
        return (
            f"{name}: Google Drive asked to confirm the download of a file too large to scan "
            f"for viruses and the confirmation was not accepted; run fetch again, use "
            f"{MIRROR_HINT}, {by_hand}."
        )
    elif "sign in" in text or "accounts.google.com" in page:
        return (
            f"{name}: Google Drive asks to sign in, so the file is not public (or its id "
            f"changed); use {MIRROR_HINT}, {by_hand}."
        )
    return (
        f'{name}: {where} answered with a web page ("{page_title(page)}"), not a '
        f"{name.rsplit('.', 1)[-1]} file; check the URL, use {MIRROR_HINT}, {by_hand}."
    )


def _open(url: str, name: str):
    try:
        return urlopen(Request(url, headers=HEADERS), timeout=TIMEOUT_S)
    except HTTPError as exc:
        raise DataError(
            f"{name}: Google Drive answered HTTP {exc.code} {exc.reason} for {url}; try again "
            f"later or use {MIRROR_HINT}."
        ) from exc
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"{name}: could not reach Google Drive at {url} ({reason}); check the network, "
            f"or use {MIRROR_HINT}."
        ) from exc


def resolve(file_id: str, name: str, folder: Path) -> str:
    """The URL that sends file `file_id` itself, past Drive's confirmation page."""
    url = f"{get_settings().drive_url}?{urlencode({'export': 'download', 'id': file_id})}"
    for _ in range(3):  # the file, or a warning page and then the file
        with _open(url, name) as response:
            final = response.geturl()
            if response.headers.get_content_type() != "text/html":
                return final
            page = response.read(MAX_PAGE).decode("utf-8", errors="replace")
        form = _Form()
        form.feed(page)
        if form.action is None or "confirm" not in form.fields:
            raise DataError(explain_page(name, page, folder))
        url = f"{urljoin(final, form.action)}?{urlencode(form.fields)}"
    raise DataError(explain_page(name, page, folder))

"""What the browser tests share: Debian's chromium, a free port, `segbench dashboard`
started and waited for, and the waits and clicks a Streamlit page needs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "walk"
PALETTE_COLOURS = 48  # docs/screenshots: small PNGs in which every legend colour survives
NO_CHROMIUM = "needs Debian's chromium (apt-get install -y chromium)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"segbench dashboard exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the dashboard did not answer at {base} within {timeout_s} s")


@contextmanager
def dashboard_server(url: str, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """`segbench dashboard` on a free port against `url`; yields its base address."""
    port = free_port()
    env = {**os.environ, **env}
    env.pop("SEGBENCH_DASHBOARD_PASSWORD", None)
    log = open(cwd / "dashboard.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dashboard", "--port", str(port), "--db", url],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def settle(page, draw_ms: int = 700) -> None:
    """Wait until Streamlit has finished running the page's script, then `draw_ms`
    for charts and images to finish drawing."""
    page.wait_for_timeout(300)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=30_000
    )
    page.wait_for_timeout(draw_ms)


def choose(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text=label)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")
    settle(page, draw_ms=100)


def input_of(page, label: str):
    """The <input> of the text or number input whose label is `label` (exactly)."""
    widgets = page.locator('[data-testid="stTextInput"], [data-testid="stNumberInput"]')
    labelled = widgets.filter(has=page.locator("label", has_text=label))
    for i in range(labelled.count()):
        box = labelled.nth(i)
        if box.locator("label").first.inner_text().strip() == label:
            return box.locator("input").first
    raise AssertionError(f"no input labelled {label!r}")


def type_into(page, label: str, text: str) -> None:
    """Fill the text or number input labelled `label` and commit it (Enter)."""
    box = input_of(page, label)
    box.fill(text)
    box.press("Enter")
    settle(page, draw_ms=100)


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def shoot(page, name: str, theme: str) -> None:
    """The page's first screen to test-output/walk/; with SEGBENCH_SCREENSHOTS=DIR also
    a small palette PNG to DIR (docs/screenshots holds them)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{theme}.png"
    page.screenshot(path=str(path))
    wanted = os.environ.get("SEGBENCH_SCREENSHOTS")
    if wanted:
        from PIL import Image

        out = Path(wanted) / f"{name}-{theme}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(PALETTE_COLOURS, dither=Image.Dither.NONE)
            small.save(out, optimize=True)

"""The README's Quick tour, run as written: the fenced block under "## Quick tour" is
parsed out of README.md and its commands run in order in an empty folder, offline
(HF_HUB_OFFLINE=1, an empty weights cache, the test suite's local stand-in for the
Hub). Each command must exit 0 and print every `` # → `text` `` its comment
promises, so the test breaks as soon as the README says something untrue.

`segbench worker` and `segbench dashboard` run as a user runs them: through bash and
the installed `segbench` entry point, as processes of their own (a real worker trains
the queued runs; the dashboard is started, asked for its health check and stopped).
The other commands run in this process through the same Typer app (CliRunner), which
spares a torch import per command; a command with shell syntax would go to bash too.

Measured on the shared 2-core VM: about 50 s at a load average of 2, 100 s at 9."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.session import dispose_engine
from worker.cli import load_commands
from worker.cli.dashboard import DEFAULT_PORT, port_is_free

ROOT = Path(__file__).resolve().parents[2]
EXPECT = re.compile(r"→ `([^`]+)`")
SKIPPED = (". ", "source ")  # activating the venv: the test already runs in it
OWN_PROCESS = (("segbench", "worker"), ("segbench", "dashboard"))
SHELL = re.compile(r"[|&;<>$`*?(){}]")


@dataclass
class Step:
    command: str
    expect: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command)


def tour_steps(readme: str) -> list[Step]:
    """The commands of the Quick tour's bash block, continuation lines joined, each
    with the `→` texts of its comments (a comment-only line belongs to the command
    above it)."""
    section = readme.split("\n## Quick tour\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    steps: list[Step] = []
    pending = ""
    for line in block.splitlines():
        if line.lstrip().startswith("#"):
            code, comment = "", line
        else:
            code, _, comment = line.partition(" #")
            code = code.rstrip()
        if code.endswith("\\"):
            pending += code[:-1].strip() + " "
            continue
        if code.strip():
            steps.append(Step((pending + code.strip()).strip()))
            pending = ""
        if steps:
            steps[-1].expect += EXPECT.findall(comment)
    assert not pending, f"a continuation line ends the block: {pending}"
    return steps


def steps() -> list[Step]:
    return tour_steps((ROOT / "README.md").read_text())


TOUR_ENV = {
    "HF_HUB_OFFLINE": "1",  # no download: the tour must need none
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


def tour_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBENCH_")}
    env.update(
        TOUR_ENV,
        HF_HOME=str(home / ".hf"),  # an empty weights cache, as on a fresh machine
        # `segbench` is the entry point installed beside this interpreter
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_here(step: Step) -> str:
    """A `segbench ...` command in this process (the test has chdir'd to its folder
    and set the tour's environment)."""
    result = CliRunner().invoke(load_commands(), step.argv[1:], catch_exceptions=False)
    output = result.output
    assert result.exit_code == 0, f"`{step.command}` exited {result.exit_code}:\n{output}"
    return output


def run(step: Step, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", step.command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{step.command}` exited {result.returncode}:\n{output}"
    return output


def run_dashboard(step: Step, cwd: Path, env: dict[str, str]) -> str:
    """Start the dashboard, wait for its health check to answer, stop it (Ctrl-C)."""
    taken = not port_is_free(DEFAULT_PORT)
    log = cwd / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", step.command], cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        port = None
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the dashboard stopped:\n{log.read_text()}"
            found = re.search(r"dashboard on http://127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                port = int(found.group(1))
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/_stcore/health", timeout=2
                    ) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"the dashboard did not answer within 90 s:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = log.read_text()
    if taken:  # 8501 was in use (a `make run`, another test): the tour's promise
        assert f"port {DEFAULT_PORT} is taken" in output, output
        assert port != DEFAULT_PORT
        step = Step(step.command, [e.replace(str(DEFAULT_PORT), str(port)) for e in step.expect])
    for text in step.expect:
        assert text in output, f"`{step.command}` did not print {text!r}:\n{output}"
    return output


def test_the_tour_is_segbench_commands_each_with_a_promise():
    """Fast check of the block's shape: every command is `segbench ...` (after the
    venv's activation), and every one says what it prints."""
    tour = steps()
    assert tour[0].command.startswith(SKIPPED)
    commands = tour[1:]
    assert len(commands) >= 10
    for step in commands:
        assert step.argv[0] == "segbench", step.command
        assert step.expect, f"`{step.command}` has no `→` comment"


def also_printed() -> dict[tuple[str, str], list[str]]:
    """What the tour's commands print beyond the README's promises, checked on the way:
    the device --device auto chose, the test pass's progress, a worker's epoch lines."""
    from worker.cli.train import chosen_device

    device = chosen_device("auto")[1]
    return {
        ("segbench", "train"): [f"training on {device}", "testing the best model"],
        ("segbench", "predict"): [f"on {device}"],
        ("segbench", "worker"): [
            "run 3: epoch 1/2, train loss",
            "run 3: testing the best model on 16 test slices",
            "no run is queued or running; stopping (--until-done)",
        ],
    }


@pytest.mark.slow
def test_readme_quick_tour_runs_as_written(tmp_path, monkeypatch):
    env = tour_env(tmp_path)
    extra = also_printed()
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("SEGBENCH_")]:
        monkeypatch.delenv(name)
    for name in ("HF_HOME", "PATH", *TOUR_ENV):
        monkeypatch.setenv(name, env[name])
    timings = []
    try:
        for step in steps():
            if step.command.startswith(SKIPPED):
                continue
            t0 = time.monotonic()
            if tuple(step.argv[:2]) == OWN_PROCESS[1]:
                output = run_dashboard(step, tmp_path, env)
            elif tuple(step.argv[:2]) in OWN_PROCESS or SHELL.search(step.command):
                output = run(step, tmp_path, env)
            else:
                output = run_here(step)
            timings.append(f"{time.monotonic() - t0:5.1f} s  {' '.join(step.argv[:2])}")
            for text in step.expect + extra.get(tuple(step.argv[:2]), []):
                assert text in output, f"`{step.command}` did not print {text!r}:\n{output}"
    finally:
        dispose_engine("sqlite:///segbench.db")
        print("\n".join(timings))

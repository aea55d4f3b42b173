"""Every benchmark in bench/ runs in its smoke size and prints its table and last line.

The scripts start together (each on one torch thread), so the module takes about as
long as the slowest one (the fault scenarios no queue test covers, ~70 s) rather than
their sum. Their timings are not measurements here; what is checked is the format and
what must hold whatever the machine (the faults are survived, the projection is
positive). The full runs (`--quick` and the default sizes) stay outside the default
test run; bench/README.md has their figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def _postgres() -> bool:
    try:
        import psycopg

        server = os.environ.get("SEGBENCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
        psycopg.connect(server, connect_timeout=3).close()
        return True
    except Exception:
        return False


SCRIPTS = {
    "harness_overhead": ["--quick", "--image-size", "32", "--epochs", "3"],
    "augmentation": ["--quick"],
    "project_full_benchmark": ["--quick"],
    "queue_costs": ["--quick"],
    "faults": ["--smoke"],
    "interval_coverage": ["--quick"],
    "evaluation_cost": ["--quick"],
}
SLOW = {
    "harness_overhead",
    "project_full_benchmark",
    "faults",
    "evaluation_cost",
}
# faults.py runs its embedded deployment here; PostgreSQL + Redis faults are tested in
# tests/queue/test_reliability.py and test_recovery.py (and measured in full in the
# README), so the suite does not repeat them.
WITH_POSTGRES = {"queue_costs"}


@pytest.fixture(scope="module")
def outputs(request):
    """Start every selected script at once; script name -> (returncode, stdout, stderr)."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.module is sys.modules[__name__] and hasattr(item, "callspec")
    }
    procs = {}
    for name in sorted(selected):
        args = SCRIPTS[name] + (["--postgres"] if name in WITH_POSTGRES and _postgres() else [])
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    done = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=1500)
            done[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return done


def _table(lines: list[str]) -> None:
    """A header, a rule of dashes under it, then rows."""
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    assert rules, lines
    assert all(0 < i < len(lines) - 1 for i in rules)


def check_harness_overhead(lines: list[str]) -> None:
    assert re.fullmatch(rf"ratio: {NUMBER}", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0.5
    assert lines[0].startswith("model unet-resnet18, 32x32 px, 16 train + 4 validation")
    assert "cpu (" in lines[0]
    assert any(line.startswith("harness per epoch: checkpoint") for line in lines)
    _table(lines)


def check_augmentation(lines: list[str]) -> None:
    assert re.fullmatch(rf"ratio: {NUMBER}", lines[-1]), lines[-1]
    assert "512x512 px" in lines[0]
    assert sum("images/s" in line for line in lines) == 1
    assert any(line.startswith("authors' PIL, per sample") for line in lines)
    _table(lines)


def check_project_full_benchmark(lines: list[str]) -> None:
    assert re.fullmatch(rf"projected hours: {NUMBER}", lines[-1]), lines[-1]
    assert float(lines[-1].split()[-1]) > 0
    assert lines[0].startswith("device: cpu") and "measured here" in lines[0]
    assert lines[1].split()[:3] == ["cell", "first", "step"]
    assert any(
        re.match(r"600 runs x 200 epochs at 32 px, one run at a time, eager steps: .* "
                 r"\(2 cells measured, 98 estimated\)", line)
        for line in lines
    ), lines  # fmt: skip
    _table(lines)


def check_queue_costs(lines: list[str]) -> None:
    assert re.fullmatch(rf"seconds per run: {NUMBER}", lines[-1]), lines[-1]
    assert any(line.startswith("epoch row + heartbeat + cancel check") for line in lines)
    assert any(line.startswith("sqlite: operation") for line in lines)
    _table(lines)


def check_faults(lines: list[str]) -> None:
    # a real pass/fail, unlike the timings: every fault is survived, nothing lost
    last = re.fullmatch(
        rf"faults survived: (\d+)/(\d+), rows lost: 0, duplicated: 0, worst recovery: "
        rf"{NUMBER} s",
        lines[-1],
    )
    assert last and last[1] == last[2] and int(last[2]) == 3, lines[-1]
    assert "SYNTHETIC" in lines[0].upper()
    assert lines[1].startswith("| deployment | fault | recovery s")
    rows = [line for line in lines if line.startswith("| embedded |")]
    assert len(rows) == 3 and not any("FAILED" in row for row in rows), rows


def check_evaluation_cost(lines: list[str]) -> None:
    assert re.fullmatch(rf"ratio: {NUMBER}", lines[-1]), lines[-1]
    assert float(lines[-1].split()[1]) > 0.5
    assert "GENERATED test volumes" in lines[0] and "pspnet-efficientnet-b0" in lines[0]
    for side in ("without boundary metrics", "with NSD + HD95 (surface-area)"):
        assert any(line.startswith(side) for line in lines), side
    assert any(line.startswith("with NSD + HD95 (border-voxel)") for line in lines)
    _table(lines)


def check_interval_coverage(lines: list[str]) -> None:
    assert re.fullmatch(rf"coverage: {NUMBER}", lines[-1]), lines[-1]
    assert 0 < float(lines[-1].split()[1]) <= 1
    for scenario in ("hardly differ", "bounded (Beta)", "equal sizes, differ"):
        assert any(line.startswith(scenario) for line in lines), scenario


@pytest.mark.parametrize(
    "script",
    [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in SCRIPTS],
)
def test_quick_run_prints_its_table_and_last_line(outputs, script):
    code, out, err = outputs[script]
    assert code == 0, err[-3000:]
    lines = out.rstrip("\n").splitlines()
    globals()[f"check_{script}"](lines)


@pytest.mark.slow
def test_the_gpu_session_runs_end_to_end_on_the_cpu(tmp_path):
    """bench/gpu_session.sh --dry-run: every step of the GPU session on the CPU at toy
    sizes, so the script the next GPU session runs cannot rot. Besides the format, it
    checks what must hold on a CPU: two eager runs of one seed are bit-identical (also
    with deterministic kernels), the real queue trains its run, and a projection comes
    out of the measured cell."""
    import json

    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_session.sh"), "--dry-run"],
        cwd=ROOT,
        env={**ENV, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (out / "session.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    for step in ("env", "steps", "harness", "slots", "queue", "project"):
        assert f"step {step} ended with exit code 0" in log, log[-3000:]
    doc = json.loads((out / "gpu_session.json").read_text())
    assert doc["env"]["dry_run"] is True
    (cell,) = doc["steps"].values()
    assert cell["eager_step_s"] > 0 and "error" not in cell, cell
    assert cell["bitwise"] == {"eager_vs_eager": True}
    assert cell["bitwise_deterministic"] == {"eager_vs_eager": True}
    assert doc["harness"]["eager"]["train_s"] > 0
    assert [(r["kind"], r["k"]) for r in doc["slots"]] == [("processes", 1), ("processes", 2)]
    assert doc["queue"]["statuses"] == {"succeeded": 1}
    assert doc["project"]["eager"]["measured_cells"] == 1
    assert doc["project"]["eager"]["hours"] > 0
    table = json.loads((out / "cells.json").read_text())
    assert list(table["cells"]) == ["linknet/mobilenet_v2"]

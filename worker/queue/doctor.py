"""`segbench doctor`: everything a run needs, checked in one go.

Each check gives one row: what was checked, ok / warning / missing, what was found and
the fix. A row is `fatal` when it stops every run (the database unreachable or behind
the schema head, the broker unreachable, the configured dataset folder missing or
failing verification); `segbench doctor` exits 1 only for those. No live worker,
weights that are not cached, low disk or a dashboard without a password are warnings.
"""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from db import migrate, queries
from db.engine import normalize_url
from db.errors import SegbenchError
from db.session import redact, session_scope
from db.settings import get_settings
from worker.data.dataset import dataset_info
from worker.data.nifti import verify
from worker.queue import broker
from worker.training import sizes, weights

OK, WARNING, MISSING = "ok", "warning", "missing"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    fatal: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_python() -> Check:
    version = platform.python_version()  # pyproject requires 3.11: pip refuses older
    return Check("Python", OK, f"{version} ({sys.executable})")


def check_torch() -> list[Check]:
    import torch

    cuda = torch.version.cuda or "none (CPU build)"
    rows = [Check("torch / CUDA", OK, f"torch {torch.__version__}, CUDA {cuda}")]
    if not torch.cuda.is_available():
        rows.append(
            Check(
                "GPUs",
                WARNING,
                "no CUDA GPU visible: runs train on the CPU (fine for tests, slow for the paper)",
                "install the NVIDIA driver and a CUDA build of torch, or accept CPU training",
            )
        )
        return rows
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(f"{i}: {p.name} ({p.total_memory / 2**30:.0f} GiB)")
    rows.append(Check("GPUs", OK, "; ".join(gpus)))
    return rows


def check_database(url: str) -> Check:
    shown = redact(url)
    normal = normalize_url(url)
    if normal.startswith("sqlite:///") and ":memory:" not in normal:
        path = Path(normal.removeprefix("sqlite:///")).resolve()
        if not path.exists():
            return Check(
                "database", MISSING, f"no database file at {path}",
                f"`segbench db upgrade --db {shown}` creates it", fatal=True,
            )  # fmt: skip
    try:
        current = migrate.current_revision(url)
    except SegbenchError as error:
        return Check("database", MISSING, str(error), "start the database server or fix --db", True)
    head = migrate.head_revision()
    if current != head:
        return Check(
            "database", MISSING, f"{shown} is at schema {current or 'none'}, the code needs {head}",
            f"`segbench db upgrade --db {shown}`", fatal=True,
        )  # fmt: skip
    return Check("database", OK, f"{shown}, schema {head} (head)")


def check_broker(db_url: str, broker_url: str | None) -> Check:
    try:
        url = broker.configure(db_url, broker_url)
        broker.check_broker(timeout=3.0)
        depth = broker.queue_depth()
    except Exception as error:  # BrokerError and whatever the transport raises
        return Check(
            "broker", MISSING, str(error).splitlines()[0],
            "start the broker (Redis) or fix --broker / SEGBENCH_BROKER_URL", fatal=True,
        )  # fmt: skip
    return Check("broker", OK, f"{url.split('@')[-1]}, {depth} message(s) waiting")


def check_workers(db_url: str) -> Check:
    with session_scope(db_url) as session:
        live = queries.live_workers(session)
    if not live:
        return Check(
            "workers", WARNING, "no live worker: queued runs wait", "start one: `segbench worker`"
        )
    slots = sum(int(w["concurrency"]) for w in live)
    hosts = sorted({w["host"] for w in live})
    return Check("workers", OK, f"{len(live)} live, {slots} run(s) at once, on {', '.join(hosts)}")


def check_dataset(data_dir: Path) -> Check:
    if not data_dir.is_dir():
        return Check(
            "dataset", MISSING, f"{data_dir} does not exist",
            f"`segbench data fetch --dir {data_dir}` (or `segbench data synth` for stand-in "
            "data), or set SEGBENCH_DATA_DIR", fatal=True,
        )  # fmt: skip
    try:
        problems = verify(data_dir)
        info = None if problems else dataset_info(data_dir)
    except SegbenchError as error:
        problems = [str(error)]
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Check(
            "dataset", MISSING, f"{problems[0]}{more}",
            f"`segbench data verify --dir {data_dir}` lists every problem; fetch again",
            fatal=True,
        )  # fmt: skip
    label = " (SYNTHETIC stand-in data)" if info["synthetic"] else ""
    return Check("dataset", OK, f"{info['name']}{label} in {data_dir}, verified")


def check_weights() -> Check:
    rows = weights.status()
    cached = [r for r in rows if r["cached"]]
    cache = weights.cache_dir()
    detail = f"{len(cached)} of {len(rows)} ImageNet encoders cached in {cache}"
    if len(cached) == len(rows):
        return Check("ImageNet weights", OK, detail)
    if weights.downloads_allowed():
        return Check(
            "ImageNet weights", WARNING, f"{detail}; workers download the rest on first use",
            "`segbench weights fetch --all` downloads them ahead",
        )  # fmt: skip
    return Check(
        "ImageNet weights", MISSING,
        f"{detail}; downloads are forbidden ({weights.offline_reason()}), so ImageNet runs "
        "of the others are refused",
        "`segbench weights fetch --all` on a machine with internet access, then copy the cache",
    )  # fmt: skip


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or will be created)."""
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def disk_for(cells: list[tuple[str, str]], concurrent: int, artifacts: Path) -> dict:
    """What runs of these (architecture, encoder) cells need on the artifacts disk,
    `concurrent` training at a time, beside the space there is (bytes)."""
    need = sizes.sweep_bytes(cells, concurrent)
    return {
        "finished": need.finished,
        "peak": need.peak,
        "unknown": need.unknown,
        "free": free_bytes(artifacts),
    }


def check_disk(artifacts: Path) -> Check:
    free = free_bytes(artifacts)
    need = sizes.full_sweep_bytes()
    detail = (
        f"{_gb(free)} free at {artifacts}; the 600-model sweep keeps about "
        f"{_gb(need.finished)} of best models, {_gb(need.peak)} at most while one run trains"
    )
    if free < need.peak:
        return Check(
            "disk", WARNING, detail, "free space, or point SEGBENCH_ARTIFACTS_DIR elsewhere"
        )
    return Check("disk", OK, detail)


def check_dashboard(address: str) -> Check:
    password = get_settings().dashboard_password
    if address in LOCAL_ADDRESSES:
        return Check("dashboard", OK, f"listens on {address} (this machine only)")
    if password is None or not password.get_secret_value():
        return Check(
            "dashboard", WARNING,
            f"listens on {address} without a password: anyone who reaches it can launch runs",
            "set SEGBENCH_DASHBOARD_PASSWORD",
        )  # fmt: skip
    return Check("dashboard", OK, f"listens on {address}, password set")


def _guard(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        result = check()
    except Exception as error:  # a check must never stop the others
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return [Check(name, WARNING, f"could not be checked ({detail})")]
    return result if isinstance(result, list) else [result]


def run_checks(
    *,
    db_url: str,
    broker_url: str | None = None,
    data_dir: Path | None = None,
    dashboard_address: str | None = None,
    skip: tuple[str, ...] = (),
) -> list[Check]:
    """Every row of `segbench doctor`, in the order a run needs them (without the
    rows named in `skip`)."""
    settings = get_settings()
    rows = _guard("Python", check_python) + _guard("torch / CUDA", check_torch)
    database = _guard("database", lambda: check_database(db_url))
    rows += database
    rows += _guard("broker", lambda: check_broker(db_url, broker_url))
    if "workers" in skip:
        pass
    elif database[0].status == OK:
        rows += _guard("workers", lambda: check_workers(db_url))
    else:
        rows.append(Check("workers", WARNING, "unknown: the database cannot be read"))
    rows += _guard("dataset", lambda: check_dataset(Path(data_dir or settings.data_dir)))
    rows += _guard("ImageNet weights", check_weights)
    rows += _guard("disk", lambda: check_disk(Path(settings.artifacts_dir).resolve()))
    rows += _guard(
        "dashboard", lambda: check_dashboard(dashboard_address or settings.dashboard_address)
    )
    return rows


def exit_code(rows: list[Check]) -> int:
    return 1 if any(r.fatal for r in rows) else 0

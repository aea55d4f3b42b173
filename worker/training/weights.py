"""ImageNet encoder weights: where they are cached, and fetching them once per machine.

Online (the default) a worker that needs an encoder's ImageNet weights downloads them
on first use through huggingface_hub (which honours ``HF_ENDPOINT``) into the weights
cache (the setting ``weights_dir``, else huggingface_hub's own cache). A file lock per
encoder in that cache makes several workers that start together download it once:
the first one downloads, the others wait and find it cached.

``HF_HUB_OFFLINE=1`` or ``SEGBENCH_WEIGHTS_OFFLINE=1`` forbids downloads; then only
what the cache holds can be used, and submitting refuses runs whose weights are
missing (see ``check_before_submit``). Online, submitting checks that the Hub answers
at all: a machine without network refuses the runs at once instead of queuing runs
that can only fail.

Every download is verified before it is used: its sha256 against the Hub's ETag (the
LFS hash) and its tensors against the encoder's. A corrupt file is removed from the
cache (a later run downloads it again) and the error is one sentence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import HTTPRedirectHandler, Request, build_opener

import huggingface_hub.constants
import segmentation_models_pytorch as smp
from filelock import FileLock
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import safe_open
from tqdm.auto import tqdm

from db.catalog import SMP_ENCODERS
from db.errors import SegbenchError
from db.grid import ENCODERS, RunSpec, check_name
from db.settings import get_settings

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
LOCK_TIMEOUT_S = 3600  # a slow download of a big encoder on a slow line
PROBE_TIMEOUT_S = 5.0  # is the Hub reachable at all (before queuing runs that need it)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class WeightsError(SegbenchError):
    """Pretrained encoder weights are not available or not usable."""


@dataclass(frozen=True)
class Source:
    encoder: str
    repo_id: str
    revision: str

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision[:7]}"


def source(encoder: str) -> Source:
    """Where the Hub keeps `encoder`'s ImageNet weights (smp's pinned revision); any
    smp encoder with ImageNet weights, the paper's 25 and the others alike."""
    check_name("encoder", encoder, SMP_ENCODERS)
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if "imagenet" not in settings:
        raise WeightsError(f"Encoder '{encoder}' has no ImageNet weights in smp.")
    s = settings["imagenet"]
    return Source(encoder, s["repo_id"], s["revision"])


def cache_dir() -> Path:
    """The weights cache the workers of this machine read and fill."""
    return Path(get_settings().weights_dir or huggingface_hub.constants.HF_HUB_CACHE)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def downloads_allowed() -> bool:
    """False when HF_HUB_OFFLINE or SEGBENCH_WEIGHTS_OFFLINE forbids downloads."""
    return not (get_settings().weights_offline or _truthy(os.environ.get("HF_HUB_OFFLINE")))


def offline_reason() -> str:
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE=1"
    return "SEGBENCH_WEIGHTS_OFFLINE=1"


def endpoint() -> str:
    """The Hub that downloads go to (HF_ENDPOINT, read at the time of the download)."""
    return (os.environ.get("HF_ENDPOINT") or huggingface_hub.constants.ENDPOINT).rstrip("/")


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer: the Hub is reachable


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub (HF_ENDPOINT) cannot be reached from here, or None if it answers
    at all (any HTTP status counts: only the connection is checked)."""
    request = Request(endpoint() + "/", method="HEAD", headers={"User-Agent": "segbench"})
    try:
        build_opener(_NoRedirect).open(request, timeout=timeout).close()
    except HTTPError:
        return None
    except (URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def cached_path(encoder: str) -> Path | None:
    """The cached weights file of `encoder`, or None; never touches the network."""
    s = source(encoder)
    found = try_to_load_from_cache(
        s.repo_id, WEIGHTS_FILE, cache_dir=str(cache_dir()), revision=s.revision
    )
    if isinstance(found, str) and Path(found).is_file():
        return Path(found)
    return None


def fetch_command(encoders: Sequence[str]) -> str:
    return "segbench weights fetch " + " ".join(f"--encoder {e}" for e in encoders)


def imagenet_encoders(specs: Iterable[RunSpec]) -> list[str]:
    """The encoders whose ImageNet weights `specs` need: the paper's in grid order,
    then the others in smp's order."""
    wanted = {s.encoder for s in specs if s.init == "imagenet"}
    return [e for e in dict.fromkeys([*ENCODERS, *SMP_ENCODERS]) if e in wanted]


def status(encoders: Iterable[str] | None = None) -> list[dict]:
    """{"encoder", "repo", "cached", "bytes", "path"} for each encoder (default: all)."""
    rows = []
    for encoder in encoders or ENCODERS:
        path = cached_path(encoder)
        rows.append(
            {
                "encoder": encoder,
                "repo": source(encoder).label,
                "cached": path is not None,
                "bytes": path.stat().st_size if path else None,
                "path": str(path) if path else None,
            }
        )
    return rows


def check_before_submit(specs: Sequence[RunSpec], *, allow_missing: bool = False) -> dict:
    """Which ImageNet encoders of `specs` are cached here; when some are missing and
    downloads are forbidden or the Hub does not answer, refuse (WeightsError, one
    sentence), unless `allow_missing`.

    Returns {"cached": [...], "missing": [...], "downloads": bool, "cache": str}."""
    needed = imagenet_encoders(specs)
    missing = [e for e in needed if cached_path(e) is None]
    allowed = downloads_allowed()
    if missing and not allow_missing:
        names = ", ".join(missing)
        if not allowed:
            why = f"downloads are forbidden ({offline_reason()})"
        else:
            unreachable = hub_unreachable()
            why = f"the Hub at {endpoint()} cannot be reached ({unreachable})"
        if not allowed or unreachable:
            raise WeightsError(
                f"ImageNet weights for encoder(s) {names} are not in the weights cache "
                f"{cache_dir()} and {why}; queue only randomly initialised runs "
                f"(--init random), or run `{fetch_command(missing)}` on a machine with "
                "internet access and copy the cache here, or pass --allow-missing-weights "
                "if the workers have a cache of their own."
            )
    return {
        "cached": [e for e in needed if e not in missing],
        "missing": missing,
        "downloads": allowed,
        "cache": str(cache_dir()),
    }


class _Silent(tqdm):
    """No progress bar (a worker's log is no terminal)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _bar(label: str) -> type[tqdm]:
    """A progress bar named after the encoder (not after the blob's hash)."""

    class Bar(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["desc"] = label
            super().__init__(*args, **kwargs)

    return Bar


def fetch(
    encoder: str,
    *,
    progress: bool = False,
    on_download: Callable[[Source], None] | None = None,
) -> tuple[Path, bool]:
    """The cached weights of `encoder`, downloaded first if missing and allowed.

    Returns (path, whether this call downloaded them). Several processes calling it
    at once download once: the others wait on the encoder's lock and find the file.
    `on_download` is called just before a download starts (to note it on the run)."""
    s = source(encoder)
    path = cached_path(encoder)
    if path is not None:
        return path, False
    if not downloads_allowed():
        raise WeightsError(
            f"ImageNet weights for encoder '{encoder}' ({s.label}) are not in the weights "
            f"cache {cache_dir()} and downloads are forbidden ({offline_reason()}); run "
            f"`{fetch_command([encoder])}` on a machine with internet access and copy the "
            "cache here."
        )
    root = cache_dir()
    lock_path = root / ".locks" / "segbench" / f"{encoder}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
        path = cached_path(encoder)
        if path is not None:  # another worker downloaded it while this one waited
            log.info("ImageNet weights for %s: fetched by another worker meanwhile", encoder)
            return path, False
        if on_download is not None:
            on_download(s)
        where = endpoint()
        log.info("downloading ImageNet weights for %s (%s) from %s", encoder, s.label, where)
        started = time.monotonic()
        try:
            path = Path(
                hf_hub_download(
                    s.repo_id,
                    filename=WEIGHTS_FILE,
                    revision=s.revision,
                    cache_dir=str(root),
                    endpoint=where,
                    tqdm_class=_bar(f"{encoder} ImageNet weights") if progress else _Silent,
                )
            )
        except Exception as exc:  # network errors, HTTP errors, a size mismatch
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"Downloading the ImageNet weights for encoder '{encoder}' ({s.label}) from "
                f"{where} failed ({reason}); check the network connection (or HF_ENDPOINT), "
                f"or run `{fetch_command([encoder])}` where the Hub is reachable and copy the "
                "cache here."
            ) from exc
        verify(encoder, path, origin=where)
        log.info(
            "downloaded ImageNet weights for %s: %.1f MB in %.1f s",
            encoder,
            path.stat().st_size / 1e6,
            time.monotonic() - started,
        )
        return path, True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _problem(encoder: str, path: Path) -> str | None:
    blob = path.resolve()
    if _SHA256.fullmatch(blob.name) and _sha256(blob) != blob.name:
        return "its sha256 differs from the one the Hub announced"
    expected = {
        k: tuple(v.shape)
        for k, v in smp.encoders.get_encoder(encoder, in_channels=3, weights=None)
        .state_dict()
        .items()
    }
    try:
        with safe_open(str(path), framework="pt") as f:
            got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        return f"it is not a readable safetensors file ({str(exc).splitlines()[0]})"
    if got != expected:
        return "its tensors are not those of the encoder"
    return None


def remove_cached(path: Path) -> None:
    """Remove a cached file: the snapshot's link and the blob it points to."""
    blob = path.resolve()
    for p in {path, blob}:
        if p.is_symlink() or p.exists():
            p.unlink()


def verify(encoder: str, path: Path, *, origin: str = "") -> None:
    """Raise WeightsError (and remove the file from the cache) if `path` is corrupt."""
    problem = _problem(encoder, path)
    if problem is None:
        return
    remove_cached(path)
    where = f" from {origin}" if origin else ""
    raise WeightsError(
        f"The ImageNet weights downloaded for encoder '{encoder}'{where} are corrupt "
        f"({problem}) and were removed from the cache; the next run downloads them again "
        "(if this repeats, check HF_ENDPOINT or the proxy between this machine and the Hub)."
    )

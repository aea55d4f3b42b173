"""ImageNet weights around the queue: what submitting checks, and what a worker does
before it trains a claimed run that starts from ImageNet weights.

Before queuing (`check_before_submit`): which selected encoders are in the weights
cache; with downloads forbidden, the runs whose weights are missing are refused.

Before training (`prepare`): the worker fetches the encoder's weights if they are
missing (once per machine, see worker.training.weights) and notes it on the run, so
the Live page shows "downloading ImageNet weights for ..." instead of silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from db import jobs
from db.grid import RunSpec
from db.session import session_scope
from worker.training import weights
from worker.training.weights import WeightsError, check_before_submit

log = logging.getLogger(__name__)

__all__ = ["WeightsCheck", "WeightsError", "check", "check_quietly", "prepare"]


def _note(database_url: str | None, run_id: int, worker: str, note: str | None) -> None:
    with session_scope(database_url) as session:
        jobs.set_note(session, run_id=run_id, worker=worker, note=note)


def prepare(database_url: str | None, run_id: int, worker: str, spec: RunSpec) -> None:
    """Make sure `spec`'s ImageNet weights are cached before it trains (no-op for a
    random init or weights already cached); WeightsError with one sentence if not."""
    if spec.init != "imagenet" or weights.cached_path(spec.encoder) is not None:
        return
    started = time.monotonic()

    def downloading(source: weights.Source) -> None:
        log.info("run %d: downloading ImageNet weights for %s", run_id, spec.encoder)
        _note(
            database_url,
            run_id,
            worker,
            f"downloading ImageNet weights for {spec.encoder} ({source.label})",
        )

    try:
        path, downloaded = weights.fetch(spec.encoder, on_download=downloading)
    except WeightsError:
        _note(database_url, run_id, worker, None)
        raise
    if downloaded:
        _note(
            database_url,
            run_id,
            worker,
            f"downloaded ImageNet weights for {spec.encoder} "
            f"({path.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s)",
        )


@dataclass(frozen=True)
class WeightsCheck:
    """Which ImageNet encoders of a selection are in the weights cache (`cache`), and
    the sentence submitting answers when some are missing and cannot be downloaded
    (`refused`; None when the runs may be queued)."""

    cache: str
    cached: list[str]
    missing: list[str]
    downloads: bool
    refused: str | None = None

    def sentence(self) -> str | None:
        """What `segbench submit` and the Launch page say about these weights, or None
        when no run starts from ImageNet weights."""
        if not self.cached and not self.missing:
            return None
        parts = []
        if self.cached:
            parts.append(f"cached: {', '.join(self.cached)}")
        if self.missing:
            how = (
                "the workers download them on first use"
                if self.downloads
                else "downloads are forbidden, so these runs fail unless the workers' cache "
                "has them"
            )
            parts.append(f"not cached: {', '.join(self.missing)} ({how})")
        return f"ImageNet weights in {self.cache}: " + "; ".join(parts)


def check(specs: Sequence[RunSpec], *, allow_missing: bool = False) -> WeightsCheck:
    """check_before_submit as a WeightsCheck: raises WeightsError (one sentence) when
    runs would be refused, unless `allow_missing`."""
    return WeightsCheck(**check_before_submit(specs, allow_missing=allow_missing))


def check_quietly(specs: Sequence[RunSpec]) -> WeightsCheck:
    """The same check, never raising: a refusal is kept in `refused` (for a page that
    shows it beside a "queue them anyway" choice)."""
    try:
        return check(specs)
    except WeightsError as error:
        return replace(check(specs, allow_missing=True), refused=str(error))

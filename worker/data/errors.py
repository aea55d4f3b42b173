"""The error of the data layer."""

from __future__ import annotations

from db.errors import SegbenchError


class DataError(SegbenchError):
    """A dataset folder that cannot be used, said in one clear sentence."""

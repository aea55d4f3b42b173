"""Errors a user can cause through the database: each message is one sentence."""

from __future__ import annotations


class DatabaseError(RuntimeError):
    """Base class: the message names the thing and what to check or do."""


class DatabaseUnreachable(DatabaseError):
    """The database URL does not answer."""


class SchemaOutdated(DatabaseError):
    """The database schema is not at the revision this code expects."""


class UnknownRun(DatabaseError, LookupError):
    """A run id that is not in the database."""


class UnknownSweep(DatabaseError, LookupError):
    """A sweep name that is not in the database."""


class SweepConflict(DatabaseError):
    """A sweep name reused with a different protocol or dataset."""

"""The one error base class of segbench, the database's own errors, and the check that
turns an unknown name into one sentence.

Every error a user can cause (a bad name, a damaged file, an unreachable service)
is a SegbenchError whose message is one sentence naming the thing, the value seen
and what was expected; the `segbench` command prints it and exits 1, the dashboard
shows it. Each layer defines its own subclasses next to the code that raises them.
"""

from __future__ import annotations

from collections.abc import Iterable


class SegbenchError(Exception):
    """An error a user can cause, said in one sentence."""


class InvalidInput(SegbenchError, ValueError):
    """A value outside what is accepted (an unknown name, a number out of range)."""


def check_choice(
    kind: str, value: object, valid: Iterable[str], error: type[Exception] = InvalidInput
) -> str:
    """`value` if it is one of `valid`, else `error`("Unknown <kind> '<value>'; expected
    one of: ...")."""
    valid = list(valid)
    if value not in valid:
        raise error(f"Unknown {kind} '{value}'; expected one of: {', '.join(valid)}.")
    return value  # type: ignore[return-value]


class DatabaseError(SegbenchError, RuntimeError):
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

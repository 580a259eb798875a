"""Errors for bad input, and the report that ``skip_invalid=True`` fills instead of raising.

Every reader raises :class:`InvalidInputError` naming the file, the record inside it and the
reason. With ``skip_invalid=True`` the same error is appended to a :class:`SkipReport`, so a
skipped record is counted and explained, never dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

__all__ = ["InvalidInputError", "SkipReport"]

T = TypeVar("T")


class InvalidInputError(ValueError):
    """A file, or one record in it, cannot be turned into a graph.

    Args:
        source: the file (or ``"<smiles>"``, ``"<rdkit Mol>"`` for in-memory input).
        reason: what is wrong, in words.
        record: which record in the file (index, title, line number), if any.
    """

    def __init__(self, source: str | Path, reason: str, record: str | int | None = None):
        self.source = str(source)
        self.reason = reason
        self.record = None if record is None else str(record)
        where = self.source if self.record is None else f"{self.source} [record {self.record}]"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (InvalidInputError, (self.source, self.reason, self.record))

    def to_dict(self) -> dict:
        return {"source": self.source, "record": self.record, "reason": self.reason}


@dataclass
class SkipReport:
    """What ``skip_invalid=True`` left out, and why.

    ``len(report)`` is the number of skipped records, :meth:`reasons` counts them by reason,
    and ``str(report)`` is a short human-readable summary.
    """

    errors: list[InvalidInputError] = field(default_factory=list)

    def add(self, error: InvalidInputError) -> None:
        self.errors.append(error)

    def extend(self, other: SkipReport) -> None:
        self.errors.extend(other.errors)

    def __len__(self) -> int:
        return len(self.errors)

    @property
    def count(self) -> int:
        return len(self.errors)

    def reasons(self) -> Counter:
        """Number of skipped records per reason."""
        return Counter(e.reason for e in self.errors)

    def __str__(self) -> str:
        if not self.errors:
            return "nothing skipped"
        lines = [f"{len(self.errors)} skipped:"]
        lines += [f"  {n} x {reason}" for reason, n in self.reasons().most_common()]
        return "\n".join(lines)

    def guard(self, fn: Callable[[], T], skip_invalid: bool) -> T | None:
        """Run ``fn``; on :class:`InvalidInputError` re-raise, or record it and return None."""
        try:
            return fn()
        except InvalidInputError as error:
            if not skip_invalid:
                raise
            self.add(error)
            return None

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps([e.to_dict() for e in self.errors], indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> SkipReport:
        path = Path(path)
        if not path.exists():
            return cls()
        return cls([InvalidInputError(**d) for d in json.loads(path.read_text())])

    @classmethod
    def merge(cls, reports: Iterable[SkipReport]) -> SkipReport:
        out = cls()
        for r in reports:
            out.extend(r)
        return out

"""The one error type bad input raises: it always names the file and the section."""

from __future__ import annotations

from pathlib import Path


class CohortInputError(ValueError):
    """Input data a user supplied is missing, unreadable or inconsistent.

    The message starts with the section and the file so a user with dozens of sections knows
    exactly which one to fix.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, section: str | None = None):
        self.path = None if path is None else str(path)
        self.section = section
        where = []
        if section is not None:
            where.append(f"section {section}")
        if path is not None:
            where.append(f"file {path}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)

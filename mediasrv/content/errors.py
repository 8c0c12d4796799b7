"""The one failure type of audio sources (its own module so fetch, decode and source share it)."""

from __future__ import annotations


class SourceError(Exception):
    """Why a source could not be played: ``reason`` for machines, ``message`` for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

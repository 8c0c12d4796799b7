"""The version mediasrv reports (``--version``, the CLI's User-Agent, build info in /metrics)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed distribution's version (package metadata), or the source tree's."""
    try:
        return metadata.version("mediasrv")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"

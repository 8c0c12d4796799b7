"""Named media: audio uploaded once and played by name, kept under ``<data-dir>/media``.

A name is a safe identifier (:data:`MEDIA_NAME`), so no name can reach outside the folder.
Uploads are streamed to a temporary file in the same folder, validated by decoding them
once, then renamed into place, so a reader never sees half a file and a failed upload
leaves nothing behind.  Metadata lives in a sidecar under ``.meta/`` (a name cannot start
with a dot); a file dropped into the folder by hand gets its metadata on first request.
All methods block: the API runs them in an executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import SourceError

MEDIA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

Describe = Callable[[bytes], dict[str, Any]]


def valid_name(name: str) -> bool:
    return bool(MEDIA_NAME.fullmatch(name)) and ".." not in name


class MediaStore:
    def __init__(self, directory: str | Path, describe: Describe, max_bytes: int = 250 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.meta_dir = self.dir / ".meta"
        self.describe = describe  # bytes -> {"format", "duration_ms", "sample_rate", "channels"}; raises SourceError
        self.max_bytes = max_bytes

    def path(self, name: str) -> Path:
        if not valid_name(name):
            raise SourceError("invalid_media_name", f"{name!r} is not a valid media name "
                                                    "(letters, digits, '.', '_', '-'; up to 200; no '..')")
        return self.dir / name

    def _meta_path(self, name: str) -> Path:
        return self.meta_dir / f"{name}.json"

    # -- writing -----------------------------------------------------------------
    def begin(self) -> tuple[BinaryIO, Path]:
        """A temporary file in the store's folder (same filesystem, so the final rename is atomic)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.dir)
        return os.fdopen(fd, "wb"), Path(tmp)

    def commit(self, name: str, tmp: Path) -> dict[str, Any]:
        """Validate the uploaded temp file, then move it into place as *name* with its metadata."""
        final = self.path(name)
        try:
            body = tmp.read_bytes()
            meta = self._metadata(body)
            self.meta_dir.mkdir(parents=True, exist_ok=True)
            meta_tmp = self._meta_path(name).with_suffix(".tmp")
            meta_tmp.write_text(json.dumps(meta))
            os.replace(tmp, final)
            os.replace(meta_tmp, self._meta_path(name))
        finally:
            tmp.unlink(missing_ok=True)
        return {"name": name, **meta}

    def abort(self, tmp: Path) -> None:
        tmp.unlink(missing_ok=True)

    def put_bytes(self, name: str, body: bytes) -> dict[str, Any]:
        fh, tmp = self.begin()
        with fh:
            fh.write(body)
        return self.commit(name, tmp)

    def _metadata(self, body: bytes) -> dict[str, Any]:
        info = self.describe(body)
        return {
            "format": info.get("format"),
            "duration_ms": info.get("duration_ms"),
            "sample_rate": info.get("sample_rate"),
            "channels": info.get("channels"),
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "created_at": time.time(),
        }

    # -- reading -----------------------------------------------------------------
    def read(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError as exc:
            raise SourceError("media_not_found", f"no stored media named {name!r}") from exc
        except OSError as exc:
            raise SourceError("read_error", f"cannot read media {name!r}: {exc}") from exc

    def version(self, name: str) -> tuple[int, int]:
        """(mtime_ns, size) of the stored file: what a decoded copy in memory is keyed by."""
        try:
            st = self.path(name).stat()
        except FileNotFoundError as exc:
            raise SourceError("media_not_found", f"no stored media named {name!r}") from exc
        return st.st_mtime_ns, st.st_size

    def info(self, name: str) -> dict[str, Any]:
        """Metadata of one stored file (computed and remembered if the file was placed by hand)."""
        path = self.path(name)
        if not path.is_file():
            raise SourceError("media_not_found", f"no stored media named {name!r}")
        meta_path = self._meta_path(name)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("size") == path.stat().st_size:
                return {"name": name, **meta}
        except (OSError, ValueError):
            pass
        body = path.read_bytes()
        try:
            meta = self._metadata(body)
        except SourceError as exc:
            meta = {"format": None, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                    "created_at": path.stat().st_mtime, "error": {"reason": exc.reason, "message": exc.message}}
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta))
        return {"name": name, **meta}

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_file() and valid_name(p.name))

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                out.append(self.info(name))
            except SourceError:  # removed meanwhile
                continue
        return out

    def delete(self, name: str) -> bool:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        self._meta_path(name).unlink(missing_ok=True)
        return True

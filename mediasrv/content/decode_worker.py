"""Entry point of a decoder process: ``python -m mediasrv.content.decode_worker FD`` (see decodeproc.py)."""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from .decodeproc import serve

if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))

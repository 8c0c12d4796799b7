"""Media plane: pacing clock, sources, players."""

from .plane import MediaPlane, MediaSettings
from .player import Playback, PlayRequest

__all__ = ["MediaPlane", "MediaSettings", "Playback", "PlayRequest"]

"""Media plane: pacing clock, sources, players."""

from .plane import MediaPlane, MediaSettings
from .player import Playback, PlaybackStateError, PlayError, PlayRequest

__all__ = ["MediaPlane", "MediaSettings", "Playback", "PlaybackStateError", "PlayError", "PlayRequest"]

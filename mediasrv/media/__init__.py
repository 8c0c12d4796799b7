"""Media plane: pacing clock, sources, players."""

from .plane import MediaParts, MediaPlane, MediaSettings
from .player import Playback, PlaybackStateError, PlayError, PlayRequest

__all__ = ["MediaParts", "MediaPlane", "MediaSettings", "Playback", "PlaybackStateError", "PlayError", "PlayRequest"]

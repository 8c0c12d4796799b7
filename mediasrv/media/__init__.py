"""The real-time path: media plane (legs on the clock), player, mixer, DTMF/IVR; audio comes from content/."""

from .plane import MediaParts, MediaPlane, MediaSettings
from .player import Playback, PlaybackStateError, PlayError, PlayRequest

__all__ = ["MediaParts", "MediaPlane", "MediaSettings", "Playback", "PlaybackStateError", "PlayError", "PlayRequest"]

"""SIP signaling: a sans-I/O core (message, sdp, transaction, dialog, core) and a thin asyncio transport."""

from .core import CallFailed
from .ua import SipSettings, SipUserAgent

__all__ = ["CallFailed", "SipSettings", "SipUserAgent"]

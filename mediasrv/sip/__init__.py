"""SIP signaling, sans-I/O: message, sdp, transaction, dialog, the core (uas, uac) with events out and
commands in, and a thin asyncio transport (ua, transport). Calls are the controller's (mediasrv/callcontrol.py)."""

from .core import CallFailed, SipCore
from .ua import UaSettings, UserAgent

__all__ = ["CallFailed", "SipCore", "UaSettings", "UserAgent"]

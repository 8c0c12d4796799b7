"""SIP signaling, sans-I/O: message, sdp, transaction, dialog, the core (uas, uac) with events out and
commands in, and a thin asyncio transport (ua, transport). Calls are the controller's (mediasrv/calls/controller.py)."""

# Import-free on purpose: its modules import siblings (``from . import digest``), and a package that
# re-exported them would close an import cycle through this file.

"""Robustness harness: hostile SIP/SDP/RTP/HTTP/BXML/audio inputs against a live ``mediasrv serve``.

Every suite sends inputs to a server subprocess and checks an oracle (alive, OPTIONS answered,
no traceback, no growth, no stray sends); ``python -m robustness`` prints one table row per suite.
See robustness/README.md.
"""

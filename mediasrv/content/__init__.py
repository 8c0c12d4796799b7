"""Where audio comes from: fetch (egress policy), cache (RFC 9111), store (named media), decode,
synth (tones, digits, speech) and the loader (single flight, claims).

Off the clock's path by construction: nothing here imports the real-time modules of
:mod:`mediasrv.media`; they import this package.
"""

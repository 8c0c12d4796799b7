"""G.711 codecs, resampling and the payload-type registry (import name ``mediacodecs``)."""

"""mediasrv: a SIP/RTP media server that plays audio into live calls."""

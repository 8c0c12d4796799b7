"""What an operator runs the server with: logging, metrics, latency timings, GC policy, real-time
scheduling."""

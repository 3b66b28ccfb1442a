"""``python -m realtime.bench``: the live path's latency and throughput benchmark."""

"""``python -m realtime.batch``: archives of recordings, resumable, locally or on a Ray cluster."""

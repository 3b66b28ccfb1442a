"""``python -m realtime.evaluate``: spotting and recognition scored against ground truth."""

#!/usr/bin/env python
"""Real-time micro-expression recognition: the front door.

    python run_live.py --camera 0
    python run_live.py --sample --headless --record out/annotated.mp4 --events out/events.jsonl --signal out/signal.csv
    python run_live.py --help

Everything happens in realtime.frontends.cli (argument parsing and the loop) and
realtime.stages.pipeline (the live path).
"""
from realtime.frontends.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

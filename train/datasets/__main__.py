"""``python -m train.datasets``: load a release and print what was read (train.datasets.cli)."""
from train.datasets.cli import main

raise SystemExit(main())

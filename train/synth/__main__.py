"""``python -m train.synth``: the generator's command line (train.synth.cli)."""
from train.synth.cli import main

raise SystemExit(main())

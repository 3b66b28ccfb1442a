from realtime.evaluate.cli import main

raise SystemExit(main())

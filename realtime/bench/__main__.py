from realtime.bench.cli import main

raise SystemExit(main())

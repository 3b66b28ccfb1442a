from realtime.batch.cli import main

raise SystemExit(main())

from ssd.cli import main

raise SystemExit(main())

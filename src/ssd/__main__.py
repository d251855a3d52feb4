from ssd.cli.main import main

raise SystemExit(main())

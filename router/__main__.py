"""`python -m router` is the `switchyard` command."""

from router.cli import main

raise SystemExit(main())

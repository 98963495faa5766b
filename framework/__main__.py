"""``python -m framework``: the command-line interface."""

from framework.cli.main import main

raise SystemExit(main())

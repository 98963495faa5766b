"""``python -m framework``: the command-line interface."""

from framework.cli import main

raise SystemExit(main())

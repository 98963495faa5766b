"""The command line: ``python -m framework`` / ``framework`` (``plugins``, ...)."""

from framework.cli.main import main

__all__ = ["main"]

"""The `compress` command line: the group in ``main``, one module per command family."""

from edgecompress.cli.main import INTERNAL_ERROR_EXIT, cli, main

__all__ = ["INTERNAL_ERROR_EXIT", "cli", "main"]

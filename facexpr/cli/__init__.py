"""The command line, `facexpr …` (or `python -m facexpr …`): the top layer beside the app.

It may import every layer below it, never the app; each command imports what it needs when it runs,
so `facexpr --help` starts without TensorFlow.
"""

from facexpr.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]

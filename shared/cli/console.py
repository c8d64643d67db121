"""The command line's two consoles: results on stdout, errors and warnings on stderr.

Written to a log (stdout not a terminal), rich would lay tables out 80 columns wide and wrap their cells; a log has
room, so lines there may be as wide as ``LOG_WIDTH``.
"""

from __future__ import annotations

import sys

from rich.console import Console

LOG_WIDTH = 160

out = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
err = Console(stderr=True, soft_wrap=True)

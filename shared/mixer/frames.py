"""Where in a failed candidate file the fault is: the traceback frames that name the file, and the function
holding the deepest one, so a fix can replace just those lines."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from shared.mixer.source import def_lines

# --- the faulty region of a failed file ------------------------------------------------------------------------

# The candidate's file name in its run directory; tracebacks name it, so the debugger can find the faulty lines.
CANDIDATE_FILE = "mixer.py"
_FRAME = re.compile(rf'File "[^"]*{re.escape(CANDIDATE_FILE)}", line (\d+), in (\S+)')


@dataclass(frozen=True)
class Region:
    """The function a failure was raised in: lines ``start``..``end`` (1-based, inclusive) of the file."""

    name: str
    start: int
    end: int
    indent: int
    error_line: int

    def numbered(self, code: str) -> str:
        lines = code.splitlines()[self.start - 1:self.end]
        return "\n".join(f"{n:4d}{'>' if n == self.error_line else ' '} {line}"
                         for n, line in enumerate(lines, start=self.start))


def faulty_region(code: str, traceback_text: str) -> Region | None:
    """The innermost function of the candidate's file holding the deepest traceback frame in that file."""
    frames = _FRAME.findall(traceback_text)
    if not frames:
        return None
    line = int(frames[-1][0])
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    holders = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and node.lineno <= line <= (node.end_lineno or node.lineno)]
    if not holders:
        return None
    inner = max(holders, key=lambda node: node.lineno)
    start, end = def_lines(inner)
    return Region(inner.name, start, end, inner.col_offset, line)


def splice(code: str, region: Region, replacement: str) -> str:
    """``code`` with the region's lines replaced by ``replacement``, re-indented to the region's depth."""
    body = textwrap.indent(textwrap.dedent(replacement.strip("\n")), " " * region.indent)
    lines = code.splitlines()
    return "\n".join([*lines[:region.start - 1], *body.splitlines(), *lines[region.end:]]) + "\n"

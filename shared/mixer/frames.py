"""Where in a failed candidate file the fault is: the traceback frames that name the file, the function holding
the deepest one (so a fix can replace just those lines), and the traceback a failure hands the debugger."""

from __future__ import annotations

import ast
import contextlib
import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

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


def failing_line(traceback_text: str, code: str | None = None) -> int | None:
    """The line of the deepest traceback frame in the candidate's file; with ``code``, only when it is one of its
    lines (a traceback of another version of the file names lines it may not have)."""
    frames = _FRAME.findall(traceback_text)
    number = int(frames[-1][0]) if frames else None
    if number is None or code is None:
        return number
    return number if 0 < number <= len(code.splitlines()) else None


def faulty_region(code: str, traceback_text: str) -> Region | None:
    """The innermost function of the candidate's file holding the deepest traceback frame in that file."""
    line = failing_line(traceback_text)
    if line is None:
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    inner = innermost_function(tree, line)
    if inner is None:
        return None
    start, end = def_lines(inner)
    return Region(inner.name, start, end, inner.col_offset, line)


def innermost_function(tree: ast.AST, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The innermost function of the tree whose lines hold ``line``."""
    holders = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and node.lineno <= line <= (node.end_lineno or node.lineno)]
    return max(holders, key=lambda node: node.lineno) if holders else None


def splice(code: str, region: Region, replacement: str) -> str:
    """``code`` with the region's lines replaced by ``replacement``, re-indented to the region's depth."""
    body = textwrap.indent(textwrap.dedent(replacement.strip("\n")), " " * region.indent)
    lines = code.splitlines()
    return "\n".join([*lines[:region.start - 1], *body.splitlines(), *lines[region.end:]]) + "\n"


# --- the traceback the debugger gets ---------------------------------------------------------------------------


def candidate_traceback(exc: BaseException, source: Path) -> str:
    """The traceback as the candidate's author needs it: the frames of the candidate's file, with their lines, and
    the error they raised. Along the chain of causes (a check's failure, caused by what the candidate raised), the
    deepest exception whose frames run through the file is the one shown; "" when none does."""
    found = _candidate_error(exc, source)
    if found is None:
        return ""
    error, own = found
    return "".join(["Traceback (most recent call last):\n", *traceback.format_list(own),
                    *traceback.format_exception_only(error)])


def _candidate_error(exc: BaseException, source: Path) -> tuple[BaseException, list[traceback.FrameSummary]] | None:
    """Along the chain of causes, the deepest exception whose frames run through the file, with those frames."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    target = source.resolve()
    for error in reversed(chain):
        own = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == target]
        if own:
            return error, own
    return None


MAX_LOCALS = 16


def frame_locals(exc: BaseException, source: Path) -> str:
    """The locals of the candidate's frame that raised, as a debugger needs them: tensors with their shape, dtype,
    device (and when not contiguous), numbers with their value; "" when no frame of the file raised."""
    found = _candidate_error(exc, source)
    if found is None:
        return ""
    target, tb = source.resolve(), found[0].__traceback__
    frame = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == target:
            frame = tb.tb_frame
        tb = tb.tb_next
    if frame is None:
        return ""
    described = [f"{name}: {text}" for name, value in frame.f_locals.items()
                 if not name.startswith("__") and (text := _describe_value(value))]
    return "; ".join(described[:MAX_LOCALS])


def _describe_value(value: object) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        layout = "" if value.is_contiguous() else ", not contiguous"
        return f"Tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} {value.device}{layout}"
    if isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, tuple | list | torch.Size) and len(value) <= 6 and all(isinstance(v, int) for v in value):
        return repr(tuple(value))
    if isinstance(value, torch.nn.Module) and not isinstance(value, torch.nn.ModuleList):
        return type(value).__name__
    return ""


_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b")


def error_signature(kind: str, message: str, traceback_text: str = "") -> str:
    """What a failure has in common with the same bug in another mixer: its kind, the exception's type and its
    message with the numbers (sizes, positions, lines) taken out."""
    last = next((line for line in reversed(traceback_text.strip().splitlines()) if line and not line[0].isspace()),
                "")
    text = last if re.match(r"^[\w.]+(Error|Exception|Warning)\b", last) else message
    text = _NUMBER.sub("N", text.splitlines()[0] if text else "")
    return f"{kind}: {' '.join(text.split())[:200]}"


def names_the_candidate(traceback_text: str) -> bool:
    return _FRAME.search(traceback_text) is not None


def is_pointed(traceback_text: str) -> bool:
    """Whether the traceback is one ``pointed_traceback`` made (a check's verdict), not the candidate's own."""
    return f'File "{CANDIDATE_FILE}", line' in traceback_text


# The method a failure nothing in the candidate raised is pinned on: the one the failed check measured.
_METHOD_OF_KIND = {"params": "__init__"}
_LINE_IN_MESSAGE = re.compile(r"\bline (\d+)\b")


def pointed_traceback(code: str, kind: str, message: str) -> str:
    """A traceback naming the candidate's file, line and function for a failure the candidate's code did not raise
    (outputs that see the future, a NaN, a slow or hung step, a refused allocation): the line a syntax error names,
    else the definition of the method the failed check exercised (``forward``; ``__init__`` for the parameter
    count). The debugger then shows that function, not the whole file."""
    lines = code.splitlines()
    name, number = "<module>", 1
    stated = _LINE_IN_MESSAGE.search(message)
    if kind == "syntax" and stated:
        number = int(stated.group(1))
    else:
        wanted = _METHOD_OF_KIND.get(kind, "forward")
        with contextlib.suppress(SyntaxError):
            tree = ast.parse(code)
            found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                     and n.name == wanted]
            if found:
                name, number = wanted, found[0].lineno
    shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    return (f'Traceback (most recent call last):\n  File "{CANDIDATE_FILE}", line {number}, in {name}\n'
            f"    {shown}\n{kind}: {message.splitlines()[0] if message else kind}\n")

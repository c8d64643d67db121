"""Static handling of mixer source code: deterministic repair of the trivial, and checks that run nothing.

The researcher, the debugger and the engineer all use these before code goes anywhere near a sandbox. Repair only
does what has one right answer (strip Markdown fences, add the standard imports a file uses but forgot); anything
else is a rejection with a reason the LLM can act on.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

ALLOWED_IMPORTS = frozenset({
    "torch", "math", "typing", "functools", "dataclasses", "collections", "itertools", "numbers", "__future__",
})
FORBIDDEN_CALLS = frozenset({"exec", "eval", "compile", "open", "__import__", "globals", "locals", "breakpoint",
                             "input"})

# (how the code refers to it, the import line that provides it)
STANDARD_IMPORTS: tuple[tuple[str, str], ...] = (
    (r"\btorch\.", "import torch"),
    (r"(?<![\w.])nn\.", "import torch.nn as nn"),
    (r"(?<![\w.])F\.", "import torch.nn.functional as F"),
    (r"(?<![\w.])math\.", "import math"),
)
TYPING_NAMES = ("Optional", "Tuple", "List", "Dict", "Any", "Callable", "Union")
FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class StaticProblem:
    reason: str  # a ProposalRejected reason: "syntax" or "contract"
    detail: str


def strip_fences(code: str) -> str:
    """The first fenced block if the reply wrapped the code in Markdown (a missing closing fence included, as when
    the reply was cut at its token limit), else the text as it is."""
    match = FENCE.search(code)
    if match:
        return match.group(1)
    opened = re.match(r"\s*```(?:python|py)?[^\n]*\n", code)
    return code[opened.end():] if opened else code


def imported_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def add_missing_imports(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # nothing safe to do: the syntax check will say what is wrong
    have = imported_names(tree)
    missing: list[str] = []
    for pattern, line in STANDARD_IMPORTS:
        name = line.split()[-1]
        if name not in have and re.search(pattern, code):
            missing.append(line)
            have.add(name)
    typing_used = [n for n in TYPING_NAMES if n not in have and re.search(rf"(?<![\w.]){n}\b", code)]
    if typing_used:
        missing.append(f"from typing import {', '.join(typing_used)}")
    return "\n".join(missing) + "\n" + code if missing else code


def alias_single_module(code: str) -> str:
    """``Mixer = TheirName`` when the file defines no Mixer but exactly one top-level nn.Module subclass.

    Small models often name the class after their idea; the alias keeps their code as written.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    if find_mixer(tree) is not None:
        return code
    modules = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and any(
        ast.unparse(base).split(".")[-1] == "Module" for base in n.bases)]
    return f"{code}\n\nMixer = {modules[0]}\n" if len(modules) == 1 else code


def repair(code: str, donors: Sequence[str] = ()) -> str:
    """Fences stripped, standard imports added, a lone module aliased as Mixer, methods written inside another
    method moved out, and the top-level helpers the code calls but never defines copied from ``donors`` (its
    parent, the baselines) when one of them defines them."""
    code = strip_fences(code).strip("\n") + "\n"
    return borrow_definitions(hoist_nested_methods(alias_single_module(add_missing_imports(code))), donors)


def hoist_nested_methods(code: str) -> str:
    """Mixer's methods that a small model indented into the method before them (most often ``__init__``): a
    function nested in a method and taking ``self`` is never meant as a closure, so it becomes a method of Mixer,
    replacing the one of its name."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    mixer = find_mixer(tree)
    for outer in mixer.body if mixer is not None else []:
        if not isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        nested = [n for n in outer.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                  and [a.arg for a in n.args.args][:1] == ["self"]]
        if nested and len(nested) < len(outer.body):
            start, end = def_lines(nested[0])
            lines = code.splitlines()
            source = textwrap.dedent("\n".join(lines[start - 1:end]))
            rest = "\n".join([*lines[:start - 1], *lines[end:]]) + "\n"
            return hoist_nested_methods(put_definition(rest, nested[0].name, source, as_method=True))
    return code


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the file binds anywhere, in any scope: over-inclusive on purpose, so that a name missing from
    it is certainly undefined."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
    return names


def undefined_names(code: str) -> list[tuple[str, int]]:
    """Names the code reads but binds nowhere and that are no builtins, with the line each is first read on.
    Annotations are skipped: with postponed evaluation they never run."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    for node in ast.walk(tree):  # drop annotations before looking at reads
        if isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
        elif isinstance(node, ast.AnnAssign):
            node.annotation = ast.Constant(None)
    known = bound_names(tree) | set(dir(builtins))
    first: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known:
            first[node.id] = min(first.get(node.id, node.lineno), node.lineno)
    return sorted(first.items(), key=lambda item: item[1])


def top_level_definitions(code: str) -> dict[str, str]:
    """Source of each top-level function and class (with its decorators), by name."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    lines = code.splitlines()
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            start, end = def_lines(node)
            found[node.name] = "\n".join(lines[start - 1:end])
    return found


def borrow_definitions(code: str, donors: Sequence[str], rounds: int = 4) -> str:
    """Append the donors' definitions of names the code uses but never defines (and, over a few rounds, of the
    helpers those use in turn). A small model often calls its parent's helper without copying it."""
    definitions: dict[str, str] = {}
    for donor in reversed(donors):  # the first donor wins
        definitions |= top_level_definitions(donor)
    for _ in range(rounds):
        borrowed = [definitions[name] for name, _ in undefined_names(code) if name in definitions]
        if not borrowed:
            break
        code = add_missing_imports(code.rstrip("\n") + "\n\n\n" + "\n\n\n".join(borrowed) + "\n")
    return code


def find_mixer(tree: ast.Module) -> ast.ClassDef | None:
    """The class that ``Mixer`` names: a class of that name, or the class a top-level ``Mixer = X`` points at."""
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    if "Mixer" in classes:
        return classes["Mixer"]
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["Mixer"]
                and isinstance(node.value, ast.Name) and node.value.id in classes):
            return classes[node.value.id]
    return None


def unused_attributes(code: str) -> list[str]:
    """Attributes ``Mixer.__init__`` sets to a call (a layer, a parameter) that nothing in the file reads back:
    a change written into ``__init__`` but never into ``forward``. Any read of the name counts as a use."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    cls = find_mixer(tree)
    init = method(cls, "__init__") if cls is not None else None
    if init is None:
        return []
    assigned = [node for node in ast.walk(init) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)]
    created = [target.attr for node in assigned for target in node.targets if isinstance(target, ast.Attribute)
               and isinstance(target.value, ast.Name) and target.value.id == "self"]
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)}
    read |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return [name for name in dict.fromkeys(created) if name not in read]


def method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def contract_problem(cls: ast.ClassDef) -> str | None:
    init, forward = method(cls, "__init__"), method(cls, "forward")
    if init is None or forward is None:
        return "Mixer must define __init__(self, d_model, n_heads, **kwargs) and forward(self, x)"
    init_args = [a.arg for a in init.args.args]
    if init_args[1:3] != ["d_model", "n_heads"] or init.args.kwarg is None:
        return f"Mixer.__init__ takes ({', '.join(init_args)}); it must be (self, d_model, n_heads, **kwargs)"
    forward_args = [a.arg for a in forward.args.args]
    required = len(forward_args) - len(forward.args.defaults)
    if len(forward_args) < 2 or required > 2:
        return f"Mixer.forward takes ({', '.join(forward_args)}); it must be (self, x) with x (batch, seq, d_model)"
    return None


def safety_problem(tree: ast.Module) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] not in ALLOWED_IMPORTS:
                    return f"import of '{module}' is not allowed; use only {', '.join(sorted(ALLOWED_IMPORTS))}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            return f"call to {node.func.id}() is not allowed in a mixer"
    return None


def static_problem(code: str) -> StaticProblem | None:
    """Why this source cannot be a mixer, found without running it; ``None`` when it may be one."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return StaticProblem("syntax", f"line {exc.lineno}: {exc.msg}")
    cls = find_mixer(tree)
    if cls is None:
        return StaticProblem("contract", "the file defines no top-level class named Mixer")
    problem = contract_problem(cls) or safety_problem(tree)
    if problem:
        return StaticProblem("contract", problem)
    missing = undefined_names(code)
    if missing:
        listed = ", ".join(f"'{name}' (line {line})" for name, line in missing[:5])
        return StaticProblem("syntax", f"used but never defined: {listed}; define or import it in the file")
    return None


def normalised_lines(code: str) -> list[str]:
    """The code's computing statements one per line: no comments, docstrings, imports, slow reference functions
    (prompts leave them out, so a copy of a prompt lacks them), blank lines or formatting differences."""
    # A file that does not parse is compared as raw text: still better than nothing.
    with contextlib.suppress(SyntaxError):
        code = ast.unparse(without_decoration(ast.parse(code)))
    return [line.strip() for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]


def without_decoration(tree: ast.Module) -> ast.Module:
    tree.body = [node for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom) and not (
        isinstance(node, ast.FunctionDef) and node.name in REFERENCE_FUNCTIONS)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def code_similarity(a: str, b: str) -> float:
    """How much of two mixer files is the same code, 0..1, over the whole files.

    Sentence embeddings see only a file's first few hundred tokens (imports and ``__init__``, alike in every
    mixer), so they cannot tell a new recurrence from a copy; a line-level diff ratio can.
    """
    return difflib.SequenceMatcher(None, normalised_lines(a), normalised_lines(b), autojunk=False).ratio()


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


def def_lines(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> tuple[int, int]:
    """First and last line (1-based, inclusive) of a function or class, its decorators included."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.end_lineno or node.lineno


def splice(code: str, region: Region, replacement: str) -> str:
    """``code`` with the region's lines replaced by ``replacement``, re-indented to the region's depth."""
    body = textwrap.indent(textwrap.dedent(replacement.strip("\n")), " " * region.indent)
    lines = code.splitlines()
    return "\n".join([*lines[:region.start - 1], *body.splitlines(), *lines[region.end:]]) + "\n"


# --- a draft given as the functions it changes ---------------------------------------------------------------


def merge_functions(base: str, reply: str) -> str:
    """The file a reply makes of ``base``: the reply itself when it is a whole mixer file (a Mixer with __init__
    and forward), else ``base`` with each function of the reply put in place: a Mixer method or top-level function
    of the same name replaced, a new method (first argument ``self``) added to Mixer, a new helper appended.

    A small model asked for a whole file mostly hands back its parent unchanged; asked for the functions it
    changes, it writes the change.
    """
    text = textwrap.dedent(strip_fences(reply))
    try:
        tree = ast.parse(text)
    except SyntaxError:
        # Methods indented as inside the class next to helpers at the top level: take each def on its own.
        pieces = [textwrap.dedent(piece) for piece in _def_pieces(text)]
        if not pieces or not all(parses(piece) for piece in pieces):
            return reply  # the static check names the syntax error
        return _merge_trees(base, [(ast.parse(piece), piece) for piece in pieces])
    mixer = find_mixer(tree)
    if mixer is not None and method(mixer, "__init__") and method(mixer, "forward"):
        return reply
    if not _definitions(tree, frozenset({"Mixer"})):
        return reply  # nothing to merge: judged as the whole file it claims to be
    return _merge_trees(base, [(tree, text)])


def _merge_trees(base: str, parsed: list[tuple[ast.Module, str]]) -> str:
    code = base
    mixer = find_mixer(ast.parse(base)) if parses(base) else None
    mixer_names = frozenset({"Mixer", *([mixer.name] if mixer is not None else [])})
    for tree, text in parsed:
        lines = text.splitlines()
        for node, as_method in _definitions(tree, mixer_names):
            start, end = def_lines(node)
            source = textwrap.dedent("\n".join(lines[start - 1:end]))
            as_method = as_method or (not isinstance(node, ast.ClassDef)
                                      and [a.arg for a in node.args.args][:1] == ["self"])
            code = put_definition(code, node.name, source, as_method)
    return code


def _def_pieces(text: str) -> list[str]:
    """The text cut before each ``def`` that is not nested in the previous one (what precedes the first is
    dropped: a class line or imports)."""
    pieces: list[list[str]] = []
    depth: int | None = None
    for line in text.splitlines():
        found = re.match(r"(\s*)(?:async\s+)?def\s", line)
        if found and (depth is None or len(found.group(1)) <= depth):
            pieces.append([line])
            depth = len(found.group(1))
        elif pieces:
            pieces[-1].append(line)
    return ["\n".join(piece) for piece in pieces]


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _definitions(tree: ast.Module, mixer_names: frozenset[str]) -> list[tuple[Definition, bool]]:
    """The reply's top-level functions and classes, and the methods of a partial Mixer (a class of the mixer's name
    that lacks __init__ or forward), with whether each is a Mixer method. Any other class is a new class as it is."""
    found: list[tuple[Definition, bool]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in mixer_names:
            found += [(n, True) for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node, False))
    return found


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def put_definition(code: str, name: str, source: str, as_method: bool) -> str:
    """``code`` with ``source`` as its Mixer method (``as_method``) or top-level function or class ``name``:
    replacing the one of that name, else added. Unchanged when ``code`` does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    mixer = find_mixer(tree)
    existing: Definition | None = method(mixer, name) if mixer is not None and as_method else None
    if existing is None:
        existing = next((n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                         and n.name == name and n is not mixer), None)
    if existing is not None:
        start, end = def_lines(existing)
        return splice(code, Region(name, start, end, existing.col_offset, 0), source)
    lines = code.splitlines()
    if as_method and mixer is not None and mixer.end_lineno is not None:
        indented = textwrap.indent(source.strip("\n"), " " * mixer.body[0].col_offset)
        return "\n".join([*lines[:mixer.end_lineno], "", indented, *lines[mixer.end_lineno:]]) + "\n"
    return code.rstrip("\n") + "\n\n\n" + source.strip("\n") + "\n"


# --- a draft written one function at a time -----------------------------------------------------------------


def editable_functions(code: str) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """Mixer's methods, then the top-level functions, each with whether it is a Mixer method."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    mixer = find_mixer(tree)
    kinds = ast.FunctionDef | ast.AsyncFunctionDef
    methods = [n for n in (mixer.body if mixer is not None else []) if isinstance(n, kinds)]
    return [(n, True) for n in methods] + [(n, False) for n in tree.body if isinstance(n, kinds)]


def function_matching(code: str, site: str) -> tuple[str, bool] | None:
    """The function a site names: a Mixer method of that name, else the first function (methods first) whose
    source matches the site as a regular expression; with whether it is a Mixer method."""
    found = editable_functions(code)
    for node, is_method in found:
        if is_method and node.name == site:
            return node.name, True
    lines = code.splitlines()
    for node, is_method in found:
        start, end = def_lines(node)
        if re.search(site, "\n".join(lines[start - 1:end])):
            return node.name, is_method
    return None


def function_source(code: str, name: str, is_method: bool) -> str:
    """The source of a Mixer method or top-level function, dedented; empty when there is none."""
    lines = code.splitlines()
    for node, method_ in editable_functions(code):
        if node.name == name and method_ == is_method:
            start, end = def_lines(node)
            return textwrap.dedent("\n".join(lines[start - 1:end])) + "\n"
    return ""


def extract_function(reply: str, name: str) -> str | None:
    """The function ``name`` from a reply, wherever the reply put it (alone, in a class, beside others). None when
    the reply has no function of that name: another function in its place would be spliced in under a wrong name."""
    text = textwrap.dedent(strip_fences(reply))
    pieces = [text] if parses(text) else [textwrap.dedent(p) for p in _def_pieces(text) if parses(textwrap.dedent(p))]
    for piece in pieces:
        lines = piece.splitlines()
        for node in ast.walk(ast.parse(piece)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                start, end = def_lines(node)
                return textwrap.dedent("\n".join(lines[start - 1:end])) + "\n"
    return None


# Baselines carry a slow token-by-token reference for their tests. Shown to a small model as part of a parent, it is
# copied into the fast path (``mixer._output(...)`` inside a chunk function): prompts leave it out.
REFERENCE_FUNCTIONS = frozenset({"recurrent_reference"})


def for_prompt(code: str, drop: frozenset[str] = REFERENCE_FUNCTIONS) -> str:
    """``code`` without its top-level functions named in ``drop`` (unchanged when it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines()
    dropped: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in drop:
            start, end = def_lines(node)
            dropped.update(range(start - 1, end))
    kept = [line for i, line in enumerate(lines) if i not in dropped]
    return re.sub(r"\n{3,}", "\n\n\n", "\n".join(kept)).rstrip("\n") + "\n"

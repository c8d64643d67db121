"""Editing mixer source: deterministic repair of the trivial, and putting what an LLM wrote (a whole file, one
function, the functions a change touches) in place.

Repair only does what has one right answer (strip Markdown fences, add the standard imports a file uses but forgot,
copy a helper the parent defines); anything else is left to the checks. Nothing here runs the code.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
from collections.abc import Sequence

from shared.mixer.frames import Region, splice
from shared.mixer.source import (
    REFERENCE_FUNCTIONS,
    def_lines,
    find_mixer,
    imported_names,
    method,
    parses,
    strip_fences,
    undefined_names,
)

# (how the code refers to it, the import line that provides it)
STANDARD_IMPORTS: tuple[tuple[str, str], ...] = (
    (r"\btorch\.", "import torch"),
    (r"(?<![\w.])nn\.", "import torch.nn as nn"),
    (r"(?<![\w.])F\.", "import torch.nn.functional as F"),
    (r"(?<![\w.])math\.", "import math"),
)
TYPING_NAMES = ("Optional", "Tuple", "List", "Dict", "Any", "Callable", "Union")


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


def unified_diff(before: str, after: str, before_name: str = "a/mixer.py", after_name: str = "b/mixer.py") -> str:
    """The change from ``before`` to ``after`` as a unified diff (empty when they are the same)."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        before_name, after_name))


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

"""Static checks of mixer source code: what can be told without running it.

The researcher, the debugger and the engineer all use these before code goes anywhere near a sandbox; what fails
is a rejection with a reason the LLM can act on. Deterministic repair lives in ``shared.mixer.edit``.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import re
from dataclasses import dataclass

ALLOWED_IMPORTS = frozenset({
    "torch", "math", "typing", "functools", "dataclasses", "collections", "itertools", "numbers", "__future__",
})
FORBIDDEN_CALLS = frozenset({"exec", "eval", "compile", "open", "__import__", "globals", "locals", "breakpoint",
                             "input"})

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
    created = layers_created(tree)
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)}
    read |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return [name for name in dict.fromkeys(created) if name not in read]


def layers_created(tree: ast.Module) -> list[str]:
    """The attributes ``Mixer.__init__`` sets to a call (a layer, a parameter), in order."""
    cls = find_mixer(tree)
    init = method(cls, "__init__") if cls is not None else None
    if init is None:
        return []
    assigned = [node for node in ast.walk(init) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)]
    return [target.attr for node in assigned for target in node.targets if isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name) and target.value.id == "self"]


def discarded_results(code: str) -> list[str]:
    """Statements that compute a tensor and throw it away (``self.gate(x)`` on a line of its own, ``x * 2``): a
    change written as a call whose result nothing uses, which leaves the outputs the parent's. Only a layer of the
    mixer, a ``torch`` or ``F`` function (not in place: its name ends in ``_``) or arithmetic counts; any other call
    may act by its side effect (``outs.append``, ``self.register_buffer``)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    layers = set(layers_created(tree))
    return [f"`{ast.unparse(node.value)}` (line {node.lineno})" for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and discards_a_tensor(node.value, layers)]


def unread_assignments(code: str) -> list[str]:
    """Plain ``name = value`` assignments that nothing in their function reads: a value computed and dropped
    (``o = chunked_delta_rule(...)`` above ``return self.skip * x``), each as "`o` (line 66, in forward)"."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found: list[tuple[int, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        read = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
        found += [(node.lineno, f"`{target.id}` (line {node.lineno}, in {function.name})")
                  for node in _own_nodes(function) if isinstance(node, ast.Assign) and len(node.targets) == 1
                  and isinstance(target := node.targets[0], ast.Name) and not target.id.startswith("_")
                  and target.id not in read]
    return [text for _, text in sorted(found)]


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of a function's body, not those of the functions and classes defined inside it (their own)."""
    nodes, todo = [], list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        nodes.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def discards_a_tensor(value: ast.expr, layers: set[str]) -> bool:
    if isinstance(value, ast.BinOp | ast.UnaryOp):
        return True
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name)):
        return False
    owner, name = value.func.value.id, value.func.attr
    return (owner == "self" and name in layers) or (owner in ("torch", "F") and not name.endswith("_"))


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


# Baselines carry a slow token-by-token reference for their tests. Shown to a small model as part of a parent, it is
# copied into the fast path (``mixer._output(...)`` inside a chunk function): prompts leave it out.
REFERENCE_FUNCTIONS = frozenset({"recurrent_reference"})


def def_lines(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> tuple[int, int]:
    """First and last line (1-based, inclusive) of a function or class, its decorators included."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.end_lineno or node.lineno


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True

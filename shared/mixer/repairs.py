"""Mechanical repairs: the error classes whose fix follows from the error itself, tried before an LLM is asked.

Each repair is a guess with a reason: the debugger runs every one through the trial and sends the first that
passes (or gets further), so a guess that does not fit this mixer costs seconds and is never sent. The edits are
made on the text at the positions the parser gives, so everything else in the file stays as written.
"""

from __future__ import annotations

import ast
import difflib
import functools
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.mixer.baselines import BASELINES
from shared.mixer.edit import repair
from shared.mixer.frames import failing_line, innermost_function

log = logging.getLogger(__name__)

FACTORIES = frozenset({"zeros", "ones", "empty", "full", "arange", "eye", "randn", "rand", "linspace", "tensor",
                       "zeros_like", "ones_like"})
DEVICE_ERROR = re.compile(r"Expected all tensors to be on the same device|is not on the expected device|"
                          r"device type|on device \w+ is not")
DTYPE_ERROR = re.compile(r"scalar type|same dtype|dtype \w+ but|expected .*dtype|Double|Long|float64|"
                         r"returned torch\.\w+")
VIEW_ERROR = re.compile(r"view size is not compatible|Use \.reshape")
MATMUL_SHAPES = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
MISSING_ATTRIBUTE = re.compile(r"object has no attribute '(\w+)'")
MISSING_NAME = re.compile(r"name '(\w+)' is not defined")
# Python 3.11+ and earlier spellings of reading a local before anything assigned it.
UNBOUND_LOCAL = re.compile(r"cannot access local variable '(\w+)'|local variable '(\w+)' referenced before")
INVALID_SHAPE = re.compile(r"shape '\[([^\]]*)\]' is invalid for input of size (\d+)")


@dataclass(frozen=True)
class Failure:
    """What a repair reads: the failed code, its kind, message and traceback, the trial's NaN site, and the width
    and heads the failing check built the mixer with."""

    code: str
    kind: str
    message: str
    traceback: str
    nan_site: str = ""
    d_model: int = 0
    n_heads: int = 0

    @property
    def text(self) -> str:
        return f"{self.message}\n{self.traceback}"

    @property
    def line(self) -> int | None:
        """The failing line, when the traceback names one of this code's lines."""
        return failing_line(self.traceback, self.code)


@dataclass(frozen=True)
class Repair:
    code: str
    what: str


def candidate_repairs(failure: Failure) -> list[Repair]:
    """Every mechanical repair whose error class the failure shows, most specific first; none twice, none that
    leaves the code as it was."""
    seen = {failure.code.strip()}
    found: list[Repair] = []
    # Code that does not parse gets the repair that can make it parse; the others read its syntax tree.
    for make in REPAIRS if _parses(failure.code) else (standard_repair,):
        try:
            candidates = list(make(failure))
        except Exception:  # a repair that trips on this code is skipped, not the failure's debugging
            log.warning("repair %s failed on this code", make.__name__, exc_info=True)
            continue
        for candidate in candidates:
            if candidate.code.strip() not in seen and _parses(candidate.code):
                seen.add(candidate.code.strip())
                found.append(candidate)
    return found


@functools.cache
def baseline_sources() -> dict[str, str]:
    """The built-in baselines' source, by name: the donors of definitions a draft dropped (read once)."""
    return {name: path.read_text() for name, path in BASELINES.items()}


def standard_repair(failure: Failure) -> Iterator[Repair]:
    """A standard import the file uses but forgot, a helper a built-in baseline defines, Markdown fences."""
    code = repair(failure.code, donors=list(baseline_sources().values()))
    before = set(failure.code.splitlines())
    added = [line.strip() for line in code.splitlines() if line not in before and line.strip()]
    if added:
        yield Repair(code, f"added what the file uses but never defines: {'; '.join(added[:5])}")


def view_to_reshape(failure: Failure) -> Iterator[Repair]:
    """`.view` on a non-contiguous tensor (after a transpose): `.reshape` copies when it must."""
    if not VIEW_ERROR.search(failure.text):
        return
    line = failure.line
    if line is not None:
        yield Repair(_on_line(failure.code, line, lambda text: text.replace(".view(", ".reshape(")),
                     f"`.view` on a non-contiguous tensor at line {line} replaced by `.reshape`")
    yield Repair(failure.code.replace(".view(", ".reshape("), "every `.view` replaced by `.reshape`")


def device_and_dtype(failure: Failure) -> Iterator[Repair]:
    """Tensors the failing function creates get the device (and dtype) of its first tensor argument."""
    device, dtype = DEVICE_ERROR.search(failure.text), DTYPE_ERROR.search(failure.text)
    if not (device or dtype):
        return
    function = _enclosing_function(failure.code, failure.line) or _method(failure.code, "forward")
    if function is None or not _arguments(function):
        return
    like = _arguments(function)[0]
    wanted = [("device", f"{like}.device")] if device else []
    wanted += [("dtype", f"{like}.dtype")] if dtype else []
    code = _set_factory_keywords(failure.code, function, wanted)
    if dtype:
        code = re.sub(r"\.double\(\)", f".to({like}.dtype)", code)
        code = re.sub(r"dtype\s*=\s*torch\.(float64|double)", f"dtype={like}.dtype", code)
    names = " and ".join(key for key, _ in wanted)
    yield Repair(code, f"tensors created in `{function.name}` now take the {names} of `{like}`")


def linear_width(failure: Failure) -> Iterator[Repair]:
    """`mat1 and mat2 shapes cannot be multiplied (AxB and CxD)`: the layer called on the failing line expects C
    inputs but gets B; its input width is set to the expression of ``__init__``'s arguments that equals B."""
    shapes = MATMUL_SHAPES.search(failure.text)
    line = failure.line
    if shapes is None or line is None or not failure.d_model:
        return
    got = int(shapes.group(2))
    called = re.findall(r"self\.(\w+)\(", failure.code.splitlines()[line - 1])
    init = _method(failure.code, "__init__")
    if init is None or len(_arguments(init)) < 2:
        return
    widths = _width_expressions(*_arguments(init)[:2], failure.d_model, failure.n_heads)
    for name in called:
        for call in _linear_calls(init, name):
            for expression in (e for e, value in widths.items() if value == got):
                yield Repair(_replace_node(failure.code, call.args[0], expression),
                             f"`self.{name}` gets {got} inputs at line {line}: its input width is now `{expression}`")


def size_the_shape_names(failure: Failure) -> Iterator[Repair]:
    """`shape '[…]' is invalid for input of size N` on a view or reshape: the size its last dimension must have
    follows from N and the others. When that last size is an attribute ``__init__`` computes, its expression
    becomes the common width expression of that value (the cause); else the last size of every view or reshape of
    the function ending in the same expression is inferred (-1)."""
    shape = INVALID_SHAPE.search(failure.text)
    line = failure.line
    if line is None or shape is None:
        return
    sizes, total = [int(v) for v in shape.group(1).split(",") if v.strip()], int(shape.group(2))
    call = next((node for node in ast.walk(ast.parse(failure.code)) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute) and node.lineno == line
                 and node.func.attr in ("view", "reshape") and len(node.args) > 1), None)
    if call is None or len(sizes) != len(call.args):
        return
    last = ast.unparse(call.args[-1])
    others = math.prod(sizes[:-1])
    if others and total % others == 0 and last.startswith("self."):
        yield from _recompute_attribute(failure, last.removeprefix("self."), total // others)
    function = _enclosing_function(failure.code, line)
    same = [node.args[-1] for node in ast.walk(function or ast.parse(failure.code)) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr in ("view", "reshape") and node.args
            and ast.unparse(node.args[-1]) == last]
    code = failure.code
    for node in sorted(same, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        code = _replace_node(code, node, "-1")
    yield Repair(code, f"the last size `{last}` of the views and reshapes of line {line}'s function is inferred (-1)")


def _recompute_attribute(failure: Failure, attribute: str, wanted: int) -> Iterator[Repair]:
    init = _method(failure.code, "__init__")
    if init is None or len(_arguments(init)) < 2 or not failure.d_model:
        return
    widths = _width_expressions(*_arguments(init)[:2], failure.d_model, failure.n_heads)
    for node in ast.walk(init):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and ast.unparse(node.targets[0]) ==
                f"self.{attribute}"):
            for expression in (e for e, value in widths.items() if value == wanted):
                yield Repair(_replace_node(failure.code, node.value, expression),
                             f"`self.{attribute}` must be {wanted} for the reshape at line {failure.line}: it is now "
                             f"`{expression}` (was `{ast.unparse(node.value)}`)")


def borrow_attributes(failure: Failure) -> Iterator[Repair]:
    """`self.<attr>` read but assigned nowhere, which a built-in baseline's `__init__` assigns (a draft that kept its
    parent's forward but dropped the parameters it reads): the baseline's assignments of every such attribute are
    added at the end of `__init__`."""
    attribute = MISSING_ATTRIBUTE.search(failure.text)
    init = _method(failure.code, "__init__")
    if attribute is None or init is None or not init.body:
        return
    read = set(re.findall(r"\bself\.(\w+)\b", failure.code))
    missing = read - _assigned_attributes(failure.code) - {f.name for f in _functions(failure.code)}
    for name, donor in baseline_sources().items():
        donor_init = _method(donor, "__init__")
        if donor_init is None:
            continue
        borrowed = [ast.get_source_segment(donor, node) or "" for node in donor_init.body
                    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in missing
                                                            for t in node.targets)]
        if not any(f"self.{attribute.group(1)}" in line for line in borrowed):
            continue
        indent = " " * init.body[0].col_offset
        lines = failure.code.splitlines(keepends=True)
        end = init.body[-1].end_lineno or init.body[-1].lineno
        added = "".join(indent + line + "\n" for line in borrowed)
        yield Repair("".join([*lines[:end], added, *lines[end:]]),
                     f"`__init__` never creates {', '.join(sorted(m for m in missing if f'self.{m}' in added))}: "
                     f"added as the {name} baseline creates them")
        return


def restore_parameter(failure: Failure) -> Iterator[Repair]:
    """A name the failing function reads but does not take, which the same function of a built-in baseline takes
    with a default (``self.chunk_size = chunk_size`` in an ``__init__`` rewritten without ``chunk_size: int = 64``):
    the baseline's parameter is put back, after the function's last named parameter."""
    missing = MISSING_NAME.search(failure.text)
    function = _enclosing_function(failure.code, failure.line)
    if missing is None or function is None or missing.group(1) in _arguments(function) or not function.args.args:
        return
    name = missing.group(1)
    for baseline, donor in baseline_sources().items():
        theirs = _method(donor, function.name)
        parameter = None if theirs is None else _defaulted_parameter(donor, theirs, name)
        if parameter is None:
            continue
        # Defaults belong to the last parameters: the last one's default, if any, ends the named parameters.
        end = function.args.defaults[-1] if function.args.defaults else function.args.args[-1]
        at = _offset(failure.code, end.end_lineno or end.lineno, end.end_col_offset or 0)
        yield Repair(failure.code[:at] + f", {parameter}" + failure.code[at:],
                     f"`{function.name}` reads `{name}`, a parameter of the {baseline} baseline's `{function.name}`"
                     f" that it dropped: put back as `{parameter}`")
        return


def closest_name(failure: Failure) -> Iterator[Repair]:
    """A name the code uses but never defines, with a defined one spelt nearly the same (a typo): renamed to it.
    `self.<attr>` is matched against the attributes the class assigns, a bare name against the file's names."""
    attribute = MISSING_ATTRIBUTE.search(failure.text)
    name = MISSING_NAME.search(failure.text)
    if attribute:
        wanted, known, prefix = attribute.group(1), _assigned_attributes(failure.code), "self."
    elif name:
        wanted, known, prefix = name.group(1), _bound_names(failure.code), ""
    else:
        return
    use = re.compile(rf"\bself\.{re.escape(wanted)}\b" if prefix else rf"(?<![\w.]){re.escape(wanted)}\b")
    for match in difflib.get_close_matches(wanted, sorted(known - {wanted}), n=2, cutoff=0.5):
        code = use.sub(prefix + match, failure.code)
        yield Repair(code, f"`{wanted}` is never defined: renamed to `{match}`, defined and spelt alike")


def drop_stray_statement(failure: Failure) -> Iterator[Repair]:
    """A statement that reads a name nothing assigned before it (``u = u - u.min(1)`` pasted into ``forward``),
    where nothing reads what it assigns: removed, since the function computed its result without it. When that
    line was the draft's whole change, the mixer is its parent again and the engineer's duplicate check says so."""
    found = UNBOUND_LOCAL.search(failure.text) or MISSING_NAME.search(failure.text)
    line = failure.line
    function = _enclosing_function(failure.code, line)
    if found is None or line is None or function is None:
        return
    name = next(group for group in found.groups() if group)
    statement = _simple_statement_at(function, line)
    if statement is None or len(statement.block) < 2 or _read_elsewhere(function, statement.node):
        return
    lines = failure.code.splitlines(keepends=True)
    start, end = statement.node.lineno, statement.node.end_lineno or statement.node.lineno
    why = (f"reads `{name}` before anything assigns it" if found.re is UNBOUND_LOCAL
           else f"uses `{name}`, never defined,")
    yield Repair("".join([*lines[:start - 1], *lines[end:]]),
                 f"line {line} {why} and nothing uses what it computes: removed")


def epsilon_in_division(failure: Failure) -> Iterator[Repair]:
    """The first NaN/Inf appeared in a division: its denominator gets an epsilon, inside a square root when the
    denominator is one (a root of zero has an infinite gradient)."""
    found = re.search(r" at line (\d+):", failure.nan_site)
    if failure.kind != "nan" or found is None or "aten.div" not in failure.nan_site:
        return
    line = int(found.group(1))
    text = failure.code.splitlines()[line - 1]
    inside = [(re.compile(r" / (\w[\w.]*)\.sqrt\(\)"), r" / (\1 + 1e-6).sqrt()"),
              (re.compile(r" / torch\.sqrt\(([^()]*)\)"), r" / torch.sqrt(\1 + 1e-6)")]
    for pattern, replacement in inside:
        if pattern.search(text):
            yield Repair(_on_line(failure.code, line, lambda t, p=pattern, r=replacement: p.sub(r, t)),
                         f"the square root divided by at line {line} gets an epsilon inside")
    denominator = re.compile(r" / (\w[\w.]*(\([^()]*\))?)")
    if denominator.search(text):
        yield Repair(_on_line(failure.code, line, lambda t: denominator.sub(r" / (\1 + 1e-6)", t)),
                     f"the division at line {line} gets an epsilon")


@dataclass(frozen=True)
class Suspect:
    """A kind of line that often causes a failure of ``kind`` the checks concluded (nothing raised, so no line is
    known): the reason, and the line rewritten where the fix is mechanical."""

    kind: str
    pattern: re.Pattern[str]
    reason: str
    fix: Callable[[str, int], str | None] | None = None  # (code, line) -> code


def _reduce_over_features(code: str, line: int) -> str | None:
    edited = _on_line(code, line, lambda text: re.sub(r"\bdim\s*=\s*0\b", "dim=-1", text))
    return edited if edited != code else None


def _drop_flips(code: str, line: int) -> str | None:
    edited = _on_line(code, line, lambda text: re.sub(r"\.flip\(\s*(1|-2|dims=\(?1,?\)?)\s*\)", "", text))
    return edited if edited != code else None


def _lower_triangle(code: str, line: int) -> str | None:
    return _on_line(code, line, lambda text: re.sub(r"\btriu\(", "tril(", text))


def _left_padding(code: str, line: int) -> str | None:
    """`Conv1d(..., kernel, padding=k // 2)` → `padding=kernel - 1` (the caller keeps the first T outputs)."""
    for node in ast.walk(ast.parse(code)):
        if (isinstance(node, ast.Call) and node.lineno == line and ast.unparse(node.func).endswith("Conv1d")):
            kernel = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "kernel_size"), None)
            padding = next((k.value for k in node.keywords if k.arg == "padding"), None)
            if kernel is not None and padding is not None:
                return _replace_node(code, padding, f"{ast.unparse(kernel)} - 1")
    return None


def _bounded_exponent(code: str, line: int) -> str | None:
    """`torch.exp(e)` / `e.exp()` on the line → the exponent clamped to [-30, 30], where float32 stays finite."""
    for node in ast.walk(ast.parse(code)):
        if not (isinstance(node, ast.Call) and node.lineno == line and isinstance(node.func, ast.Attribute)
                and node.func.attr == "exp"):
            continue
        target = node.args[0] if node.args else node.func.value
        return _replace_node(code, target, f"({ast.unparse(target)}).clamp(-30.0, 30.0)")
    return None


SUSPECTS: tuple[Suspect, ...] = (
    Suspect("batch", re.compile(r"\bdim\s*=\s*0\b|\.(mean|sum|norm|std|var|amax|softmax)\(\s*0\b"),
            "a reduction over dim 0 mixes the samples of a batch", _reduce_over_features),
    Suspect("batch", re.compile(r"BatchNorm"), "batch normalisation takes statistics over the batch"),
    Suspect("causality", re.compile(r"Conv1d\(.*padding\s*="),
            "a convolution padded on both sides sees later positions: pad kernel - 1 and keep the first T outputs",
            _left_padding),
    Suspect("causality", re.compile(r"\.flip\("), "a reversed sequence carries the future into the past",
            _drop_flips),
    Suspect("causality", re.compile(r"\btriu\("), "an upper-triangular mask keeps later positions, not earlier",
            _lower_triangle),
    Suspect("causality", re.compile(r"(mean|sum|softmax|amax|max|std|var)\((\s*1\b|.*dim\s*=\s*(1|-2)\b)"),
            "a reduction over the sequence (dim 1) sees every position"),
    Suspect("causality", re.compile(r"F\.pad\(|functional\.pad\("), "padding on the right of the sequence"),
    Suspect("nan", re.compile(r"\bexp\(|\.exp\(\)"),
            "an exponential of an unbounded value overflows: bound it in log space (-softplus, sigmoid)",
            _bounded_exponent),
    Suspect("nan", re.compile(r" / "), "a division by a value that can reach zero"),
    Suspect("nan", re.compile(r"\blog\(|\.log\(\)|sqrt"), "a log or a root of a value that can reach zero"),
    Suspect("efficiency", re.compile(r"^\s*for\b.*\brange\("), "a Python loop: vectorise it, or loop over chunks"),
    Suspect("timeout", re.compile(r"^\s*(for|while)\b"), "a Python loop: vectorise it, or loop over chunks"),
    Suspect("complexity", re.compile(r"transpose\(\s*-[12]\s*,\s*-[12]\s*\)|\.mT\b"),
            "scores between every pair of positions (T x T): keep them inside chunks"),
)
MAX_SUSPECTS = 4


def suspect_lines(code: str, kind: str) -> list[tuple[int, str]]:
    """The lines of ``code`` that a failure of ``kind`` most often comes from, each with the reason."""
    found: list[tuple[int, str]] = []
    for number, text in enumerate(code.splitlines(), start=1):
        reasons = [s.reason for s in SUSPECTS if s.kind == kind and s.pattern.search(text)]
        if reasons and not text.strip().startswith("#"):
            found.append((number, reasons[0]))
    return found[:MAX_SUSPECTS]


def suspect_fixes(failure: Failure) -> Iterator[Repair]:
    """The mechanical fix of each suspect line of the failure's kind, one line at a time."""
    for number, text in enumerate(failure.code.splitlines(), start=1):
        for suspect in SUSPECTS:
            if suspect.kind != failure.kind or suspect.fix is None or not suspect.pattern.search(text):
                continue
            code = suspect.fix(failure.code, number)
            if code is not None:
                yield Repair(code, f"line {number}: {suspect.reason}; fixed there")


REPAIRS: tuple[Callable[[Failure], Iterator[Repair]], ...] = (
    standard_repair, borrow_attributes, restore_parameter, closest_name, drop_stray_statement, view_to_reshape,
    device_and_dtype, linear_width, size_the_shape_names, epsilon_in_division, suspect_fixes,
)


# --- text surgery at parser positions --------------------------------------------------------------------------


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def _on_line(code: str, line: int, edit: Callable[[str], str]) -> str:
    lines = code.splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    return "".join(lines)


def _offset(code: str, line: int, column: int) -> int:
    return sum(len(text) for text in code.splitlines(keepends=True)[:line - 1]) + column


def _replace_node(code: str, node: ast.expr, text: str) -> str:
    start = _offset(code, node.lineno, node.col_offset)
    end = _offset(code, node.end_lineno or node.lineno, node.end_col_offset or node.col_offset)
    return code[:start] + text + code[end:]


def _functions(code: str) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.FunctionDef)]


def _enclosing_function(code: str, line: int | None) -> ast.FunctionDef | None:
    found = None if line is None else innermost_function(ast.parse(code), line)
    return found if isinstance(found, ast.FunctionDef) else None


def _method(code: str, name: str) -> ast.FunctionDef | None:
    return next((f for f in _functions(code) if f.name == name), None)


@dataclass(frozen=True)
class Located:
    """A statement and the block (list of statements) that holds it."""

    node: ast.stmt
    block: list[ast.stmt]


SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)


def _simple_statement_at(function: ast.FunctionDef, line: int) -> Located | None:
    """The assignment or expression statement of ``function`` whose lines hold ``line``, at any depth."""
    for node in ast.walk(function):
        for block in (getattr(node, field, None) for field in ("body", "orelse", "finalbody")):
            if not isinstance(block, list):
                continue
            for statement in block:
                end = statement.end_lineno or statement.lineno
                if isinstance(statement, SIMPLE_STATEMENTS) and statement.lineno <= line <= end:
                    return Located(statement, block)
    return None


def _read_elsewhere(function: ast.FunctionDef, statement: ast.stmt) -> bool:
    """Whether ``function`` reads, outside ``statement``, a name the statement assigns (``self.x`` and subscripts
    count as read: they outlive the call)."""
    targets = [statement.target] if isinstance(statement, ast.AugAssign | ast.AnnAssign) else \
        getattr(statement, "targets", [])
    if any(not isinstance(node, ast.Name | ast.Tuple | ast.Starred) for target in targets for node in
           ast.walk(target) if not isinstance(node, ast.expr_context)):
        return True
    assigned = {node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)}
    inside = {id(node) for node in ast.walk(statement)}
    return any(isinstance(node, ast.Name) and node.id in assigned and id(node) not in inside
               for node in ast.walk(function))


def _defaulted_parameter(code: str, function: ast.FunctionDef, name: str) -> str | None:
    """``name: annotation = default`` as ``function`` of ``code`` declares it, if it takes ``name`` with a default."""
    named = function.args.args
    defaults = dict(zip([a.arg for a in named[len(named) - len(function.args.defaults):]], function.args.defaults,
                        strict=True))
    defaults |= {a.arg: d for a, d in zip(function.args.kwonlyargs, function.args.kw_defaults, strict=True) if d}
    arg = next((a for a in [*named, *function.args.kwonlyargs] if a.arg == name), None)
    if arg is None or name not in defaults:
        return None
    annotation = f": {ast.get_source_segment(code, arg.annotation)}" if arg.annotation is not None else ""
    return f"{name}{annotation} = {ast.get_source_segment(code, defaults[name])}"


def _arguments(function: ast.FunctionDef) -> list[str]:
    return [a.arg for a in function.args.args if a.arg != "self"]


def _set_factory_keywords(code: str, function: ast.FunctionDef, wanted: list[tuple[str, str]]) -> str:
    """Each `torch.<factory>(…)` call inside the function gets the keywords, replacing a keyword of that name."""
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(function):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            continue
        kept = [k for k in node.keywords if k.arg not in dict(wanted)]
        parts = [ast.get_source_segment(code, a) or ast.unparse(a) for a in node.args]
        parts += [f"{k.arg}={ast.get_source_segment(code, k.value) or ast.unparse(k.value)}" if k.arg
                  else f"**{ast.unparse(k.value)}" for k in kept]
        parts += [f"{key}={value}" for key, value in wanted]
        start = _offset(code, node.lineno, node.col_offset)
        end = _offset(code, node.end_lineno or node.lineno, node.end_col_offset or node.col_offset)
        edits.append((start, end, f"torch.{node.func.attr}({', '.join(parts)})"))
    for start, end, text in sorted(edits, reverse=True):
        outer = [e for e in edits if e[0] < start and end < e[1]]
        if not outer:  # a factory nested in another's arguments is rewritten with its outer call's text
            code = code[:start] + text + code[end:]
    return code


def _assigned_attributes(code: str) -> set[str]:
    """`self.<name> = …` targets and `register_buffer`/`register_parameter` names."""
    found = set(re.findall(r"\bself\.(\w+)\s*(?::[^=]*)?=(?!=)", code))
    return found | set(re.findall(r"register_(?:buffer|parameter)\(\s*['\"](\w+)['\"]", code))


def _bound_names(code: str) -> set[str]:
    from shared.mixer.source import bound_names

    return bound_names(ast.parse(code))


def _linear_calls(init: ast.FunctionDef, attribute: str) -> Iterator[ast.Call]:
    """The `nn.Linear(...)` calls assigned to `self.<attribute>` in `__init__`."""
    for node in ast.walk(init):
        if not isinstance(node, ast.Assign):
            continue
        targets = [t for t in node.targets if isinstance(t, ast.Attribute) and t.attr == attribute]
        call = node.value
        if (targets and isinstance(call, ast.Call) and call.args
                and ast.unparse(call.func).split(".")[-1] == "Linear"):
            yield call


def _width_expressions(d_model: str, n_heads: str, d: int, h: int) -> dict[str, int]:
    """Expressions a layer width is commonly written as, with their values at this width and head count."""
    found = {d_model: d, f"2 * {d_model}": 2 * d, f"3 * {d_model}": 3 * d, f"4 * {d_model}": 4 * d,
             f"{d_model} // 2": d // 2, n_heads: h}
    if h:
        found[f"{d_model} // {n_heads}"] = d // h
    return found

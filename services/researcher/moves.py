"""Design moves: one concrete, well-understood change the researcher asks the LLM to make to a parent.

Asked to "improve the parent", a small local coder (measured with Qwen2.5-Coder 0.5B and 1.5B) hands the parent
back renamed: it has no idea of its own to write. Asked for a whole file with one change, it mostly retypes the
parent and forgets the change. What it does manage is one short function with one instruction. So a move is a
few steps, each naming the function to rewrite (``__init__``, ``forward``, or a pattern found in the function to
edit) and what to do in it, in terms of the ``Mixer`` contract only (``forward(self, x)``). It applies to any
parent its ``requires`` pattern matches; a parent its ``present`` pattern matches already has it.

Each move comes from the cognition base (the entries it cites). The LLM still writes the code, names the mixer
and argues the motivation; the move fixes what to try.
"""

from __future__ import annotations

import ast
import difflib
import random
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TODO = "# TODO: the change goes here"


@dataclass(frozen=True)
class Step:
    site: str  # "__init__", "forward", or a regex matching the source of the function to rewrite
    instruction: str
    # Where in the function the change goes, marked with a TODO comment in the function the LLM is shown (a small
    # model fills a marked slot, where it cannot place a line from a description): "start" (after the signature
    # and docstring), "end", "return" (the last return line), "after:<regex>" (a new line after the last line the
    # regex matches), or a regex naming the line to change.
    anchor: str = "end"

    def marked(self, source: str) -> str:
        """``source`` (one function, dedented) with the TODO comment where the change goes."""
        lines = source.rstrip("\n").splitlines()
        try:
            function = ast.parse(textwrap.dedent(source)).body[0]
        except SyntaxError:
            return source
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            return source
        indent = " " * function.body[0].col_offset
        body = range(function.body[0].lineno - 1, len(lines))
        if self.anchor == "end":
            return "\n".join([*lines, indent + TODO]) + "\n"
        if self.anchor == "start":
            at = _after_signature(function)
            return "\n".join([*lines[:at], indent + TODO, *lines[at:]]) + "\n"
        after = self.anchor.startswith("after:")
        pattern = {"return": r"^\s*return\b"}.get(self.anchor, self.anchor.removeprefix("after:"))
        hits = [i for i in body if re.search(pattern, lines[i])]
        if not hits:
            return source
        if after:
            at = hits[-1]
            indent = " " * (len(lines[at]) - len(lines[at].lstrip()))
            return "\n".join([*lines[:at + 1], indent + TODO, *lines[at + 1:]]) + "\n"
        at = hits[-1] if self.anchor == "return" else hits[0]
        lines[at] += "  " + TODO
        return "\n".join(lines) + "\n"


def without_todo(source: str) -> str:
    """A written function without the TODO mark, which a small model often leaves in beside its change."""
    kept = [line.replace("  " + TODO, "").replace(TODO, "").rstrip() if TODO in line else line
            for line in source.splitlines() if line.strip() != TODO]
    return "\n".join(kept) + "\n"


def restore_cut_tail(original: str, written: str) -> str:
    """``written`` with the lines that end ``original`` added back when the reply simply stopped before them.

    A small model asked for the whole function often writes it up to its change and stops: the lines after the
    change (the rest of the projections, the ``return``) are missing, which fails with a NameError at best. When
    the only difference at the end is that those lines are missing, they are put back.
    """
    old, new = original.rstrip("\n").splitlines(), written.rstrip("\n").splitlines()
    matcher = difflib.SequenceMatcher(None, [line.strip() for line in old], [line.strip() for line in new],
                                      autojunk=False)
    tag, i1, i2, j1, j2 = matcher.get_opcodes()[-1]
    tail, written_tail = old[i1:i2], new[j1:j2]
    cut = tag == "delete" or (tag == "replace" and _returns(tail) and not _returns(written_tail))
    if not cut or i2 != len(old) or j2 != len(new) or not any(line.strip() for line in tail):
        return written
    return "\n".join([*new, *tail]) + "\n"


def _returns(lines: list[str]) -> bool:
    return any(line.strip().startswith("return") for line in lines)


def _after_signature(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Index of the line after the signature (which may span lines) and the docstring, if any."""
    first = function.body[0]
    if ast.get_docstring(function) is not None and first.end_lineno is not None:
        return first.end_lineno  # the docstring's last line, 1-based: the index of the line after it
    return first.lineno - 1


@dataclass(frozen=True)
class Move:
    id: str
    title: str
    why: str
    steps: tuple[Step, ...]
    cognition: tuple[str, ...]  # ids of the cognition entries behind it
    present: str  # a regex that matches a parent that already has it
    requires: str = ""  # a regex the parent must match for the steps to make sense

    def applies_to(self, code: str) -> bool:
        if re.search(self.present, code):
            return False
        return not self.requires or re.search(self.requires, code) is not None

    @property
    def instruction(self) -> str:
        return " ".join([self.why, *(step.instruction for step in self.steps)])


# Queries and keys held in variables named q and k (``q = ...`` or ``q, k, v = ...``).
QK = r"\bq\b[^=\n]*=[^=]"
AFTER_QK = r"after:^\s*[\w, ]*\b[qk]\b[\w, ]*=[^=]"
BETA_SIGMOID = r"beta\s*=[^\n]*sigmoid"


def init_line(line: str) -> Step:
    return Step("__init__", f"In `__init__`, replace the TODO comment by this line: `{line}`.")


def after_qk(lines: str) -> Step:
    """New lines right after the queries and keys are computed, in whichever function computes them."""
    return Step(QK, f"Replace the TODO comment by {lines}, right after `q` and `k` are computed.", anchor=AFTER_QK)


def on_return(change: str) -> Step:
    """A change to what ``forward`` returns; saying to keep the whole expression stops a small model from
    replacing it (seen: ``return self.out_norm(o)`` in place of ``return self._output(o)``)."""
    return Step("forward", f"On the marked line, keep the whole expression it returns and {change}.", anchor="return")


MOVES: tuple[Move, ...] = (
    Move(
        "short-conv", "a short causal convolution before mixing",
        "Each token also sees the three before it, through a depthwise causal convolution.",
        (init_line("self.short_conv = nn.Conv1d(d_model, d_model, kernel_size=4, padding=3, groups=d_model)"),
         Step("forward", "In `forward`, replace the TODO comment by this line: "
                         "`x = self.short_conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)` "
                         "(keeping the first seq outputs keeps it causal).", anchor="start")),
        ("starter:short-conv", "starter:h3"), present=r"Conv1d|short_conv"),
    Move(
        "token-shift", "token shift: blend each token with the previous one",
        "Every token is mixed with the one before it, as in RWKV.",
        (init_line("self.shift_mix = nn.Parameter(torch.full((d_model,), 0.5))"),
         Step("forward", "In `forward`, replace the TODO comment by these two lines: "
                         "`previous = F.pad(x, (0, 0, 1, 0))[:, :-1]` and `x = x + self.shift_mix * (previous - x)`.",
              anchor="start")),
        ("starter:rwkv4",), present=r"shift_mix|token_shift|previous"),
    Move(
        "output-gate", "a sigmoid output gate",
        "Each channel learns when to let the mixed result through.",
        (init_line("self.out_gate = nn.Linear(d_model, d_model)"),
         on_return("multiply it by `torch.sigmoid(self.out_gate(x))`, where `x` is forward's input")),
        ("starter:rfa-gated", "starter:gla"), present=r"out_gate|\bg_proj\b|gate_proj"),
    Move(
        "value-gate", "a SiLU gate on the values",
        "The values written into the state are gated by the token (a GLU on the values, as in H3 and Hyena).",
        (init_line("self.v_gate = nn.Linear(d_model, d_model, bias=False)"),
         Step(r"self\.v_proj\(x\)", "On the marked line, replace `self.v_proj(x)` by "
                                   "`self.v_proj(x) * F.silu(self.v_gate(x))`.", anchor=r"self\.v_proj\(x\)")),
        ("starter:h3", "starter:hyena"), present=r"v_gate", requires=r"self\.v_proj\(x\)"),
    Move(
        "skip-path", "a learned direct path for the current token",
        "A per-channel shortcut for the current token, like Mamba's D term.",
        (init_line("self.skip = nn.Parameter(torch.zeros(d_model))"),
         on_return("add `self.skip * x` to it, where `x` is forward's input")),
        ("starter:mamba-selective",), present=r"self\.skip\b|self\.D\b"),
    Move(
        "output-norm", "normalise the read-out",
        "The read-out keeps a stable scale whatever the state holds.",
        (init_line("self.out_norm = nn.LayerNorm(d_model)"),
         on_return("wrap it: `return self.out_norm(...)`, with that whole expression inside")),
        ("starter:output-norm", "starter:transnormer"), present=r"out_norm|head_norm|RMSNorm|LayerNorm|GroupNorm"),
    Move(
        "qk-l2-norm", "L2-normalised queries and keys",
        "Unit-length queries and keys bound every update of the state.",
        (after_qk("`q = F.normalize(q, dim=-1)` and `k = F.normalize(k, dim=-1)`"),),
        ("starter:qk-l2-norm", "starter:deltanet"), present=r"normalize\(", requires=QK),
    Move(
        "silu-qk", "SiLU on queries and keys",
        "The model can switch features off before they reach the state, as Gated DeltaNet and Mamba-2 do.",
        (after_qk("`q = F.silu(q)` and `k = F.silu(k)`"),),
        ("starter:gated-deltanet", "starter:qk-l2-norm"), present=r"silu\([^)]*\b(q|k|q_proj|k_proj)\b",
        requires=QK),
    Move(
        "softmax-features", "a softmax feature map over the head dimension",
        "Still positive, but sharper than elu + 1, which makes attention less diffuse.",
        (Step(r"elu\(", "On the marked line, replace the feature map `F.elu(...) + 1` of the queries and keys by "
                        "a softmax over the last dimension: `q.softmax(dim=-1)` and `k.softmax(dim=-1)`.",
              anchor=r"elu\("),),
        ("starter:hedgehog", "starter:performer-favor"), present=r"softmax\(dim=-1\)", requires=r"elu\("),
    Move(
        "negative-eigenvalues", "beta in (0, 2): negative eigenvalues for the delta rule",
        "The state transition can have negative eigenvalues, which helps state tracking (DeltaProduct, RWKV-7).",
        (Step(BETA_SIGMOID, "On the marked line, multiply the sigmoid that gives `beta` by 2, so beta lies in "
                            "(0, 2): `beta = 2 * torch.sigmoid(...)`.", anchor=BETA_SIGMOID),),
        ("starter:deltaproduct", "starter:rwkv7"), present=r"2(\.0)?\s*\*\s*torch\.sigmoid|sigmoid\([^)]*\)\s*\*\s*2",
        requires=BETA_SIGMOID),
)


def applicable(code: str, moves: Iterable[Move] = MOVES) -> list[Move]:
    return [move for move in moves if move.applies_to(code)]


def choose_move(code: str, cognition_ids: Sequence[str], seed: int, moves: Iterable[Move] = MOVES) -> Move | None:
    """A move the parent does not have yet, drawn with the seed; moves behind the retrieved cognition count
    three times, so the analysis of the parent steers the choice. None when every move is already there."""
    candidates = applicable(code, moves)
    if not candidates:
        return None
    retrieved = set(cognition_ids)
    weights = [3 if retrieved.intersection(move.cognition) else 1 for move in candidates]
    return random.Random(seed).choices(candidates, weights=weights, k=1)[0]

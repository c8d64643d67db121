"""Design moves: one concrete, well-understood change the researcher asks the LLM to make to a parent.

Asked to "improve the parent", a small local coder (measured with Qwen2.5-Coder 0.5B and 1.5B) hands the parent
back renamed: it has no idea of its own to write. Asked for a whole file with one change, it mostly retypes the
parent and forgets the change. What it does manage is one short function with one instruction. So a move is a
few steps, each naming the function to rewrite (``__init__``, ``forward``, or a pattern found in the function to
edit) and what to do in it, in terms of the ``Mixer`` contract only (``forward(self, x)``). The step shows the
function with its slot marked and asks for the slot's lines only: on recorded step prompts the 0.5B model then
wrote a third of the tokens and changed the code a little more often than when asked for the whole function. It
applies to any parent its ``requires`` pattern matches; a parent its ``present`` pattern matches already has it.

Each move comes from the cognition base (the entries it cites). The LLM still writes the code, names the mixer
and argues the motivation; the move fixes what to try. The moves are data: the built-in ones are entries of the
library file ``moves.json`` beside this module.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import math
import random
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.events import FREE_MOVE
from shared.memory_client import LearnedMove, MoveRecord
from shared.mixer.edit import function_matching
from shared.mixer.source import parses

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
    # For a "return" slot, how a reply that writes only the new part joins the returned expression: "add" or
    # "multiply" (see ``completed_return``); empty where the instruction says no such thing.
    combine: str = ""

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


def slot_of(marked: str) -> str | None:
    """How a marked function's slot is filled: "line" when the TODO ends a line of code (that line is rewritten),
    "lines" when it stands alone (new lines go there); None when nothing is marked."""
    line = next((line for line in marked.splitlines() if TODO in line), None)
    if line is None:
        return None
    return "lines" if line.strip() == TODO else "line"


def fill_slot(marked: str, written: str) -> str | None:
    """The marked function with ``written`` (a reply's code, the slot's lines only) in its slot, in place of the
    marked line; None when there is no slot, nothing written, or the result does not parse. A slot at the end of a
    function that ends in a ``return`` is filled before that return, where the new lines can still matter."""
    lines = marked.rstrip("\n").splitlines()
    at = next((i for i, line in enumerate(lines) if TODO in line), None)
    new = textwrap.dedent(without_todo(written)).strip("\n").splitlines()
    if at is None or not any(line.strip() for line in new):
        return None
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines.pop(at)
    if at == len(lines) and at > 0 and re.match(rf"{indent}return\b", lines[at - 1]):
        at -= 1  # after the last return nothing runs
    filled = "\n".join([*lines[:at], *(indent + line if line.strip() else "" for line in new), *lines[at:]]) + "\n"
    return filled if parses(textwrap.dedent(filled)) else None


COMBINE = {"add": ast.Add, "multiply": ast.Mult}


def completed_return(marked: str, written: str, combine: str = "") -> str | None:
    """The statement a reply to a marked ``return`` line means. Asked for the whole line, a small model often
    writes only the quoted part: ``self.skip * x`` for "add `self.skip * x` to it", which in place of the return
    made ``forward`` return None. A bare expression is joined to the returned one by the step's ``combine``; an
    ``...`` it writes (``self.out_norm(...)``, quoting "with that whole expression inside") takes the returned
    expression. None when a bare expression cannot be placed (the step says no combine); any other reply, and any
    other slot, unchanged."""
    line = next((line for line in marked.splitlines() if TODO in line), "")
    returned = _single(line.replace(TODO, ""))
    reply = _single(written)
    if not isinstance(returned, ast.Return) or returned.value is None or reply is None:
        return written
    value = reply.value if isinstance(reply, ast.Return | ast.Expr) else None
    if value is None:
        return written
    if any(isinstance(node, ast.Constant) and node.value is Ellipsis for node in ast.walk(value)):
        return ast.unparse(ast.Return(_FillEllipsis(returned.value).visit(value))) + "\n"
    if isinstance(reply, ast.Return):
        return written
    if combine not in COMBINE:
        return None
    return ast.unparse(ast.Return(ast.BinOp(returned.value, COMBINE[combine](), value))) + "\n"


def _single(code: str) -> ast.stmt | None:
    try:
        body = ast.parse(textwrap.dedent(code).strip()).body
    except SyntaxError:
        return None
    return body[0] if len(body) == 1 else None


class _FillEllipsis(ast.NodeTransformer):
    def __init__(self, expression: ast.expr) -> None:
        self.expression = expression

    def visit_Constant(self, node: ast.Constant) -> ast.expr:
        return self.expression if node.value is Ellipsis else node


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
    why: str  # the rationale: what the change buys, in a sentence
    steps: tuple[Step, ...]
    cognition: tuple[str, ...]  # ids of the cognition entries behind it
    present: str  # a regex that matches a parent that already has it
    requires: str = ""  # a regex the parent must match for the steps to make sense
    # Where it came from: "built-in", or the cognition entry or analysis it was learned from.
    provenance: str = "built-in"

    def applies_to(self, code: str) -> bool:
        if re.search(self.present, code):
            return False
        if self.requires and re.search(self.requires, code) is None:
            return False
        # A learned move names the functions of the parent it was learned on: another parent may not have them.
        return all(function_matching(code, step.site) is not None for step in self.steps)

    @property
    def instruction(self) -> str:
        return " ".join([self.why, *(step.instruction for step in self.steps)])

    @property
    def functions(self) -> tuple[str, ...]:
        """The sites its steps rewrite (a function name, or the pattern that finds the function)."""
        return tuple(dict.fromkeys(step.site for step in self.steps))

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Move:
        """A move from its library entry (see ``LIBRARY``); a malformed entry raises ``MoveError``."""
        try:
            steps = tuple(Step(s["site"], s["instruction"], s.get("anchor", "end"), s.get("combine", ""))
                          for s in entry["steps"])
            move = cls(id=entry["id"], title=entry["title"], why=entry["rationale"], steps=steps,
                       cognition=tuple(entry.get("cognition", ())), present=entry["present"],
                       requires=entry.get("requires", ""), provenance=entry.get("provenance", "built-in"))
        except (KeyError, TypeError) as exc:
            raise MoveError(f"move entry {entry.get('id', '?') if isinstance(entry, dict) else entry!r}: "
                            f"missing or malformed {exc}") from exc
        for pattern in (move.present, move.requires, *(step.site for step in steps)):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise MoveError(f"move {move.id}: bad pattern {pattern!r}: {exc}") from exc
        if not steps:
            raise MoveError(f"move {move.id}: no step")
        if bad := [step.combine for step in steps if step.combine and step.combine not in COMBINE]:
            raise MoveError(f"move {move.id}: unknown combine {bad[0]!r} (known: {', '.join(COMBINE)})")
        return move


class MoveError(ValueError):
    """A move library entry that cannot be a move."""


# The built-in moves, as data: each a title, a rationale, the cognition entries behind it, the patterns saying whether
# a parent has it or can take it, and per step the function to rewrite, where the change goes and what to write.
LIBRARY = Path(__file__).resolve().parent / "moves.json"


def load_library(path: Path = LIBRARY) -> tuple[Move, ...]:
    try:
        entries = json.loads(path.read_text())["moves"]
    except (OSError, ValueError, KeyError) as exc:
        raise MoveError(f"cannot read the move library {path}: {exc}") from exc
    moves = tuple(Move.from_entry(entry) for entry in entries)
    ids = [move.id for move in moves]
    if len(set(ids)) != len(ids):
        raise MoveError(f"the move library {path} repeats an id: {sorted(i for i in ids if ids.count(i) > 1)}")
    return moves


MOVES: tuple[Move, ...] = load_library()


# A learned move has no pattern saying a parent has it: the parent's line of moves says (memory's moves_in_line).
NEVER_PRESENT = r"(?!)"
LEARNED_PREFIX = "learned-"
# Reward of a settled draw, for the bandit: trained and better than the parent beyond noise is what is sought; a
# trained mixer that is not better still shows the move yields runnable code; rejected or given up earns nothing.
BEAT_PARENT_REWARD, TRAINED_REWARD = 1.0, 0.25
# The value assumed for a move drawn but not settled yet (its draws are still counted as visits).
UNSETTLED_VALUE = TRAINED_REWARD
# UCB's exploration constant: rewards lie in [0, 1], so a half keeps a move with a good record ahead of one
# drawn a few times more rarely, without starving the rest.
DEFAULT_EXPLORATION = 0.5


# The LLM's own change as one arm of the bandit beside the moves: drawn by its record for the campaign's model, so a
# model that invents gets the free mode as often as it pays, and one that copies its parent rarely.
FREE_CHOICE = Move(id=FREE_MOVE, title="the LLM's own change", why="", steps=(), cognition=(), present=NEVER_PRESENT)


def from_learned(entry: LearnedMove) -> Move:
    """A move of the library as ``move.learned`` added it (memory's record of it)."""
    steps = tuple(Step(step.site, step.instruction, step.anchor) for step in entry.steps)
    return Move(id=entry.id, title=entry.title, why=entry.rationale, steps=steps, cognition=tuple(entry.cognition_ids),
                present=NEVER_PRESENT, requires=entry.requires, provenance=entry.provenance)


def site_of(function: str, is_method: bool) -> str:
    """The step site that finds ``function`` again: a Mixer method by its name, a module function by its def line
    (its bare name would also match the functions that call it)."""
    return function if is_method else rf"def {re.escape(function)}\("


def learned_move_id(title: str, steps: Sequence[Step]) -> str:
    """The same move written twice gets one id."""
    text = json.dumps([title.strip().lower(), [(s.site, s.anchor, s.instruction.strip()) for s in steps]])
    return LEARNED_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


def applicable(code: str, moves: Iterable[Move] = MOVES, made: Iterable[str] = ()) -> list[Move]:
    """The moves that apply to a parent with ``code`` whose line has not made them yet (``made``: move ids)."""
    done = set(made)
    return [move for move in moves if move.id not in done and move.applies_to(code)]


def mean_reward(record: MoveRecord) -> float:
    """A move's mean reward over its settled draws (``UNSETTLED_VALUE`` before any settled)."""
    if not record.settled:
        return UNSETTLED_VALUE
    rewards = BEAT_PARENT_REWARD * record.beat_parent + TRAINED_REWARD * (record.trained - record.beat_parent)
    return rewards / record.settled


def ucb_move(candidates: Sequence[Move], records: Mapping[str, MoveRecord], seed: int,
             cognition_ids: Sequence[str] = (), exploration: float = DEFAULT_EXPLORATION) -> Move | None:
    """UCB1 over the candidates: mean reward plus ``exploration·sqrt(ln N / n)``, n a move's draws. A move never
    drawn goes first; among those, one behind the retrieved cognition is three times as likely."""
    if not candidates:
        return None
    fresh = [move for move in candidates if move.id not in records or not records[move.id].drawn]
    if fresh:
        return cognition_weighted(fresh, cognition_ids, seed)
    plays = sum(records[move.id].drawn for move in candidates)
    scores = [mean_reward(records[move.id]) + exploration * math.sqrt(math.log(plays) / records[move.id].drawn)
              for move in candidates]
    best = max(scores)
    return random.Random(seed).choice([move for move, score in zip(candidates, scores, strict=True)
                                       if score >= best - 1e-12])


def choose_move(code: str, cognition_ids: Sequence[str], seed: int, moves: Iterable[Move] = MOVES) -> Move | None:
    """A move the parent does not have yet, drawn with the seed (see ``cognition_weighted``). None when every move
    is already there."""
    return cognition_weighted(applicable(code, moves), cognition_ids, seed)


def cognition_weighted(candidates: Sequence[Move], cognition_ids: Sequence[str], seed: int) -> Move | None:
    """One of ``candidates`` drawn with the seed; moves behind the retrieved cognition count three times, so the
    analysis of the parent steers the choice."""
    if not candidates:
        return None
    retrieved = set(cognition_ids)
    weights = [3 if retrieved.intersection(move.cognition) else 1 for move in candidates]
    return random.Random(seed).choices(candidates, weights=weights, k=1)[0]

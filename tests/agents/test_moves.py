"""Design moves: each is an instruction that, followed to the letter, gives a valid and different mixer."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from services.memory.cognition.ingest import STARTER_FILE
from services.researcher.moves import (
    MOVES,
    TODO,
    MoveError,
    Step,
    applicable,
    choose_move,
    completed_return,
    fill_slot,
    load_library,
    restore_cut_tail,
    slot_of,
    without_todo,
)
from shared.mixer.baselines import BASELINES
from shared.mixer.checks import run_checks
from shared.mixer.edit import function_matching, function_source
from shared.mixer.probe import probe_draft
from shared.mixer.profiles import PROFILES
from shared.mixer.source import parses

LINEAR = BASELINES["linear_attention"].read_text()
MOVE = {move.id: move for move in MOVES}


def quoted_assignments(instruction: str) -> list[str]:
    return [code for code in re.findall(r"`([^`]+)`", instruction) if " = " in code]


def test_every_move_cites_cognition_that_exists_and_applies_to_some_baseline() -> None:
    starter = {f"starter:{json.loads(line)['id']}" for line in STARTER_FILE.read_text().splitlines() if line}
    sources = [path.read_text() for path in BASELINES.values()]
    for move in MOVES:
        assert set(move.cognition) <= starter, move.id
        assert any(move.applies_to(code) for code in sources), move.id


def test_a_move_the_parent_already_has_is_not_offered() -> None:
    mamba2 = BASELINES["mamba2"].read_text()  # already has a short convolution and a norm
    offered = {move.id for move in applicable(mamba2)}
    assert "short-conv" not in offered and "output-norm" not in offered
    assert "negative-eigenvalues" in {move.id for move in applicable(BASELINES["deltanet"].read_text())}
    assert "negative-eigenvalues" not in {move.id for move in applicable(LINEAR)}  # no beta to widen


def test_the_choice_is_seeded_and_leans_towards_the_retrieved_cognition() -> None:
    assert choose_move(LINEAR, [], seed=5) == choose_move(LINEAR, [], seed=5)
    steered = Counter(choose_move(LINEAR, ["starter:short-conv"], seed=s).id for s in range(400))  # type: ignore[union-attr]
    plain = Counter(choose_move(LINEAR, [], seed=s).id for s in range(400))  # type: ignore[union-attr]
    assert steered["short-conv"] > 1.8 * plain["short-conv"]
    assert choose_move(LINEAR, [], seed=1, moves=()) is None


def follow(move_id: str) -> str:
    """Linear attention with a move's quoted lines written in where its instruction says."""
    lines = quoted_assignments(MOVE[move_id].instruction)
    code = LINEAR.replace("        super().__init__()\n", f"        super().__init__()\n        {lines[0]}\n", 1)
    head = "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    assert head in code
    if move_id in ("short-conv", "token-shift"):
        body = "".join(f"        {line}\n" for line in lines[1:])
        return code.replace(head, head + body, 1)
    wrap = {"output-gate": "torch.sigmoid(self.out_gate(x)) * ", "skip-path": "self.skip * x + "}[move_id]
    start = code.index(head)
    ret = code.index("        return ", start)
    return code[:ret] + "        return " + wrap + "(" + code[ret + 15:].split("\n", 1)[0] + ")\n" + \
        code[ret:].split("\n", 1)[1]


@pytest.mark.parametrize("move_id", ["short-conv", "token-shift", "output-gate", "skip-path"])
def test_a_generic_move_followed_to_the_letter_passes_the_checks_and_changes_the_outputs(
        move_id: str, tmp_path: Path) -> None:
    source = tmp_path / "mixer.py"
    source.write_text(follow(move_id))
    report = run_checks(source, PROFILES["smoke"])
    assert report.kind is None, report.message
    assert probe_draft(source.read_text(), {"the parent": LINEAR}, "smoke").same_as is None


def test_every_step_finds_its_function_and_marks_one_place_in_it() -> None:
    for name, path in BASELINES.items():
        code = path.read_text()
        for move in applicable(code):
            for step in move.steps:
                target = function_matching(code, step.site)
                assert target is not None, (name, move.id, step.site)
                marked = step.marked(function_source(code, *target))
                assert marked.count(TODO) == 1 and parses(marked), (name, move.id, marked)


def test_the_mark_goes_after_the_docstring_of_a_multi_line_signature() -> None:
    source = 'def forward(self, x: int,\n            y: int) -> int:\n    """Doc\n    more."""\n    return x\n'
    assert Step("forward", "", anchor="start").marked(source).splitlines()[4] == "    " + TODO
    assert Step("forward", "", anchor="return").marked(source).splitlines()[4] == "    return x  " + TODO
    assert Step("forward", "", anchor="after:doc").marked(source) == source  # nothing matches: unmarked


def test_a_mark_left_in_a_reply_is_taken_out() -> None:
    written = f"def forward(self, x):\n    x = x + 1\n    {TODO}\n    return x  {TODO}\n"
    assert without_todo(written) == "def forward(self, x):\n    x = x + 1\n    return x\n"


PROJECT = """def _project(self, x):
    q = self._heads(self.q_proj(x))
    k = self._heads(self.k_proj(x))
    v = self._heads(self.v_proj(x))
    return q, k, v
"""


def test_a_function_cut_short_after_its_change_gets_its_last_lines_back() -> None:
    cut = "def _project(self, x):\n    q = self._heads(self.q_proj(x))\n    k = self._heads(self.k_proj(x))\n" \
          "    q = F.normalize(q, dim=-1)\n"
    restored = restore_cut_tail(PROJECT, cut)
    assert restored.endswith("    q = F.normalize(q, dim=-1)\n    v = self._heads(self.v_proj(x))\n"
                             "    return q, k, v\n")
    whole = PROJECT.replace("    return q, k, v", "    q = F.normalize(q, dim=-1)\n    return q, k, v")
    assert restore_cut_tail(PROJECT, whole) == whole  # nothing missing: unchanged
    changed_end = PROJECT.replace("    return q, k, v", "    return q, k, v * 2")
    assert restore_cut_tail(PROJECT, changed_end) == changed_end  # a changed last line is a change, not a cut


def test_the_library_is_data_and_a_malformed_entry_is_refused(tmp_path: Path) -> None:
    entry = {"id": "x", "title": "t", "rationale": "r", "present": "x_gate",
             "steps": [{"site": "forward", "instruction": "do it", "anchor": "return"}]}
    path = tmp_path / "moves.json"
    path.write_text(json.dumps({"moves": [entry]}))
    (move,) = load_library(path)
    assert move.steps[0].anchor == "return" and move.provenance == "built-in" and move.functions == ("forward",)
    divide = {**entry, "steps": [{**entry["steps"][0], "combine": "divide"}]}
    for broken in ({**entry, "steps": []}, {**entry, "present": "("}, {k: v for k, v in entry.items() if k != "title"},
                   divide):
        path.write_text(json.dumps({"moves": [broken]}))
        with pytest.raises(MoveError):
            load_library(path)
    path.write_text(json.dumps({"moves": [entry, entry]}))
    with pytest.raises(MoveError, match="repeats an id"):
        load_library(path)


@pytest.mark.parametrize("move_id", ["qk-l2-norm", "silu-qk"])
def test_a_move_on_q_and_k_rewrites_a_function_that_assigns_both(move_id: str) -> None:
    # retnet's _project returns its k inline: asked to add `k = F.normalize(k)` there, the model wrote a line that
    # reads a k that does not exist (UnboundLocalError), three times over.
    move = next(move for move in MOVES if move.id == move_id)
    for name, path in BASELINES.items():
        code = path.read_text()
        target = function_matching(code, move.steps[0].site)
        if not move.applies_to(code) or target is None:
            continue
        function = ast.parse(function_source(code, *target)).body[0]
        assigned = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assert {"q", "k"} <= assigned, (name, target)
    assert function_matching(BASELINES["retnet"].read_text(), move.steps[0].site) == ("forward", True)


def test_a_return_slot_answered_with_only_the_new_part_is_completed() -> None:
    source = "def forward(self, x):\n    y = self.proj(x)\n    return self.out(y)\n"
    marked = Step("forward", "add it", "return").marked(source)
    # Quoting "add `self.skip * x` to it" instead of writing the line: joined by the step's combine.
    assert completed_return(marked, "self.skip * x", "add") == "return self.out(y) + self.skip * x\n"
    assert completed_return(marked, "torch.sigmoid(self.gate(x))", "multiply") == (
        "return self.out(y) * torch.sigmoid(self.gate(x))\n")
    assert completed_return(marked, "a + b", "multiply") == "return self.out(y) * (a + b)\n"  # precedence kept
    # "wrap it: `return self.out_norm(...)`": the ... takes the returned expression, with or without the return.
    for reply in ("return self.out_norm(...)", "self.out_norm(...)"):
        assert completed_return(marked, reply) == "return self.out_norm(self.out(y))\n"
    assert completed_return(marked, "self.skip * x") is None  # no combine said: not guessed, the step is re-asked
    whole = "return self.out(y) + self.skip * x"
    assert completed_return(marked, whole, "add") == whole  # the whole line, as asked: taken as written
    assert completed_return(marked, "y = y * 2\nreturn y", "add") == "y = y * 2\nreturn y"  # several lines
    start = Step("forward", "add", "start").marked(source)
    assert completed_return(start, "self.skip * x", "add") == "self.skip * x"  # not a return slot
    filled = fill_slot(marked, completed_return(marked, "self.skip * x", "add") or "")
    assert filled == source.replace("return self.out(y)", "return self.out(y) + self.skip * x")


def test_a_slot_reply_fills_the_marked_place_and_nothing_else() -> None:
    source = "def forward(self, x):\n    y = self.proj(x)\n    return self.out(y)\n"
    line = Step("forward", "gate it", "return").marked(source)
    assert slot_of(line) == "line"
    gated = fill_slot(line, "return self.out(y) * torch.sigmoid(self.gate(x))  " + TODO)
    assert gated == source.replace("return self.out(y)", "return self.out(y) * torch.sigmoid(self.gate(x))")
    lines = Step("forward", "add", "start").marked(source)
    assert slot_of(lines) == "lines"
    added = fill_slot(lines, "if x.dim() == 3:\n    x = x * 2")  # relative indentation kept
    assert added is not None and "    if x.dim() == 3:\n        x = x * 2\n    y = self.proj(x)" in added
    assert fill_slot(lines, "x = (") is None and fill_slot(lines, "\n") is None  # unparsable, or nothing written
    assert slot_of(source) is None and fill_slot(source, "x = 1") is None  # nothing marked
    # At the end of a function that returns, the new lines go before the return: after it they would never run.
    ending = fill_slot(Step("forward", "scale", "end").marked(source), "y = y * 2")
    assert ending == source.replace("    return self.out(y)", "    y = y * 2\n    return self.out(y)")

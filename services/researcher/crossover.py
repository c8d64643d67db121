"""Recombination: port one component of a reference mixer into the parent, function by function.

A component is a function of the reference (a Mixer method besides ``__init__`` and ``forward``, or a module
function) that the parent lacks or has in another form. It is copied into the parent as it is (no LLM can copy a
function more faithfully than the code can); what the LLM writes, in marked slots as for any move, is the rest: the
layers the component uses, in ``__init__`` (the reference's own lines are quoted), and the call in ``forward``
(the reference's own call is quoted) unless the parent makes that very call to its own version already. The
proposal names the move ``crossover`` and the reference as its second parent. The references are the campaign's
ranked runs; until it has some, the baselines it starts from.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from services.researcher.moves import NEVER_PRESENT, Move, Step
from shared.events import CROSSOVER_MOVE
from shared.mixer.edit import borrow_definitions, editable_functions, for_prompt, function_source, put_definition

CORE = ("__init__", "forward")


@dataclass(frozen=True)
class Crossover:
    move: Move
    donor_ref: str  # the reference's experiment id: the proposal's second parent
    code: str  # the parent with the component put in


def components(parent: str, donor: str) -> list[tuple[str, bool]]:
    """The donor's functions (name, whether a Mixer method) that the parent lacks or has in another form; none when
    only one function tells them apart, since porting it would make the parent the donor (a child's one change
    undone by its own parent's version, say)."""
    theirs, ours = functions_of(donor), functions_of(parent)
    differing = {key for key in theirs.keys() | ours.keys() if theirs.get(key) != ours.get(key)}
    if len(differing) < 2:
        return []
    return [(name, is_method) for name, is_method in theirs if (name, is_method) in differing
            and not (is_method and name in CORE)]


def functions_of(code: str) -> dict[tuple[str, bool], str]:
    """Each function of the file, (name, whether a Mixer method) -> its source."""
    return {(node.name, is_method): function_source(code, node.name, is_method)
            for node, is_method in editable_functions(for_prompt(code))}


def attributes_used(source: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"self\.(\w+)", source)))


def defining_lines(init: str, attributes: list[str]) -> list[str]:
    """The lines of an ``__init__`` that set one of ``attributes``."""
    wanted = "|".join(map(re.escape, attributes))
    return [line.strip() for line in init.splitlines() if wanted and re.match(rf"\s*self\.({wanted})\s*=", line)]


def calling_lines(source: str, name: str, is_method: bool) -> list[str]:
    call = rf"self\.{re.escape(name)}\(" if is_method else rf"(?<![\w.]){re.escape(name)}\("
    return [line.strip() for line in source.splitlines()
            if re.search(call, line) and not line.lstrip().startswith("def ")]


def crossover(parent: str, donor: str, donor_name: str, donor_ref: str, seed: int) -> Crossover | None:
    """One component of ``donor`` ported into ``parent`` (drawn with the seed), with the move that wires it in;
    None when the donor has nothing the parent lacks."""
    options = components(parent, donor)
    if not options:
        return None
    name, is_method = random.Random(seed).choice(options)
    component = function_source(donor, name, is_method)
    # With the helpers it calls that the parent lacks, from the donor.
    code = borrow_definitions(put_definition(parent, name, component, as_method=is_method), [donor])
    parent_init = function_source(parent, "__init__", True)
    missing = [a for a in attributes_used(component)
               if not defining_lines(parent_init, [a]) and not function_source(code, a, True)]
    new_layers = defining_lines(function_source(donor, "__init__", True), missing)
    calls = calling_lines(function_source(donor, "forward", True), name, is_method)
    shown = f"self.{name}" if is_method else name
    steps = []
    if new_layers:
        steps.append(Step("__init__", f"Add what `{shown}` uses, as {donor_name} defines it: "
                                      + " ".join(f"`{line}`" for line in new_layers), "end"))
    # The parent calling its own version just as the donor calls this one: the port is in the computation already.
    if not calls or not set(calls) <= set(calling_lines(parent, name, is_method)):
        steps.append(Step("forward", f"Use `{shown}` (now part of this file) in the computation"
                          + (f", as {donor_name} does: " + " ".join(f"`{line}`" for line in calls) if calls else "")
                          + ". Keep the rest of forward.", "return"))
    move = Move(id=CROSSOVER_MOVE, title=f"Port `{name}` from {donor_name}",
                why=f"Recombination: `{name}` is the part of {donor_name} that this parent lacks or has in "
                    f"another form.", steps=tuple(steps), cognition=(), present=NEVER_PRESENT,
                provenance=f"crossover:{donor_ref}")
    return Crossover(move, donor_ref, code)


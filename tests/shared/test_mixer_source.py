"""Static repair and checks of mixer source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.mixer.baselines import BASELINES as BASELINE_FILES
from shared.mixer.edit import extract_function, for_prompt, hoist_nested_methods, merge_functions, repair
from shared.mixer.frames import faulty_region, splice
from shared.mixer.source import (
    code_similarity,
    discarded_results,
    static_problem,
    undefined_names,
    unread_assignments,
    unused_attributes,
)

BASELINES = sorted(BASELINE_FILES.values())

GOOD = """
class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs: Any) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.proj(x)) * math.sqrt(2.0)
"""


def test_repair_strips_fences_and_adds_the_standard_imports() -> None:
    fixed = repair(f"Here you go:\n```python\n{GOOD}```\nEnjoy!")
    assert fixed.splitlines()[:5] == [
        "import torch", "import torch.nn as nn", "import torch.nn.functional as F", "import math",
        "from typing import Any",
    ]
    assert static_problem(fixed) is None
    assert repair(fixed) == fixed  # repair is idempotent


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_every_baseline_passes_the_static_checks(path: Path) -> None:
    assert static_problem(path.read_text()) is None


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        ("class Mixer(nn.Module:\n  pass", "syntax", "line 1"),
        ("import torch\nclass Block(torch.nn.Module):\n  pass", "contract", "no top-level class named Mixer"),
        (GOOD.replace("d_model: int, n_heads: int, **kwargs: Any", "dim"), "contract", "(self, d_model, n_heads"),
        (GOOD.replace("self, x: torch.Tensor", "self, x, mask, state"), "contract", "must be (self, x)"),
        ("import os\n" + GOOD, "contract", "import of 'os' is not allowed"),
        ("import socket as s\n" + GOOD, "contract", "import of 'socket'"),
        (GOOD.replace("return F.silu", "open('/etc/passwd')\n        return F.silu"), "contract", "open()"),
    ],
)
def test_static_problems_are_named(code: str, reason: str, words: str) -> None:
    problem = static_problem(code)
    assert problem is not None and problem.reason == reason and words in problem.detail


def test_repair_handles_an_unclosed_fence_and_a_class_named_after_the_idea() -> None:
    reply = "```python\n" + GOOD.replace("class Mixer(nn.Module)", "class GatedCumsum(nn.Module)")
    fixed = repair(reply)
    assert "```" not in fixed and fixed.rstrip().endswith("Mixer = GatedCumsum")
    assert static_problem(fixed) is None
    two = GOOD + GOOD.replace("class Mixer", "class Other")
    assert "Mixer = " not in repair(two.replace("class Mixer", "class First"))  # ambiguous: left as it is


def test_code_similarity_ignores_comments_and_formatting() -> None:
    deltanet = next(p for p in BASELINES if p.stem == "deltanet").read_text()
    restyled = "# a copy\n\n" + deltanet.replace("(z)", "( z )").replace("\n\n", "\n\n\n# spaced out\n")
    assert code_similarity(deltanet, restyled) == pytest.approx(1.0)


def test_code_similarity_sees_the_whole_file_not_its_shared_opening() -> None:
    deltanet = next(p for p in BASELINES if p.stem == "deltanet").read_text()
    # Same imports, __init__ and projections; the recurrence after them replaced by a plain causal sum.
    head = deltanet[:deltanet.index("def chunked_delta")]
    other = head + "def chunked_delta_rule(q, k, v, beta, chunk_size):\n    return (k * v).cumsum(2) * q\n"
    assert code_similarity(deltanet, other) < 0.9
    for a in BASELINES:
        for b in BASELINES:
            if a != b:
                assert code_similarity(a.read_text(), b.read_text()) < 0.9, (a.stem, b.stem)


NESTED = """class Mixer:
    def forward(self, x):
        def step(h):
            return h * 2
        return step(x)
"""


def test_the_faulty_region_is_the_innermost_function_of_the_deepest_own_frame() -> None:
    tb = ('  File "/r/mixer.py", line 5, in forward\n  File "/lib/torch/x.py", line 9, in f\n'
          '  File "/r/mixer.py", line 4, in step\nValueError: boom\n')
    region = faulty_region(NESTED, tb)
    assert region is not None and (region.name, region.start, region.end, region.indent) == ("step", 3, 4, 8)
    assert "   4>             return h * 2" in region.numbered(NESTED)
    assert faulty_region(NESTED, 'File "/lib/other.py", line 4, in step') is None
    assert faulty_region("def broken(:\n", 'File "/r/mixer.py", line 1, in broken') is None


def test_splice_replaces_the_region_at_its_depth() -> None:
    region = faulty_region(NESTED, 'File "/r/mixer.py", line 4, in step')
    assert region is not None
    spliced = splice(NESTED, region, "def step(h):\n    return h + 1\n")
    assert spliced == NESTED.replace("return h * 2", "return h + 1")


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_prompts_show_baselines_without_their_slow_reference(path: Path) -> None:
    shown = for_prompt(path.read_text())
    assert "def recurrent_reference" not in shown and "mixer._" not in shown
    assert static_problem(shown) is None and "class Mixer" in shown
    assert for_prompt(shown) == shown
    assert for_prompt("def broken(:\n") == "def broken(:\n"


CALLS_A_HELPER = GOOD.replace("return F.silu(self.proj(x)) * math.sqrt(2.0)",
                              "return scan(self.proj(x), self.gate_dtype)")
DONOR = """
def scan(x, dtype):
    return torch.cumsum(x.to(dtype), dim=1) / norm(x)


def norm(x):
    return math.sqrt(x.shape[-1])


def unrelated():
    return 1
"""


def test_undefined_names_are_found_and_nothing_else() -> None:
    code = repair(GOOD.replace("return F.silu(self.proj(x))", "y = [z * 2 for z in (x,)][0]\n"
                                                              "        return F.silu(self.proj(y)) * gate_dtype"))
    assert undefined_names(code) == [("gate_dtype", code.splitlines().index(
        "        return F.silu(self.proj(y)) * gate_dtype * math.sqrt(2.0)") + 1)]
    # Annotations never run under postponed evaluation; parameters, comprehension targets and builtins are bound.
    annotated = repair(GOOD.replace("x: torch.Tensor) -> torch.Tensor:", "x: Tensor, n: int = len('ab')) -> Out:"))
    assert undefined_names(annotated) == []
    problem = static_problem(repair(CALLS_A_HELPER))
    assert problem is not None and problem.reason == "syntax" and "'scan' (line" in problem.detail


def test_repair_borrows_the_helpers_a_draft_calls_from_its_donors() -> None:
    code = repair(CALLS_A_HELPER, donors=[DONOR])
    assert "def scan(x, dtype):" in code and "def norm(x):" in code and "def unrelated" not in code
    assert static_problem(code) is None
    assert repair(CALLS_A_HELPER) == repair(CALLS_A_HELPER, donors=[])  # no donor, no change


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_a_copy_of_what_the_prompt_showed_is_a_copy(path: Path) -> None:
    """The prompt shows a parent without its slow reference; a copy of that, with other imports and without its
    docstrings, is still the parent's code."""
    shown = for_prompt(path.read_text())
    docstring = ast.get_docstring(ast.parse(shown), clean=False) or ""
    copied = "import itertools\n" + shown.replace(docstring, "", 1)
    assert code_similarity(repair(copied), path.read_text()) == 1.0


WITH_HELPER = repair(GOOD.replace("return F.silu(self.proj(x)) * math.sqrt(2.0)", "return squash(self.proj(x))")
                     + "\n\ndef squash(x):\n    return F.silu(x)\n")


def test_a_reply_of_functions_is_merged_into_its_base() -> None:
    reply = """```python
    def forward(self, x):
        return squash(self.proj(x) + self.shift(x))

    def shift(self, x):
        return torch.roll(x, 1, dims=1) * 0.0

def squash(x):
    return torch.tanh(x)

def extra(x):
    return x
```"""
    merged = merge_functions(WITH_HELPER, reply)
    assert static_problem(merged) is None and merged.count("def forward") == 1 and merged.count("def squash") == 1
    assert "self.proj(x) + self.shift(x)" in merged and "torch.tanh(x)" in merged and "F.silu(x)" not in merged
    tree = ast.parse(merged)
    mixer = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    assert [f.name for f in mixer.body if isinstance(f, ast.FunctionDef)] == ["__init__", "forward", "shift"]
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == ["squash", "extra"]


def test_a_new_class_in_a_reply_is_added_as_a_class_not_as_methods() -> None:
    reply = """class Gate(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Linear(d, d)

    def forward(self, x):
        return torch.sigmoid(self.w(x))

class Mixer(nn.Module):
    def forward(self, x):
        return self.proj(x) * Gate(x.shape[-1])(x)
"""
    merged = merge_functions(WITH_HELPER, reply)
    assert static_problem(merged) is None
    tree = ast.parse(merged)
    classes = {n.name: [f.name for f in n.body if isinstance(f, ast.FunctionDef)]
               for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"Mixer": ["__init__", "forward"], "Gate": ["__init__", "forward"]}
    assert "Gate(x.shape[-1])(x)" in merged and "self.w = nn.Linear(d, d)" in merged


def test_a_whole_file_or_an_unparsable_reply_is_taken_as_it_is() -> None:
    assert merge_functions(WITH_HELPER, f"```python\n{GOOD}```") == f"```python\n{GOOD}```"
    assert merge_functions(WITH_HELPER, "def forward(self, x:\n") == "def forward(self, x:\n"
    assert merge_functions(WITH_HELPER, "class Mixer:\n    pass\n") == "class Mixer:\n    pass\n"


def test_a_layer_created_in_init_but_never_read_is_reported() -> None:
    gla = next(path for path in BASELINES if path.stem == "gla").read_text()
    assert all(unused_attributes(path.read_text()) == [] for path in BASELINES)
    dead = gla.replace("        super().__init__()\n", "        super().__init__()\n"
                       "        self.shift_mix = nn.Parameter(torch.full((d_model,), 0.5))\n"
                       "        self.looked_up = nn.Linear(d_model, d_model)\n", 1)
    assert unused_attributes(dead + "\n\ndef f(m):\n    return getattr(m, 'looked_up')\n") == ["shift_mix"]
    assert unused_attributes("class Mixer(\n") == []


METHODS_IN_INIT = """
class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs: Any) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x) * 2.0

        def helper(self, x):
            def inner(y):
                return y
            return inner(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
"""


def test_methods_indented_into_init_become_methods_again() -> None:
    hoisted = hoist_nested_methods(METHODS_IN_INIT)
    mixer = next(n for n in ast.parse(hoisted).body if isinstance(n, ast.ClassDef))
    methods = {n.name: ast.unparse(n) for n in mixer.body if isinstance(n, ast.FunctionDef)}
    assert sorted(methods) == ["__init__", "forward", "helper"]
    assert "def " not in methods["__init__"].split("\n", 1)[1]
    assert "* 2.0" in methods["forward"]  # the model's own forward wins over the one it shadowed
    assert "def inner(y)" in methods["helper"]  # a closure without self stays where it is
    assert repair(METHODS_IN_INIT) == hoist_nested_methods(repair(METHODS_IN_INIT))
    assert hoist_nested_methods("def broken(:\n") == "def broken(:\n"


def test_the_function_asked_for_is_taken_from_wherever_the_reply_put_it() -> None:
    whole_file = "```python\nimport torch\n\nclass Mixer(nn.Module):\n    def __init__(self, d, h, **k):\n" \
                 "        super().__init__()\n\n    def forward(self, x):\n        return x * 2\n```"
    assert extract_function(whole_file, "forward") == "def forward(self, x):\n    return x * 2\n"
    indented = "    def forward(self, x):\n        return x\n\ndef helper(y):\n    return y\n"  # mixed indentation
    assert extract_function(indented, "helper") == "def helper(y):\n    return y\n"
    assert extract_function(whole_file, "_project") is None  # never another function under the asked name


def test_a_tensor_computed_and_thrown_away_is_reported_but_a_side_effect_is_not() -> None:
    assert all(discarded_results(path.read_text()) == [] for path in BASELINES)
    mixer = ("class Mixer(nn.Module):\n    def __init__(self, d_model, n_heads):\n"
             "        self.decay = nn.Linear(d_model, n_heads)\n"
             "    def forward(self, x):\n        outs = []\n        self.decay(x)\n        x * 2\n"
             "        x.mul_(2)\n        outs.append(x)\n        torch.sigmoid(x)\n        self.helper(x)\n"
             "        return x\n")
    assert discarded_results(mixer) == ["`self.decay(x)` (line 6)", "`x * 2` (line 7)", "`torch.sigmoid(x)` (line 10)"]
    assert discarded_results("def f(:\n") == []


def test_a_value_assigned_and_never_read_is_named_with_its_line() -> None:
    code = """
def forward(self, x):
    o = self.mix(x)
    _, t, _ = x.shape
    _scratch = x * 2
    def inner(y):
        z = y + 1
        return y
    used = inner(x)
    return self.skip * used
"""
    assert unread_assignments(code) == ["`o` (line 3, in forward)", "`z` (line 7, in inner)"]
    assert unread_assignments("def f(:\n") == []

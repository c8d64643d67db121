"""The researcher's prompt. Small local coders need the contract spelled out and a worked example to adapt.

Two turns: the idea as JSON under a schema (``name``, ``motivation``), then the code as a fenced Python block
holding the functions the idea changes (merged into the parent in code) or, if the model prefers, a whole file.
Code inside a JSON string breaks small models: an unescaped quote in the code ends the string, and under a JSON
grammar the rest of the file is lost (measured with Qwen2.5-Coder 0.5B). The assembled proposal is checked
against ``PROPOSAL_SCHEMA`` in code.

Templates use ``string.Template.substitute``: a missing variable raises at once instead of leaving a hole.
"""

from __future__ import annotations

from string import Template

from services.researcher.moves import Move
from shared.mixer.source import ALLOWED_IMPORTS

IDEA_SCHEMA = {
    "type": "object",
    "properties": {
        # maxLength: the grammar then closes each string before max_tokens would cut the JSON off.
        "name": {"type": "string", "maxLength": 60, "description": "short kebab-case name of the new mixer"},
        "motivation": {"type": "string", "maxLength": 700,
                       "description": "what changes versus the parent and why it should help"},
    },
    "required": ["name", "motivation"],
}

PROPOSAL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "short kebab-case name of the new mixer"},
        "motivation": {"type": "string", "description": "what changes versus the parent and why it should help"},
        "code": {"type": "string", "description": "the complete Python file defining class Mixer"},
    },
    "required": ["name", "motivation", "code"],
}

SYSTEM = (
    "You are a researcher in efficient sequence models. You design causal token mixers with linear cost in the "
    "sequence length and write them as correct, runnable PyTorch. You answer with JSON only."
)

CONTRACT = Template("""\
The file you write must satisfy this contract exactly:
- Imports only from: $allowed.
- It defines `class Mixer(nn.Module)` with `__init__(self, d_model: int, n_heads: int, **kwargs)` and
  `forward(self, x)`, where x has shape (batch, seq, d_model) and the output has the same shape and dtype.
- Causal: the output at position t may depend only on inputs at positions <= t.
- Sub-quadratic: never build a (seq x seq) matrix over the whole sequence. Use a recurrent state carried across
  chunks of at most 64 tokens (quadratic only inside a chunk), like the example.
- Works for any seq length (pad to a multiple of the chunk size, then cut back) and any batch size.
- Numerically stable: keep decays in (0, 1) (e.g. torch.sigmoid or exp(-softplus)), normalise keys or outputs.
- At most about 4 * d_model * d_model parameters. No print, no file or network access.
""")

PROPOSE = Template("""\
Design a new token mixer that improves on the parent below.

$contract
$example
## Parent: $parent_name
Results: $parent_results
Motivation: $parent_motivation
```python
$parent_code
```

## What the analysis of the parent says
$parent_analysis

## Other strong designs so far
$references

## Ideas from the literature that match these symptoms
$cognition

$change
""")

FREE_CHANGE = """\
Change one clear thing about the parent, motivated by the analysis and the ideas above. Keep everything else that
already works. First give the idea only, as a JSON object with two keys: "name" (a short kebab-case name for your
mixer) and "motivation" (one or two sentences: what you change and why it should help)."""

GUIDED_CHANGE = Template("""\
## The change to make: $title
$instruction

Make exactly this change to the parent and keep everything else. First give the idea only, as a JSON object with
two keys: "name" (a short kebab-case name for your mixer) and "motivation" (one or two sentences: what you change
and why it should help this parent, given its results and analysis).""")

WRITE_CODE = """\
Now write the code of your change: only the functions of the parent that you change, and any new ones, each one
complete from its `def` line (a method of Mixer keeps `self`; change `__init__` too if you add layers or
parameters). Everything you leave out stays as in the parent. Answer with one ```python code block and nothing else.
"""

STEP = Template("""\
Step $number of $steps: rewrite `$name`. Here it is now:
```python
$source
```
$instruction
$answer
""")
# What a step's reply is asked to be: the marked slot's lines only (a third of the tokens of the whole function, and
# measured on recorded step prompts as likely to carry the change), or the whole function when nothing is marked.
STEP_ANSWERS = {
    "line": Template("Answer with only the marked line as it should now read (the whole statement, without the TODO "
                     "comment), in one ```python code block and nothing else."),
    "lines": Template("Answer with only the new lines that go where the TODO comment is, in one ```python code block "
                      "and nothing else."),
    None: Template("Answer with the complete new `$name`, from its `def` line, in one ```python code block and "
                   "nothing else."),
}

RETRY = Template("""\
Your last version was rejected before training: $reason — $detail
Start again from the parent.

""")

EXAMPLE = Template("""\
## Worked example that satisfies the contract ($name)
```python
$code
```
""")


ANCHORS = ("start", "end", "return")


def move_schema(functions: list[str]) -> dict[str, object]:
    """A new move for a parent whose editable functions are ``functions``: one or two steps, each on one of them."""
    step = {"type": "object", "properties": {
        "function": {"type": "string", "enum": functions},
        "where": {"type": "string", "enum": list(ANCHORS)},
        "instruction": {"type": "string", "maxLength": 400},
    }, "required": ["function", "where", "instruction"]}
    return {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 80},
        "rationale": {"type": "string", "maxLength": 300},
        "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": 2},
    }, "required": ["title", "rationale", "steps"]}


INVENT = Template("""\
Turn the idea at the end into one new, concrete change to the parent mixer: a design move that the parent does
not have yet. It can add something, or fix a weakness of the parent (a nonlinearity applied twice, a layer created
in __init__ and never used, a decay that cannot reach 1).

Write it as one or two steps. Each step names one function of the parent to rewrite, where in that function the new
lines go ("start": first lines of the body, "end": last lines of the body, "return": at the return line) and what to
write there, in one or two sentences naming the layers and tensors, e.g. "Add self.decay = nn.Linear(d_model,
n_heads) at the end." A step that adds a layer in __init__ needs a step that uses it in forward.

Reply with JSON only: {"title": "...", "rationale": "what it buys, in a sentence", "steps": [{"function": "...",
"where": "...", "instruction": "..."}]}

$contract
## Parent: $parent_name
```python
$parent_code
```

## The idea: $source_title
$source_text
""")


def invent_messages(**fields: str) -> list[dict[str, str]]:
    """The prompt for a new move: the fixed instructions and the contract first (cached across tasks), then the
    parent and the idea."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": INVENT.substitute(contract=contract_text(), **fields)}]


def contract_text() -> str:
    return CONTRACT.substitute(allowed=", ".join(sorted(ALLOWED_IMPORTS - {"__future__"})))


def proposal_messages(*, example_name: str | None, example_code: str, move: Move | None,
                      **fields: str) -> list[dict[str, str]]:
    """The proposal prompt. ``example_name`` None leaves the worked example out (when the parent is itself a
    baseline it already shows the contract, and small models work better with shorter prompts). ``move`` None
    leaves the choice of the change to the LLM."""
    example = EXAMPLE.substitute(name=example_name, code=example_code) if example_name else ""
    change = GUIDED_CHANGE.substitute(title=move.title, instruction=move.instruction) if move else FREE_CHANGE
    prompt = PROPOSE.substitute(contract=contract_text(), example=example, change=change, **fields)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


REVISE = Template("""\
Your mixer was rejected before training: $reason — $detail
Fix exactly that and keep the idea. Answer with the corrected functions, each complete from its `def` line (or
the whole corrected file), in one ```python code block.
""")

"""Design moves: one concrete, well-understood change the researcher asks the LLM to make to a parent.

Asked to "improve the parent", a small local coder (measured with Qwen2.5-Coder 0.5B and 1.5B) hands the parent
back renamed: it has no idea of its own to write. Given one concrete change, with the lines it takes, it writes it.
Each move comes from the cognition base (the entries it cites) and says which lines to add where, in terms of the
`Mixer` contract only (``forward(self, x)``), so it applies to any parent that matches its ``requires`` pattern.
A move whose ``present`` pattern matches the parent is already there and is not offered again.

The LLM still writes the code, names the mixer and argues the motivation; the move only fixes what to try.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    id: str
    title: str
    instruction: str
    cognition: tuple[str, ...]  # ids of the cognition entries behind it
    present: str  # a regex that matches a parent that already has it
    requires: str = ""  # a regex the parent must match for the instruction to make sense

    def applies_to(self, code: str) -> bool:
        if re.search(self.present, code):
            return False
        return not self.requires or re.search(self.requires, code) is not None


# Queries and keys held in variables named q and k (``q = ...`` or ``q, k, v = ...``).
QK = r"\bq\b[^=\n]*=[^=]"

MOVES: tuple[Move, ...] = (
    Move(
        "short-conv", "a short causal convolution before mixing",
        "In `__init__` add `self.short_conv = nn.Conv1d(d_model, d_model, kernel_size=4, padding=3, "
        "groups=d_model)`. As the first line of `forward` add `x = self.short_conv(x.transpose(1, 2))"
        "[..., : x.shape[1]].transpose(1, 2)`, so each token also sees the three before it (keeping the first "
        "seq outputs keeps it causal).",
        ("starter:short-conv", "starter:h3"), present=r"Conv1d|short_conv"),
    Move(
        "token-shift", "token shift: blend each token with the previous one",
        "In `__init__` add `self.shift_mix = nn.Parameter(torch.full((d_model,), 0.5))`. At the start of "
        "`forward` add `previous = F.pad(x, (0, 0, 1, 0))[:, :-1]` and `x = x + self.shift_mix * (previous - x)`, "
        "so every token is mixed with the one before it, as in RWKV.",
        ("starter:rwkv4",), present=r"shift_mix|token_shift|previous"),
    Move(
        "output-gate", "a sigmoid output gate",
        "In `__init__` add `self.out_gate = nn.Linear(d_model, d_model)`. In `forward`, multiply the tensor it "
        "returns by `torch.sigmoid(self.out_gate(x))`, where `x` is forward's input, so each channel learns when "
        "to let the mixed result through.",
        ("starter:rfa-gated", "starter:gla"), present=r"out_gate|\bg_proj\b|gate_proj"),
    Move(
        "value-gate", "a SiLU gate on the values",
        "In `__init__` add `self.v_gate = nn.Linear(d_model, d_model, bias=False)`. In `forward`, replace "
        "`self.v_proj(x)` by `self.v_proj(x) * F.silu(self.v_gate(x))`, so the values written into the state are "
        "gated by the token (a GLU on the values, as in H3 and Hyena).",
        ("starter:h3", "starter:hyena"), present=r"v_gate", requires=r"self\.v_proj\(x\)"),
    Move(
        "skip-path", "a learned direct path for the current token",
        "In `__init__` add `self.skip = nn.Parameter(torch.zeros(d_model))`. In `forward`, add `self.skip * x` "
        "(x is forward's input) to the tensor it returns, a per-channel shortcut for the current token like "
        "Mamba's D term.",
        ("starter:mamba-selective",), present=r"self\.skip\b|self\.D\b"),
    Move(
        "output-norm", "normalise the read-out",
        "In `__init__` add `self.out_norm = nn.LayerNorm(d_model)`. In `forward`, apply `self.out_norm` to the "
        "mixed result just before the output projection (or to the tensor it returns if there is none), so the "
        "read-out keeps a stable scale whatever the state holds.",
        ("starter:output-norm", "starter:transnormer"), present=r"out_norm|head_norm|RMSNorm|LayerNorm|GroupNorm"),
    Move(
        "qk-l2-norm", "L2-normalised queries and keys",
        "Right after the queries `q` and keys `k` are projected (and split into heads), L2-normalise them over the "
        "last dimension: `q = F.normalize(q, dim=-1)` and `k = F.normalize(k, dim=-1)`, which bounds every update "
        "of the state.",
        ("starter:qk-l2-norm", "starter:deltanet"), present=r"normalize\(", requires=QK),
    Move(
        "silu-qk", "SiLU on queries and keys",
        "Right after the queries `q` and keys `k` are projected, pass both through `F.silu`, so the model can "
        "switch features off before they reach the state (as Gated DeltaNet and Mamba-2 do).",
        ("starter:gated-deltanet", "starter:qk-l2-norm"), present=r"silu\([^)]*\b(q|k|q_proj|k_proj)\b", requires=QK),
    Move(
        "softmax-features", "a softmax feature map over the head dimension",
        "Replace the positive feature map of the queries and keys (`F.elu(...) + 1`) by a softmax over the head "
        "dimension, `q = q.softmax(dim=-1)` and `k = k.softmax(dim=-1)`: still positive, but sharper, which "
        "makes attention less diffuse.",
        ("starter:hedgehog", "starter:performer-favor"), present=r"softmax\(dim=-1\)", requires=r"elu"),
    Move(
        "negative-eigenvalues", "beta in (0, 2): negative eigenvalues for the delta rule",
        "Where the delta rule's write strength `beta` comes from a sigmoid, multiply that sigmoid by 2 so beta "
        "lies in (0, 2): the state transition can then have negative eigenvalues, which helps state tracking "
        "(as in DeltaProduct and RWKV-7).",
        ("starter:deltaproduct", "starter:rwkv7"), present=r"2(\.0)?\s*\*\s*torch\.sigmoid|sigmoid\([^)]*\)\s*\*\s*2",
        requires=r"beta[\s\S]*sigmoid|sigmoid[\s\S]*beta"),
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

"""Synthetic tasks that probe what a token mixer can learn: Zoology's MQAR and the six MAD tasks.

Every generator returns ``(inputs, targets)``, int64 arrays of shape ``[n, seq_len]``; ``targets`` holds -100 where
nothing is asked. Each example is built as one sequence ``x`` of ``seq_len + 1`` tokens with ``inputs = x[:-1]``
and ``targets = x[1:]`` at the asked positions, so the answer at position t is always the next token and every
answer is determined by ``inputs[: t + 1]`` (the causal structure the tests check). Token 0 is blank/padding,
token 1 a separator; content tokens start at 2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100
BLANK, SEP = 0, 1
Batch = tuple[np.ndarray, np.ndarray]
Generator = Callable[[np.random.Generator, int, int, int], Batch]


def _finish(x: np.ndarray, asked: np.ndarray) -> Batch:
    """Inputs/targets from full sequences ``x`` and a mask of the positions of ``x`` that are answers."""
    targets = np.where(asked[:, 1:], x[:, 1:], IGNORE)
    return x[:, :-1].astype(np.int64), targets.astype(np.int64)


def _halves(vocab: int) -> tuple[int, int, int]:
    """Content tokens split in two: keys in [2, mid), values in [mid, vocab)."""
    if vocab < 8:
        raise ValueError(f"synthetic tasks need a vocabulary of at least 8 tokens, got {vocab}")
    return 2, (vocab + 2) // 2, vocab


def mqar(rng: np.random.Generator, n: int, seq_len: int, vocab: int, num_pairs: int | None = None,
         power_a: float = 0.01) -> Batch:
    """Zoology's multi-query associative recall: key-value pairs up front, then the keys queried again at
    power-law distributed distances (short gaps more likely); the answer to a query is its value."""
    lo, mid, hi = _halves(vocab)
    length = seq_len + 1
    pairs = num_pairs or max(1, min(8, length // 4, mid - lo))
    space = (length - 2 * pairs) // 2
    if space < pairs:
        raise ValueError(f"seq_len {seq_len} too short for {pairs} pairs plus their queries")
    weights = power_a * np.arange(1, space + 1) ** (power_a - 1)
    x, asked = np.zeros((n, length), np.int64), np.zeros((n, length), bool)
    for row in range(n):
        keys = rng.choice(np.arange(lo, mid), pairs, replace=False)
        values = rng.integers(mid, hi, pairs)
        x[row, 0 : 2 * pairs : 2], x[row, 1 : 2 * pairs : 2] = keys, values
        slots = 2 * pairs + 2 * rng.choice(space, pairs, replace=False, p=weights / weights.sum())
        x[row, slots], x[row, slots + 1] = keys, values
        asked[row, slots + 1] = True
    return _finish(x, asked)


def _recall(rng: np.random.Generator, n: int, seq_len: int, vocab: int, *, noise: float = 0.0,
            mapping: np.ndarray | None = None, all_values: bool = False) -> Batch:
    """Key-value pairs (with optional noise tokens between them); asks a value when its key came before in the
    sequence, or always when ``all_values`` (memorisation: the mapping is global, not in context)."""
    lo, mid, hi = _halves(vocab)
    n_noise = max(1, (mid - lo) // 4) if noise else 0
    keys_hi = mid - n_noise  # the top of the key range becomes noise tokens when noise is on
    length = seq_len + 1
    x, asked = np.zeros((n, length), np.int64), np.zeros((n, length), bool)
    for row in range(n):
        table = mapping if mapping is not None else rng.integers(mid, hi, keys_hi)
        seen: set[int] = set()
        pos = 0
        while pos < length:
            if noise and rng.random() < noise:
                x[row, pos], pos = rng.integers(keys_hi, mid), pos + 1
                continue
            key = int(rng.integers(lo, keys_hi))
            x[row, pos] = key
            if pos + 1 < length:
                x[row, pos + 1] = table[key]
                asked[row, pos + 1] = all_values or key in seen
            seen.add(key)
            pos += 2
    return _finish(x, asked)


def in_context_recall(rng: np.random.Generator, n: int, seq_len: int, vocab: int) -> Batch:
    return _recall(rng, n, seq_len, vocab)


def noisy_recall(rng: np.random.Generator, n: int, seq_len: int, vocab: int) -> Batch:
    return _recall(rng, n, seq_len, vocab, noise=0.2)


def memorization(rng: np.random.Generator, n: int, seq_len: int, vocab: int) -> Batch:
    """A fixed key→value table shared by every sequence (seeded by the vocabulary only), learnt into weights."""
    _, mid, hi = _halves(vocab)
    table = np.random.default_rng(1234 + vocab).integers(mid, hi, mid)
    return _recall(rng, n, seq_len, vocab, mapping=table, all_values=True)


def fuzzy_recall(rng: np.random.Generator, n: int, seq_len: int, vocab: int, max_key: int = 2,
                 max_value: int = 2) -> Batch:
    """Multi-token keys and values (1..max tokens each, disjoint token ranges so boundaries are visible);
    asks every value token once its key has appeared before in the sequence."""
    lo, mid, hi = _halves(vocab)
    length = seq_len + 1
    x, asked = np.zeros((n, length), np.int64), np.zeros((n, length), bool)
    n_entries = max(2, length // (2 * (max_key + max_value)))
    for row in range(n):
        keys = [tuple(rng.integers(lo, mid, rng.integers(1, max_key + 1))) for _ in range(n_entries)]
        values = [tuple(rng.integers(mid, hi, rng.integers(1, max_value + 1))) for _ in range(n_entries)]
        seen: set[int] = set()
        pos = 0
        while pos < length:
            entry = int(rng.integers(n_entries))
            for tok in keys[entry] + values[entry]:
                if pos < length:
                    x[row, pos] = tok
                    asked[row, pos] = tok >= mid and entry in seen
                pos += 1
            seen.add(entry)
    return _finish(x, asked)


def selective_copying(rng: np.random.Generator, n: int, seq_len: int, vocab: int, n_copy: int | None = None) -> Batch:
    """Data tokens scattered among blanks, then a separator; asks the data tokens back in order."""
    lo, _, hi = _halves(vocab)
    length = seq_len + 1
    k = n_copy or max(1, min(8, length // 4))
    body = length - 1 - k
    x, asked = np.zeros((n, length), np.int64), np.zeros((n, length), bool)
    for row in range(n):
        data = rng.integers(lo, hi, k)
        x[row, np.sort(rng.choice(body, k, replace=False))] = data
        x[row, body] = SEP
        x[row, body + 1 :] = data
        asked[row, body + 1 :] = True
    return _finish(x, asked)


def compression(rng: np.random.Generator, n: int, seq_len: int, vocab: int) -> Batch:
    """A random sequence, a separator, then a position query; asks the token at that position. The model must
    hold the whole sequence in its state (MAD compresses into one token; a query token is our causal-LM form)."""
    length = seq_len + 1
    m = min(length - 3, (vocab - 2) // 2)
    if m < 1:
        raise ValueError(f"seq_len {seq_len} / vocab {vocab} too small for compression")
    query0 = vocab - m  # position-query tokens sit at the top of the vocabulary
    x, asked = np.zeros((n, length), np.int64), np.zeros((n, length), bool)
    for row in range(n):
        seq, where = rng.integers(2, query0, m), int(rng.integers(m))
        x[row, length - m - 3 : length - 3] = seq  # left-padded with blanks
        x[row, -3:] = (SEP, query0 + where, seq[where])
        asked[row, -1] = True
    return _finish(x, asked)


TASKS: dict[str, Generator] = {
    "mqar": mqar,
    "in_context_recall": in_context_recall,
    "fuzzy_recall": fuzzy_recall,
    "noisy_recall": noisy_recall,
    "selective_copying": selective_copying,
    "compression": compression,
    "memorization": memorization,
}


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def token_accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 64) -> float:
    """The fraction of asked positions where the model's argmax is the answer."""
    correct = total = 0
    for i in range(0, len(inputs), batch_size):
        pred = model(inputs[i : i + batch_size]).argmax(-1)
        mask = targets[i : i + batch_size] != IGNORE
        correct += int((pred[mask] == targets[i : i + batch_size][mask]).sum())
        total += int(mask.sum())
    return correct / max(1, total)


def train_on_task(build_model: Callable[[int, int], nn.Module], task: str, *, steps: int, seq_len: int,
                  vocab_size: int, batch_size: int = 32, lr: float = 3e-3, n_eval: int = 256, seed: int = 0,
                  device: str = "cpu") -> float:
    """Train a fresh model on ``task`` for ``steps`` (fresh examples each step), then its held-out accuracy."""
    gen = TASKS[task]
    torch.manual_seed(seed)
    model = build_model(vocab_size, seq_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        inputs, targets = (torch.from_numpy(a).to(device) for a in gen(rng, batch_size, seq_len, vocab_size))
        opt.zero_grad(set_to_none=True)
        _loss(model, inputs, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    held_out = gen(np.random.default_rng(seed + 10_000), n_eval, seq_len, vocab_size)  # unseen during training
    return token_accuracy(model, *(torch.from_numpy(a).to(device) for a in held_out))


def synthetic_score(build_model: Callable[[int, int], nn.Module], *, steps: int, seq_len: int, vocab_size: int = 64,
                    tasks: list[str] | None = None, batch_size: int = 32, lr: float = 3e-3, n_eval: int = 256,
                    seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Accuracy in [0, 1] per synthetic task, each from a fresh ``build_model(vocab_size, seq_len)`` trained for
    ``steps``. ``build_model`` returns a causal LM mapping ids ``[B, T]`` to logits ``[B, T, vocab_size]``."""
    unknown = sorted(set(tasks or []) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown synthetic task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    return {task: train_on_task(build_model, task, steps=steps, seq_len=seq_len, vocab_size=vocab_size,
                                batch_size=batch_size, lr=lr, n_eval=n_eval, seed=seed, device=device)
            for task in tasks or list(TASKS)}

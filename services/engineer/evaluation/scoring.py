"""Scoring a causal LM on benchmark items by the log-likelihood of each choice's continuation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from services.engineer.evaluation.benchmarks import TASKS, Item, load_task


@dataclass(frozen=True)
class _Request:
    ids: list[int]  # context + continuation, left-truncated to fit the window
    n_cont: int  # how many trailing tokens are the continuation


@dataclass(frozen=True)
class _Score:
    logprob: float
    greedy: bool


def _request(tokenizer: Tokenizer, context: str, continuation: str, max_len: int) -> _Request:
    # Context and continuation are encoded apart so the continuation's tokens are the same for every choice;
    # an empty side becomes token 0 (end-of-text in our tokenizers) so there is always something to condition on.
    ctx = tokenizer.encode(context, add_special_tokens=False).ids or [0]
    cont = (tokenizer.encode(continuation, add_special_tokens=False).ids or [0])[-max_len:]
    return _Request((ctx + cont)[-(max_len + 1) :], len(cont))


@torch.no_grad()
def _score_batch(model: nn.Module, batch: list[_Request], device: str) -> list[_Score]:
    width = max(len(r.ids) for r in batch) - 1
    # Right padding: a causal model's outputs at real positions never see the pad tokens after them.
    inputs = torch.zeros(len(batch), width, dtype=torch.long)
    for row, req in enumerate(batch):
        inputs[row, : len(req.ids) - 1] = torch.tensor(req.ids[:-1])
    logits = model(inputs.to(device)).float()
    logprobs = F.log_softmax(logits, dim=-1)
    out = []
    for row, req in enumerate(batch):
        end = len(req.ids) - 1
        targets = torch.tensor(req.ids[end - req.n_cont + 1 :], device=logprobs.device)
        span = logprobs[row, end - req.n_cont : end]
        out.append(_Score(float(span.gather(-1, targets[:, None]).sum()), bool((span.argmax(-1) == targets).all())))
    return out


def score_requests(model: nn.Module, requests: list[_Request], *, device: str, batch_size: int) -> list[_Score]:
    # Batches of similar length waste little compute on padding.
    order = sorted(range(len(requests)), key=lambda i: len(requests[i].ids))
    scores: list[_Score | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, score in zip(idx, _score_batch(model, [requests[i] for i in idx], device), strict=True):
            scores[i] = score
    return [s for s in scores if s is not None]


def accuracy(model: nn.Module, tokenizer: Tokenizer, items: list[Item], *, device: str, batch_size: int = 16,
             max_len: int = 1024) -> float:
    """The fraction of ``items`` the model answers correctly (0.0 for an empty list)."""
    if not items:
        return 0.0
    requests = [_request(tokenizer, ctx, cont, max_len) for item in items for ctx, cont in item.choices]
    scores = score_requests(model, requests, device=device, batch_size=batch_size)
    correct, pos = 0, 0
    for item in items:
        mine = scores[pos : pos + len(item.choices)]
        pos += len(item.choices)
        if item.metric == "greedy":
            correct += int(mine[0].greedy)
            continue
        norms = [max(1, len(cont)) if item.metric == "len_norm" else 1 for _, cont in item.choices]
        values = [s.logprob / n for s, n in zip(mine, norms, strict=True)]
        correct += int(max(range(len(values)), key=values.__getitem__) == item.label)
    return correct / len(items)


def evaluate(model: nn.Module, tokenizer: Tokenizer, *, samples_per_task: int, device: str, seed: int = 0,
             tasks: list[str] | None = None, batch_size: int = 16, max_len: int = 1024) -> dict[str, float]:
    """Zero-shot accuracy per task on a fixed sample of ``samples_per_task`` items (same items for any model).

    ``model(input_ids[B, T]) -> logits[B, T, V]``; ``max_len`` is the longest window fed (contexts are cut from
    the left). Returns ``{task: accuracy in [0, 1]}``.
    """
    was_training = model.training
    model.eval()
    try:
        return {task: accuracy(model, tokenizer, load_task(task, limit=samples_per_task, seed=seed), device=device,
                               batch_size=batch_size, max_len=max_len)
                for task in tasks or list(TASKS)}
    finally:
        model.train(was_training)

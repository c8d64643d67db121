"""A user's own corpus, given by path: a folder of .txt/.md files, a .jsonl with a ``text`` field, or a .parquet
with a ``text`` column. Every file, line or row is one document (and its own split group)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from services.engineer.data.errors import DataError
from services.engineer.data.sources import Document

TEXT_SUFFIXES = (".txt", ".md")


def user_files(path: Path) -> list[Path]:
    """The input files of a user corpus, validated; raises :class:`DataError` with what was expected."""
    if not path.exists():
        raise DataError(f"user corpus {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"user corpus folder {path} holds no {'/'.join(TEXT_SUFFIXES)} files")
        return files
    if path.suffix.lower() in (".jsonl", ".parquet", *TEXT_SUFFIXES):
        return [path]
    raise DataError(f"user corpus {path}: unsupported format {path.suffix or '(none)'!r}; "
                    "give a folder of .txt/.md files, a .jsonl with a 'text' field, or a .parquet with a 'text' column")


def read_user(path: Path, files: list[Path]) -> Iterator[Document]:
    base = path if path.is_dir() else path.parent
    for file in files:
        rel = file.relative_to(base).as_posix()
        suffix = file.suffix.lower()
        if suffix == ".jsonl":
            texts: Iterator[tuple[str, str]] = _jsonl(file)
        elif suffix == ".parquet":
            texts = _parquet(file)
        else:
            texts = iter([("", file.read_text(encoding="utf-8", errors="replace"))])
        for key, text in texts:
            doc_id = f"{rel}{key}"
            yield Document("user", doc_id, f"user/{doc_id}", text)


def _jsonl(file: Path) -> Iterator[tuple[str, str]]:
    with file.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{i + 1}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{file}:{i + 1}: each line must be an object with a string 'text' field")
            yield f"#{i}", record["text"]


def _parquet(file: Path) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq  # deferred: only parquet corpora need it

    try:
        table = pq.read_table(file, columns=["text"])
    except (KeyError, ValueError, OSError) as exc:  # pyarrow reports a missing column or a bad file this way
        raise DataError(f"{file}: cannot read a 'text' column from this parquet file ({exc})") from exc
    for i, text in enumerate(table.column("text").to_pylist()):
        if isinstance(text, str):
            yield f"#{i}", text

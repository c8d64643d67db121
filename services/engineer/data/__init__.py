"""The offline training corpus: registry packages and user corpora → cleaned, split, tokenized, memory-mapped."""

from __future__ import annotations

from services.engineer.data.errors import DataError
from services.engineer.data.prepare import (
    PROFILE_TOKENIZER,
    Manifest,
    SourceReport,
    TokenData,
    copy_tokenizer,
    data_problem,
    load_token_data,
    prepare,
    split_groups,
)
from services.engineer.data.sources import SOURCES, Document, Roots, Source, install_commands

__all__ = [
    "PROFILE_TOKENIZER",
    "SOURCES",
    "DataError",
    "Document",
    "Manifest",
    "Roots",
    "Source",
    "SourceReport",
    "TokenData",
    "copy_tokenizer",
    "data_problem",
    "install_commands",
    "load_token_data",
    "prepare",
    "split_groups",
]

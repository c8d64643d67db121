"""Text cleaning: one whitespace convention for every source, and the boilerplate that would teach nothing."""

from __future__ import annotations

import html
import re
import unicodedata

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
# Licence and transcriber lines that recur verbatim across files: repeated text inflates train and leaks into val.
_BOILERPLATE = ("project gutenberg", "gutenberg.org", "this etext", "copyright (c)", "all rights reserved",
                "electronic version", "www.", "http://", "https://")


def normalise(text: str) -> str:
    """NFC, Unix newlines, no tabs or runs of spaces, at most one blank line in a row, no edge whitespace.

    Leading indentation goes too: in plays and verse it is layout, and a byte-level BPE would spend merges on it.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\ufeff", "")
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_gutenberg(text: str) -> str:
    """The body between Project Gutenberg's START/END markers when present, minus licence-looking lines."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    if start:
        text = text[start.end() :]
        end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return "\n".join(line for line in text.split("\n") if not any(b in line.lower() for b in _BOILERPLATE))


def clean(text: str) -> str:
    return normalise(strip_gutenberg(text))


def detag_brown(text: str) -> str:
    """Brown corpus ``word/tag`` tokens back to prose: drop tags, rejoin punctuation, restore quotes."""
    words = [tok.rsplit("/", 1)[0] for tok in text.split() if "/" in tok]
    out = " ".join(words).replace("``", '"').replace("''", '"')
    out = re.sub(r" ([.,;:!?)])", r"\1", out)
    out = re.sub(r"([(]) ", r"\1", out)
    out = re.sub(r";(\s*;)+", ";", out)  # the corpus doubles some semicolons (";/. ;/.")
    out = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", out)
    # Paragraphs in the source are blank-line separated; keep them instead of one giant line.
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) > 1:
        return "\n\n".join(detag_brown(p) for p in paragraphs)
    return out


def strip_markup(text: str) -> str:
    """OSIS/XML to plain text: footnotes and headings removed, tags dropped, entities decoded."""
    text = re.sub(r"<note\b.*?</note>", "", text, flags=re.DOTALL)
    text = re.sub(r"<title\b.*?</title>", "", text, flags=re.DOTALL)
    text = re.sub(r"<(chapter|div)\b[^>]*type=\"x-p\"[^>]*/>|<chapter\b[^>]*/>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text)

"""A minimal reader for R lazy-load databases (``Rdata.rdb``/``.rdx``), enough to get character vectors out.

Debian's ``r-cran-janeaustenr`` ships the novels only in this form; reading them here avoids needing R installed.
Only the XDR serialisation types that text datasets use are handled; anything else raises ``ValueError``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

# SEXP type codes and the pseudo-types of R's serialisation format (see R's serialize.c).
_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 0, 1, 2, 9, 10, 13, 14, 16, 19
_REF, _NILVALUE, _GLOBALENV, _EMPTYENV, _BASEENV = 255, 254, 253, 242, 241
_NA_INT = -(2**31)


class _Reader:
    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("only XDR (binary, big-endian) R serialisation is supported")
        self.data, self.pos = data, 2
        version = self.int()
        self.int(), self.int()  # writer and minimal reader R versions: irrelevant here
        if version == 3:
            n = self.int()  # native encoding name: skipped (``self.pos += self.int()`` would read pos first)
            self.pos += n
        self.refs: list[Any] = []

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (_NILVALUE, _GLOBALENV, _EMPTYENV, _BASEENV, _NIL):
            return None
        if kind == _REF:
            return self.refs[(flags >> 8) - 1]
        if kind == _SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _LIST:
            return self._pairlist(has_attr, has_tag)
        if kind == _CHAR:
            n = self.int()
            return None if n == -1 else self.raw(n).decode("utf-8", errors="replace")
        value = self._vector(kind)
        attrs = self.item() if has_attr else None
        names = attrs.get("names") if isinstance(attrs, dict) else None
        # A named list (the index, a data frame) comes back as a dict; other attributes are dropped.
        return dict(zip(names, value, strict=False)) if kind == _VEC and names else value

    def _vector(self, kind: int) -> Any:
        n = self.int()
        if kind in (_STR, _VEC):
            return [self.item() for _ in range(n)]
        if kind in (_INT, _LGL):
            return [None if v == _NA_INT else v for v in struct.unpack_from(f">{n}i", self.raw(4 * n))]
        if kind == _REAL:
            return list(struct.unpack_from(f">{n}d", self.raw(8 * n)))
        raise ValueError(f"unsupported R type {kind} in serialised data")

    def _pairlist(self, has_attr: bool, has_tag: bool) -> dict[str, Any]:
        if has_attr:
            self.item()
        tag = self.item() if has_tag else None
        out = {str(tag): self.item()}
        rest = self.item()  # the CDR is itself a pairlist (or NULL)
        if isinstance(rest, dict):
            out.update(rest)
        return out


def _decompress(blob: bytes) -> bytes:
    # Index files are plain gzip in recent R; records carry a 4-byte length, then zlib data or a 1-byte
    # type ('2' bzip2, 'Z' xz, '0' none) first.
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    body = blob[4:]
    if body[:1] == b"Z":
        return lzma.decompress(body[1:])
    if body[:1] == b"2":
        return bz2.decompress(body[1:])
    if body[:1] == b"0":
        return body[1:]
    return zlib.decompress(body)


def read_lazyload(stem: Path) -> dict[str, Any]:
    """Every variable of the lazy-load database ``stem``.rdb/.rdx, by name."""
    index = _Reader(_decompress(stem.with_suffix(".rdx").read_bytes())).item()
    blob = stem.with_suffix(".rdb").read_bytes()
    out: dict[str, Any] = {}
    for name, (offset, length) in index["variables"].items():
        out[name] = _Reader(_decompress(blob[offset : offset + length])).item()
    return out

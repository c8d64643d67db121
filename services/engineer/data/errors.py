"""The data package's error kind."""

from __future__ import annotations

from shared.errors import AsiarchError


class DataError(AsiarchError):
    """The corpus cannot be built or loaded as asked: a bad path, an unknown format, nothing to read."""

    code = "data"

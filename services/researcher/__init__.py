"""Researcher: proposes new mixers from memory and the local LLM.

Its public face, for the command line: ``MOVES``, the built-in move library (``asiarch moves`` lists it beside
the moves learned and every move's record). Loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.researcher.moves import MOVES

__all__ = ["MOVES"]


def __getattr__(name: str) -> Any:
    if name == "MOVES":
        from services.researcher.moves import MOVES

        return MOVES
    raise AttributeError(name)

"""The project's error root: every error we raise on purpose carries a machine-readable code."""

from __future__ import annotations


class AsiarchError(Exception):
    """Base of every deliberate error; ``code`` is stable and machine-readable, the message is for people."""

    code: str = "error"


class ConfigError(AsiarchError):
    code = "config"


class TransientError(AsiarchError):
    """Worth retrying later: a server that did not answer, a lock held elsewhere."""

    code = "transient"

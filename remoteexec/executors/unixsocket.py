"""UnixSocketExecutor: ready when a unix stream socket accepts, on the host."""

from __future__ import annotations

import os
from typing import Any, Dict, List

from ..waits import UnixSocket
from .base import Command, Executor


class UnixSocketExecutor(Executor):
    """Ready when the unix socket ``socket_name`` accepts a connection."""

    def __init__(self, command: Command, socket_name: str, **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        self.socket = os.fspath(socket_name)

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return UnixSocket(self.socket).specs()

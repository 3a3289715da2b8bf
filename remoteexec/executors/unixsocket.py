"""UnixSocketExecutor: ready when a unix stream socket accepts, on the host."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from remoteexec import arguments
from remoteexec.target.protocol import Command
from remoteexec.waits import UnixSocket

from .base import Executor


class UnixSocketExecutor(Executor):
    """Ready when the unix socket ``socket_name`` accepts a connection."""

    ENDPOINTS = ("path",)

    def __init__(self, command: Command, socket_name: str, **kwargs: Any) -> None:
        self.socket = arguments.unix_path("socket_name", socket_name)
        super().__init__(command, **kwargs)

    def _endpoint_values(self) -> Dict[str, Optional[str]]:
        return {"path": self.socket}

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return UnixSocket(self.socket).specs()

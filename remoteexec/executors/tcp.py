"""TCPExecutor: ready when a TCP connection succeeds, on the host."""

from __future__ import annotations

from typing import Any, Dict, List

from .. import arguments
from ..waits import TCP
from .base import Command, Executor


class TCPExecutor(Executor):
    """Ready when ``host:port`` accepts a TCP connection made on the target.

    ``host`` is the address the process listens on, as seen from the target
    machine (mirakuru's name); the machine itself is ``on``.
    """

    def __init__(self, command: Command, host: str, port: int, **kwargs: Any) -> None:
        self.host = host
        self.port = arguments.port("port", port)
        super().__init__(command, **kwargs)

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

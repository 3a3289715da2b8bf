"""TCPExecutor: ready when a TCP connection succeeds, on the host."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from remoteexec import arguments
from remoteexec.errors import Command
from remoteexec.waits import TCP

from .base import Executor


class TCPExecutor(Executor):
    """Ready when ``host:port`` accepts a TCP connection made on the target.

    ``host`` is the address the process listens on, as seen from the target
    machine (mirakuru's name); the machine itself is ``on``.
    """

    ENDPOINTS: Tuple[str, ...] = ("uri", "host", "port")

    def __init__(self, command: Command, host: str, port: int, **kwargs: Any) -> None:
        self.host = host
        self.port = arguments.port("port", port)
        super().__init__(command, **kwargs)

    def _endpoint_values(self) -> Dict[str, Optional[str]]:
        host = self._visible_address(self.host)
        port = str(self.port) if self.port else None
        uri = "%s:%s" % (host, port) if host and port else None
        return {"uri": uri, "host": host, "port": port}

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

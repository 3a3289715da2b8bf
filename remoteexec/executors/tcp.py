"""TCPExecutor: ready when a TCP connection succeeds, on the host."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from remoteexec import arguments, services
from remoteexec.target.protocol import Command
from remoteexec.waits import TCP

from .base import Executor


class OwnPort:
    """A :class:`~remoteexec.services.Deferred` for the command or environment
    of a :class:`TCPExecutor` (or HTTPExecutor): its port as text, the one
    picked at start() with ``port=0``. The executor that holds it binds it::

        TCPExecutor(["server", "--port", OwnPort()], host="0.0.0.0", port=0)
    """

    def __init__(self) -> None:
        self.executor: Optional[TCPExecutor] = None

    def resolve(self) -> str:
        if self.executor is None or not self.executor.port:
            raise ValueError("%r is not known yet: it is picked at the executor's start()" % self)
        return str(self.executor.port)

    def __repr__(self) -> str:
        return "<port of %s>" % (self.executor.name if self.executor else "an executor")


class TCPExecutor(Executor):
    """Ready when ``host:port`` accepts a TCP connection made on the target.

    ``host`` is the address the process listens on, as seen from the target
    machine (mirakuru's name); the machine itself is ``on``. ``port=0`` picks
    a port free on the host at each start(), before the command's references
    are resolved: the command learns it through an :class:`OwnPort` in its
    arguments or environment, dependents through ``endpoints``.
    """

    ENDPOINTS: Tuple[str, ...] = ("uri", "host", "port")

    def __init__(self, command: Command, host: str, port: int, **kwargs: Any) -> None:
        self.host = host
        self.port = arguments.port("port", port, allow_zero=True)
        #: port=0: a free port is picked on the host at each start().
        self.picks_port = self.port == 0
        super().__init__(command, **kwargs)
        for deferred in services.deferred_in(self.inputs()):
            if isinstance(deferred, OwnPort):
                deferred.executor = self

    def _pick_port(self) -> None:
        if self.picks_port:
            self.port = self.supervisor.free_port(self.host)

    def _prepare(self) -> None:
        self._pick_port()
        super()._prepare()

    def _endpoint_values(self) -> Dict[str, Optional[str]]:
        host = self._visible_address(self.host)
        port = str(self.port) if self.port else None
        uri = "%s:%s" % (host, port) if host and port else None
        return {"uri": uri, "host": host, "port": port}

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

"""Local connector: this machine, in a child interpreter, no SSH (the default host).

Several local contexts may run at once (``local://a``, ``local://b``); each
is a separate interpreter with its own supervisor.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Hashable, Optional, Tuple

import mitogen.core
import mitogen.parent

from remoteexec.connectors import coreboot
from remoteexec.connectors.base import Connector, register
from remoteexec.errors import ConnectionFailed

#: The name of the local context when none is given.
DEFAULT_NAME = "local"
#: Seconds a fresh local context may take to install the supervisor.
SETUP_TIMEOUT = 30.0


@register
class LocalConnector(Connector):
    """A child interpreter on the master's machine: ``local://[name]``."""

    kind = "local"
    is_local = True
    failures = (mitogen.core.Error,)

    def __init__(self, name: str, python: str) -> None:
        #: The interpreter the context runs (the master's own by default).
        self.python = python
        super().__init__(name, SETUP_TIMEOUT)

    @classmethod
    def from_target(
        cls, address: str = "", *, python: Optional[str] = None, name: Optional[str] = None
    ) -> LocalConnector:
        """``address`` names the context (default ``"local"``; ``name`` wins);
        ``python`` defaults to the master's interpreter."""
        if python is not None and not isinstance(python, str):
            raise TypeError("python must be a path to an interpreter, got %r" % (python,))
        return cls(name or address or DEFAULT_NAME, python or sys.executable)

    @property
    def key(self) -> Tuple[Hashable, ...]:
        """One context per name."""
        return (self.kind, self.name)

    def start(self, router: Any, *, remote_name: str, via: Optional[Any]) -> Any:
        if via is None and self.core_cache and coreboot.available(router):
            return coreboot.connect(
                router,
                mitogen.parent.Connection,
                self.core_cache,
                python_path=self.python,
                remote_name=remote_name,
            )
        extra: Dict[str, Any] = {} if via is None else {"via": via}
        return router.local(python_path=self.python, remote_name=remote_name, **extra)

    def connection_error(self, exc: BaseException) -> ConnectionFailed:
        return ConnectionFailed("cannot start a local context: %s" % exc, host=self.name)


__all__ = ["DEFAULT_NAME", "SETUP_TIMEOUT", "LocalConnector"]

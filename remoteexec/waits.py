"""Wait strategies: readiness conditions that compose, evaluated on the host.

Each strategy is a small immutable object that renders to plain check specs
(see :mod:`remoteexec.target.checks`); ``a & b`` waits for both. Executors
use them for their own readiness and accept extra ones via ``wait=``::

    rx.HTTPExecutor(cmd, url=..., wait=rx.waits.Banner("ready") & rx.waits.File("/tmp/x.pid"))
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union


class Wait:
    """Base class: a condition the target checks until it holds."""

    def specs(self) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def __and__(self, other: Wait) -> AllOf:
        return AllOf(self, other)

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join(repr(s) for s in self.specs()))


class AllOf(Wait):
    """Holds when every part holds."""

    def __init__(self, *parts: Wait) -> None:
        self.parts: Tuple[Wait, ...] = parts

    def specs(self) -> List[Dict[str, Any]]:
        return [spec for part in self.parts for spec in part.specs()]


class TCP(Wait):
    """A TCP connection to ``host:port`` succeeds (on the target)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, int(port)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "tcp", "host": self.host, "port": self.port}]


class UnixSocket(Wait):
    """A stream connection to the unix socket ``path`` succeeds."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "unix", "path": self.path}]


class HTTP(Wait):
    """``method url`` answers with a status matching ``status`` (a regex)."""

    def __init__(
        self,
        url: str,
        status: Union[str, int] = r"^2\d\d$",
        method: str = "HEAD",
        payload: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        request_timeout: Optional[float] = None,
    ) -> None:
        self.url, self.status, self.method = url, str(status), method
        self.payload = dict(payload) if payload else None
        self.headers = dict(headers) if headers else None
        self.request_timeout = request_timeout

    def specs(self) -> List[Dict[str, Any]]:
        return [
            {
                "kind": "http",
                "url": self.url,
                "status": self.status,
                "method": self.method,
                "payload": self.payload,
                "headers": self.headers,
                "request_timeout": self.request_timeout,
            }
        ]


class File(Wait):
    """The file ``path`` exists (a pid file, a ready marker)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "file", "path": self.path}]


class Banner(Wait):
    """The regex ``pattern`` appears in a line of the process output."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "banner", "pattern": self.pattern}]


def as_specs(wait: Union[Wait, List[Wait], None]) -> List[Dict[str, Any]]:
    """Flatten one wait, a list of waits or None into check specs."""
    if wait is None:
        return []
    if isinstance(wait, Wait):
        return wait.specs()
    return [spec for w in wait for spec in w.specs()]

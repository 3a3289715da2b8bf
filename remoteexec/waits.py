"""Wait strategies: readiness conditions that compose, evaluated on the host.

Each strategy is a small immutable object that renders to plain check specs
(see :mod:`remoteexec.target.checks`); ``a & b`` waits for both. Executors
use them for their own readiness and accept extra ones via ``wait=``::

    rx.HTTPExecutor(cmd, url=..., wait=rx.waits.Banner("ready") & rx.waits.File("/tmp/x.pid"))
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import SplitResult, urlsplit

from remoteexec import arguments
from remoteexec.target import checks

#: URL schemes an HTTP wait speaks, with their default ports.
HTTP_SCHEMES = {"http": 80, "https": 443}


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
        self.host, self.port = host, arguments.port("port", port)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "tcp", "host": self.host, "port": self.port}]


class UnixSocket(Wait):
    """A stream connection to the unix socket ``path`` succeeds."""

    def __init__(self, path: str) -> None:
        self.path = arguments.unix_path("path", path)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "unix", "path": self.path}]


def split_url(url: str, *, allow_zero_port: bool = False) -> Tuple[SplitResult, str, int]:
    """``url`` split, with its host name and port (the scheme's default when
    it has none; 0, "pick one at start", only with ``allow_zero_port``); a
    ValueError naming the URL when it cannot be probed."""
    if not isinstance(url, str):
        raise TypeError("url must be a str, got %s" % arguments.bounded(repr(url), 100))
    shown = arguments.bounded(url, 200)
    parts = urlsplit(url)
    if parts.scheme not in HTTP_SCHEMES:
        raise ValueError("url %s: the scheme must be http or https, got %r" % (shown, parts.scheme))
    if not parts.hostname:
        raise ValueError("url %s does not contain a host name" % shown)
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError("url %s: the port must be in 1-65535 (%s)" % (shown, e)) from None
    if port is None:
        return parts, parts.hostname, HTTP_SCHEMES[parts.scheme]
    return (
        parts,
        parts.hostname,
        arguments.port("url %s: the port" % shown, port, allow_zero=allow_zero_port),
    )


def regex(name: str, pattern: Any) -> str:
    """``pattern`` if it compiles as a regex, else a ValueError naming ``name``
    (here, before the process starts, not on the host after)."""
    shown = arguments.bounded(repr(pattern), 100)
    if not isinstance(pattern, str):
        raise TypeError("%s must be a regex as a str, got %s" % (name, shown))
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError("%s %s is not a valid regex: %s" % (name, shown, e)) from None
    return pattern


class HTTP(Wait):
    """``method url`` answers with a status matching ``status`` (a regex).

    ``https`` URLs are verified against the host's default CA store, or
    against ``ca_file`` (a PEM file ON THE HOST) when given; ``verify=False``
    skips verification (self-signed test services). The request, TLS
    included, is made on the host. ``allow_zero_port``: the URL may name
    port 0, for an executor that picks the port at start.
    """

    def __init__(
        self,
        url: str,
        status: Union[str, int] = r"^2\d\d$",
        method: str = "HEAD",
        payload: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        request_timeout: Optional[float] = None,
        *,
        verify: bool = True,
        ca_file: Union[str, os.PathLike[str], None] = None,
        allow_zero_port: bool = False,
    ) -> None:
        self.parts, self.host, self.port = split_url(url, allow_zero_port=allow_zero_port)
        self.url, self.method = url, method
        self.status = regex("status", str(status))
        self.payload = dict(payload) if payload else None
        self.headers = dict(headers) if headers else None
        self.request_timeout = arguments.seconds(
            "request_timeout", request_timeout, allow_none=True
        )
        if not isinstance(verify, bool):
            raise TypeError("verify must be True or False, got %s" % type(verify).__name__)
        if ca_file is not None and not verify:
            raise ValueError("ca_file= and verify=False contradict each other: pass one")
        if ca_file is not None and self.parts.scheme != "https":
            raise ValueError("ca_file= needs an https url, got %s" % arguments.bounded(url, 200))
        self.verify = verify
        self.ca_file = None if ca_file is None else os.fspath(ca_file)

    def specs(self) -> List[Dict[str, Any]]:
        return [
            {
                "kind": "http",
                "url": self.url,
                "port": self.port,
                "status": self.status,
                "method": self.method,
                "payload": self.payload,
                "headers": self.headers,
                "request_timeout": self.request_timeout,
                "verify": self.verify,
                "ca_file": self.ca_file,
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
        self.pattern = regex("banner", pattern)

    def specs(self) -> List[Dict[str, Any]]:
        return [{"kind": "banner", "pattern": self.pattern}]


class Check(Wait):
    """Any check kind the host knows (:data:`remoteexec.target.checks.KINDS`),
    by its name and spec fields: a kind added there is usable here at once,
    with no class of its own (the classes above check their arguments first)."""

    def __init__(self, kind: str, **fields: Any) -> None:
        if kind not in checks.KINDS:
            raise ValueError(
                "unknown check kind %s; known: %s"
                % (arguments.bounded(repr(kind), 100), ", ".join(sorted(checks.KINDS)))
            )
        self.spec: Dict[str, Any] = {**fields, "kind": kind}

    def specs(self) -> List[Dict[str, Any]]:
        return [dict(self.spec)]


def as_specs(wait: Union[Wait, List[Wait], None]) -> List[Dict[str, Any]]:
    """Flatten one wait, a list of waits or None into check specs."""
    if wait is None:
        return []
    if isinstance(wait, Wait):
        return wait.specs()
    return [spec for w in wait for spec in w.specs()]

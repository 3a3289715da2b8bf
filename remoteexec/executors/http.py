"""HTTPExecutor: ready when a URL answers with the expected status, on the host."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import urlsplit, urlunsplit

from remoteexec import services
from remoteexec.target.protocol import Command
from remoteexec.waits import HTTP, HTTP_SCHEMES, TCP

from .base import ExecutorStatus, SimpleExecutor
from .tcp import TCPExecutor

#: What a Deferred URL stands for until start() resolves it.
PLACEHOLDER_URL = "http://url-known-at-start.invalid/"


def with_port(url: str, port: int) -> str:
    """``url`` (which names port 0) with ``port`` in its place."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + ":%d" % port
    return urlunsplit(parts._replace(netloc=netloc))


class StatusPattern(str):
    """A str (mirakuru's ``HTTPExecutor.status``) that is also callable:
    ``executor.status()`` is the Service interface's status."""

    def __new__(cls, pattern: str, report: Callable[[], ExecutorStatus]) -> StatusPattern:
        text = super().__new__(cls, pattern)
        text._report = report  # type: ignore[attr-defined]
        return text

    def __call__(self) -> ExecutorStatus:
        return self._report()  # type: ignore[attr-defined,no-any-return]


class HTTPExecutor(TCPExecutor):
    """Ready when ``method url`` returns a status matching ``status``.

    The request is made on the target; for ``https`` the TLS handshake too,
    verifying the certificate against the host's CA store, or ``ca_file`` (a
    PEM file on the host), unless ``verify=False``. Before start, the URL's
    TCP port (80/443 when it names none) must be free (AlreadyRunning
    otherwise, naming the owner pid where visible). A URL with port 0 has
    a free port picked on the host at each start() (see :class:`TCPExecutor`).
    """

    #: mirakuru's attribute: the port of an http URL that names none
    #: (https URLs default to 443).
    DEFAULT_PORT = HTTP_SCHEMES["http"]
    ENDPOINTS = ("uri", "host", "port", "url")

    def __init__(
        self,
        command: Command,
        url: Any,
        status: Union[str, int] = r"^2\d\d$",
        method: str = "HEAD",
        payload: Optional[Dict[str, str]] = None,
        headers: Optional[Dict[str, str]] = None,
        request_timeout: Optional[float] = None,
        *,
        verify: bool = True,
        ca_file: Union[str, os.PathLike[str], None] = None,
        **kwargs: Any,
    ) -> None:
        #: As given: a Deferred URL is resolved and checked at each start().
        self._raw_url: Any = url
        self._options: Dict[str, Any] = {
            "status": status,
            "method": method,
            "payload": payload,
            "headers": headers,
            "request_timeout": request_timeout,
            "verify": verify,
            "ca_file": ca_file,
            "allow_zero_port": True,
        }
        deferred = bool(services.deferred_in(url))
        self._set_wait(PLACEHOLDER_URL if deferred else url)
        self.method = method
        self.payload = payload
        self.headers = headers
        super().__init__(command, host=self._wait.host, port=self._wait.port, **kwargs)

    def _set_wait(self, url: str) -> None:
        """Check ``url`` with the options; set the wait, ``url``, host and port."""
        self._wait = HTTP(url, **self._options)
        if self._wait.parts.port is None and self._wait.parts.scheme == "http":
            # As mirakuru: a URL without a port means DEFAULT_PORT (a subclass
            # or a test may change it), for the request and the TCP check.
            self._wait.port = self.DEFAULT_PORT
        self.url = self._wait.parts
        self.host, self.port = self._wait.host, self._wait.port

    def _prepare(self) -> None:
        url = services.resolve(self._raw_url)
        self._set_wait(url)
        self.picks_port = self.port == 0
        super()._prepare()
        if self.picks_port:
            self._set_wait(with_port(url, self.port))

    # mirakuru's str attribute, and the Service's status()
    @property
    def status(self) -> StatusPattern:
        """mirakuru's ``status`` (the expected status regex, a str); calling it
        gives the Service interface's :meth:`SimpleExecutor.status`."""
        return StatusPattern(self._wait.status, lambda: SimpleExecutor.status(self))

    def _endpoint_values(self) -> Dict[str, Optional[str]]:
        values = super()._endpoint_values()
        if services.deferred_in(self._raw_url) and self._wait.url == PLACEHOLDER_URL:
            return dict.fromkeys(self.ENDPOINTS)
        url = self._wait.url
        if self.host in ("0.0.0.0", "::", "[::]") and values["host"]:
            url = url.replace(self.host, values["host"], 1)
        values["url"] = url
        return values

    def inputs(self) -> List[Any]:
        return [*super().inputs(), self._raw_url]

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return self._wait.specs()

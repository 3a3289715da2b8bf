"""HTTPExecutor: ready when a URL answers with the expected status, on the host."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

from ..waits import HTTP, HTTP_SCHEMES, TCP
from .base import Command
from .tcp import TCPExecutor


class HTTPExecutor(TCPExecutor):
    """Ready when ``method url`` returns a status matching ``status``.

    The request is made on the target; for ``https`` the TLS handshake too,
    verifying the certificate against the host's CA store, or ``ca_file`` (a
    PEM file on the host), unless ``verify=False``. Before start, the URL's
    TCP port (80/443 when it names none) must be free (AlreadyRunning
    otherwise, naming the owner pid where visible).
    """

    #: mirakuru's attribute: the port of an http URL that names none
    #: (https URLs default to 443).
    DEFAULT_PORT = HTTP_SCHEMES["http"]

    def __init__(
        self,
        command: Command,
        url: str,
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
        self._wait = HTTP(
            url,
            status=status,
            method=method,
            payload=payload,
            headers=headers,
            request_timeout=request_timeout,
            verify=verify,
            ca_file=ca_file,
        )
        if self._wait.parts.port is None and self._wait.parts.scheme == "http":
            # As mirakuru: a URL without a port means DEFAULT_PORT (a subclass
            # or a test may change it), for the request and the TCP check.
            self._wait.port = self.DEFAULT_PORT
        self.url = self._wait.parts
        self.status = self._wait.status
        self.method = method
        self.payload = payload
        self.headers = headers
        super().__init__(command, host=self._wait.host, port=self._wait.port, **kwargs)

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return self._wait.specs()

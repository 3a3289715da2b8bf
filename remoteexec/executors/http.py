"""HTTPExecutor: ready when a URL answers with the expected status, on the host."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union
from urllib.parse import urlsplit

from ..waits import HTTP, TCP
from .base import Command
from .tcp import TCPExecutor


class HTTPExecutor(TCPExecutor):
    """Ready when ``method url`` returns a status matching ``status``.

    The request is made on the target. Before start, the URL's TCP port must
    be free (AlreadyRunning otherwise, naming the owner pid where visible).
    """

    DEFAULT_PORT = 80

    def __init__(
        self,
        command: Command,
        url: str,
        status: Union[str, int] = r"^2\d\d$",
        method: str = "HEAD",
        payload: Optional[Dict[str, str]] = None,
        headers: Optional[Dict[str, str]] = None,
        request_timeout: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        self.url = urlsplit(url)
        if not self.url.hostname:
            raise ValueError("url %r does not contain a host name" % (url,))
        if request_timeout is not None and request_timeout < 0:
            raise ValueError("request_timeout must not be negative, got %r" % (request_timeout,))
        self.status = str(status)
        self.method = method
        self.payload = payload
        self.headers = headers
        self._request_timeout = request_timeout
        port = self.url.port or self.DEFAULT_PORT
        super().__init__(command, host=self.url.hostname, port=port, **kwargs)

    def _pre_start_specs(self) -> List[Dict[str, Any]]:
        return TCP(self.host, self.port).specs()

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        wait = HTTP(
            self.url.geturl(),
            status=self.status,
            method=self.method,
            payload=self.payload,
            headers=self.headers,
            request_timeout=self._request_timeout,
        )
        return wait.specs()

"""OutputExecutor: ready when a regex appears in the process output."""

from __future__ import annotations

from typing import Any, Dict, List

from remoteexec.target.protocol import Command
from remoteexec.waits import Banner, regex

from .base import SimpleExecutor


class OutputExecutor(SimpleExecutor):
    """Ready when ``banner`` (a regex) matches a line of stdout or stderr.

    The output is read from the log file on the host, so the process never
    blocks on a pipe, however much it prints before the banner.
    """

    def __init__(self, command: Command, banner: str, **kwargs: Any) -> None:
        self._banner = regex("banner", banner)
        super().__init__(command, **kwargs)

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return Banner(self._banner).specs()

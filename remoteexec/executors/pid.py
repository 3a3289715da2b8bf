"""PidExecutor: ready when a file (usually a pid file) exists, on the host."""

from __future__ import annotations

import os
from typing import Any, Dict, List

from remoteexec.target.protocol import Command
from remoteexec.waits import File

from .base import Executor


class PidExecutor(Executor):
    """Ready when ``filename`` exists on the host.

    A file that exists before start raises AlreadyRunning, naming the pid it
    holds when that process is alive.
    """

    def __init__(self, command: Command, filename: str, **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        if not filename:
            raise ValueError("filename must be defined")
        self.filename = os.fspath(filename)

    def _after_start_specs(self) -> List[Dict[str, Any]]:
        return File(self.filename).specs()

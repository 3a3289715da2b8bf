"""Executors: one small class per readiness strategy (mirakuru's names).

Master-side objects; each start/stop/check is a call to the supervisor in
the target's context, so every check runs on the host, next to the process.
"""

from .base import Executor, SimpleExecutor
from .http import HTTPExecutor
from .output import OutputExecutor
from .pid import PidExecutor
from .tcp import OwnPort, TCPExecutor
from .unixsocket import UnixSocketExecutor

__all__ = [
    "Executor",
    "HTTPExecutor",
    "OutputExecutor",
    "OwnPort",
    "PidExecutor",
    "SimpleExecutor",
    "TCPExecutor",
    "UnixSocketExecutor",
]

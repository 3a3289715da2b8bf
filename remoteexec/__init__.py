"""remoteexec: mirakuru-style executors on many hosts, over mitogen.

The master side (this package's top level) opens contexts on hosts and
drives executors; :mod:`remoteexec.target` is the code that runs inside
those contexts. Names are imported lazily, because the target side imports
this package too and must not pull in master-only dependencies.
"""

from typing import Any, List

__version__ = "0.1.0"

_EXPORTS = {
    "Master": "remoteexec.master",
    "Host": "remoteexec.host",
    "RunResult": "remoteexec.host",
    "SimpleExecutor": "remoteexec.executors",
    "Executor": "remoteexec.executors",
    "OutputExecutor": "remoteexec.executors",
    "TCPExecutor": "remoteexec.executors",
    "UnixSocketExecutor": "remoteexec.executors",
    "HTTPExecutor": "remoteexec.executors",
    "PidExecutor": "remoteexec.executors",
    "OwnPort": "remoteexec.executors",
    "waits": "remoteexec",
    "RemoteExecError": "remoteexec.errors",
    "ExecutorError": "remoteexec.errors",
    "TimeoutExpired": "remoteexec.errors",
    "AlreadyRunning": "remoteexec.errors",
    "ProcessExitedWithError": "remoteexec.errors",
    "ProcessFinishedWithError": "remoteexec.errors",
    "CommandNotFound": "remoteexec.errors",
    "CommandFailed": "remoteexec.errors",
    "HostError": "remoteexec.errors",
    "ConnectionFailed": "remoteexec.errors",
    "HostUnreachable": "remoteexec.errors",
    "AuthenticationFailed": "remoteexec.errors",
    "HostKeyMismatch": "remoteexec.errors",
    "RemotePythonMissing": "remoteexec.errors",
    "HostLost": "remoteexec.errors",
    "RemoteCallError": "remoteexec.errors",
    "TarantoolError": "remoteexec.errors",
    "Stack": "remoteexec.stack",
    "StackError": "remoteexec.stack",
    "StackEvent": "remoteexec.stack",
    "Service": "remoteexec.services",
    "ServiceStatus": "remoteexec.services",
    "run_all": "remoteexec.fanout",
    "call_all": "remoteexec.fanout",
    "quick": "remoteexec.target.quick",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'remoteexec' has no attribute %r" % name)
    import importlib

    if name == "waits":
        return importlib.import_module("remoteexec.waits")
    return getattr(importlib.import_module(module), name)


def __dir__() -> List[str]:
    return __all__

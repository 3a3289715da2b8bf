"""How the stack reads a service: the Service interface, or what a service has.

Every read goes through here, so the runner speaks the Service interface
only; for a service that does not implement a part of it yet (an executor
or tarantool class from before the interface) the functions fall back on
what it has: ``on``/``members`` for hosts, ``output_tail``, ``running()``,
``process.poll()``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from remoteexec.errors import RemoteExecError
from remoteexec.services import ServiceStatus


def host_names(service: Any) -> List[str]:
    """The names of the hosts the service runs on."""
    hosts = getattr(service, "hosts", None)
    if hosts is None or callable(hosts):
        members = getattr(service, "members", None)
        if isinstance(members, list):
            hosts = [getattr(m, "on", None) for m in members]
        else:
            hosts = [getattr(service, "on", None)]
    return [str(getattr(h, "name", h)) for h in hosts if h is not None]


def endpoints(service: Any) -> Mapping[str, Optional[str]]:
    """The service's endpoints (name → address, None until known)."""
    found = getattr(service, "endpoints", None)
    if isinstance(found, Mapping):
        return found
    return {}


def inputs(service: Any) -> List[Any]:
    """The values of the service that may hold references."""
    method = getattr(service, "inputs", None)
    return list(method()) if callable(method) else []


def status(service: Any) -> ServiceStatus:
    """The service's status; built from ``running()`` and the process when it
    has no ``status()`` returning a ServiceStatus."""
    method = getattr(service, "status", None)
    if callable(method):
        got = method()
        if isinstance(got, dict) and "state" in got:
            return got  # type: ignore[return-value]
    running = getattr(service, "running", None)
    alive = bool(running()) if callable(running) else True
    process = getattr(service, "process", None)
    code = process.poll() if process is not None and not alive else None
    pid = getattr(service, "pid", None)
    return ServiceStatus(
        name=str(getattr(service, "name", "") or ""),
        hosts=host_names(service),
        state="ready" if alive else ("exited" if process is not None else "stopped"),
        readiness="ready" if alive else None,
        pids=[pid] if isinstance(pid, int) else [],
        since=None,
        exit_code=code,
        endpoints=dict(endpoints(service)),
    )


def running(service: Any) -> bool:
    """Whether the service's process(es) run now."""
    method = getattr(service, "running", None)
    if callable(method):
        return bool(method())
    return status(service).get("state") in ("starting", "running", "ready")


def process_runs(got: ServiceStatus) -> bool:
    """Whether a status says the process runs ("started"), ready or not: a
    start under way counts once it reports a readiness layer (the process)."""
    state = got.get("state")
    return state in ("running", "ready") or (state == "starting" and bool(got.get("readiness")))


def log_tail(service: Any, lines: int) -> str:
    """The last ``lines`` lines of the service's output ("" if it has none)."""
    for name in ("log_tail", "output_tail"):
        method = getattr(service, name, None)
        if callable(method):
            try:
                return str(method(lines))
            except (RemoteExecError, OSError):
                return ""
    return ""


def exit_info(service: Any) -> Dict[str, Any]:
    """``{"running": bool, "exit_code": int or None}`` for a job being watched."""
    got = status(service)
    state = got.get("state")
    if state in ("exited", "failed", "stopped"):
        return {"running": False, "exit_code": got.get("exit_code")}
    return {"running": True, "exit_code": None}


def layer(service: Any, error: Optional[BaseException]) -> Optional[str]:
    """The readiness layer a failed start reached: the error's, else the status'."""
    if isinstance(error, RemoteExecError) and error.details.get("layer"):
        return str(error.details["layer"])
    try:
        reached = status(service).get("readiness")
    except Exception:
        return None
    return None if reached is None else str(reached)


def restart_policy(service: Any, restart: str, max_restarts: int, backoff: float) -> bool:
    """Hand the restart policy to the service (its host's supervisor restarts it).

    Returns False when the service cannot take one: the stack then restarts
    it from the master.
    """
    method = getattr(service, "set_restart", None)
    if callable(method):
        method(restart=restart, max_restarts=max_restarts, restart_backoff=backoff)
        return True
    return False


def pids(got: ServiceStatus) -> List[int]:
    return [int(p) for p in got.get("pids") or [] if p is not None]


def first(values: Iterable[Any]) -> Any:
    return next(iter(values), None)


__all__ = [
    "endpoints",
    "exit_info",
    "first",
    "host_names",
    "inputs",
    "layer",
    "log_tail",
    "pids",
    "process_runs",
    "restart_policy",
    "running",
    "status",
]

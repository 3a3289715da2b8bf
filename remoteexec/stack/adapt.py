"""What the stack makes of a service's answers (the Service interface).

The readings that take more than one call of the interface: a status read
as "the process runs" or "its host restarts it", a job's exit, the layer a
failed start reached, a tail that cannot fail; and the restart policy,
handed to the service when it takes one (``set_restart()``, executors: the
host's supervisor restarts it), else kept by the stack (restarts from the
master).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from remoteexec.errors import RemoteExecError
from remoteexec.services import ServiceStatus


def process_runs(got: ServiceStatus) -> bool:
    """Whether a status says the process runs ("started"), ready or not: a
    start under way counts once it reports a readiness layer (the process)."""
    state = got.get("state")
    return state in ("running", "ready") or (state == "starting" and bool(got.get("readiness")))


def restarted_by_host(got: Mapping[str, Any], seen: int) -> bool:
    """Whether a status shows the host restarting the service: a restart due
    (``starting``/``running`` again) or more restarts than ``seen``."""
    return got.get("state") in ("starting", "running") or int(got.get("restarts") or 0) > seen


def log_tail(service: Any, lines: int) -> str:
    """The last ``lines`` lines of the service's output ("" if it cannot be read)."""
    try:
        return str(service.log_tail(lines))
    except (RemoteExecError, OSError):
        return ""


def exit_info(service: Any) -> Dict[str, Any]:
    """``{"running": bool, "exit_code": int or None}`` for a job being watched."""
    got = service.status()
    state = got.get("state")
    if state in ("exited", "failed", "stopped"):
        return {"running": False, "exit_code": got.get("exit_code")}
    return {"running": True, "exit_code": None}


#: The layer of a start that failed before any readiness layer was reached.
NO_LAYER = "none"


def layer(service: Any, error: Optional[BaseException]) -> str:
    """The readiness layer a failed start reached: the error's, else the status',
    else :data:`NO_LAYER` (it failed or exited before any check passed)."""
    if isinstance(error, RemoteExecError) and error.details.get("layer"):
        return str(error.details["layer"])
    try:
        reached = service.status().get("readiness")
    except Exception:
        return NO_LAYER
    return NO_LAYER if reached is None else str(reached)


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
    "exit_info",
    "first",
    "layer",
    "log_tail",
    "pids",
    "process_runs",
    "restart_policy",
    "restarted_by_host",
]

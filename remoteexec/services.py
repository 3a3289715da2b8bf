"""The Service interface: what every kind of service offers.

Executors, :class:`~remoteexec.tarantool.TarantoolInstance` and
:class:`~remoteexec.tarantool.ReplicaSet` implement it, so the stack, the
command line and the pytest plugin drive them alike, through this interface
alone.

A service's inputs (command arguments, environment values, URLs, Tarantool
config and app parameters) may hold :class:`Deferred` values: values known
only once another service has started, such as the port it picked. A
service resolves them with :func:`resolve` at the start of ``start()``.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    TypedDict,
    runtime_checkable,
)

if TYPE_CHECKING:
    from .host import Host

#: The states a service reports, in lifecycle order.
STATES = ("stopped", "starting", "running", "ready", "exited", "failed")


class ServiceStatus(TypedDict, total=False):
    """One service's state as :meth:`Service.status` reports it.

    ``state`` is one of :data:`STATES`: ``running`` means the process runs
    but readiness is not (yet) confirmed, ``ready`` that every readiness
    check passed, ``exited`` that the process ended on its own (see
    ``exit_code``), ``failed`` that start failed. ``readiness`` names the
    last readiness layer reached (e.g. ``"process"``, ``"port"``,
    ``"box.cfg"``, ``"ready"``). ``since`` is the epoch time the state was
    entered, as the host's clock saw it. ``members`` is set for a service
    made of several (a replica set).
    """

    name: str
    hosts: List[str]
    state: str
    readiness: Optional[str]
    pids: List[int]
    since: Optional[float]
    exit_code: Optional[int]
    endpoints: Dict[str, Optional[str]]
    members: List[ServiceStatus]


@runtime_checkable
class Deferred(Protocol):
    """A value known only once something else has started (a stack reference).

    ``resolve()`` returns the value, or raises ValueError naming what it
    refers to when that is not known yet.
    """

    def resolve(self) -> Any: ...


@runtime_checkable
class Service(Protocol):
    """One service (or one group of them, such as a replica set) on its host(s)."""

    name: str

    @property
    def hosts(self) -> List[Host]:
        """The hosts this service runs on."""
        ...

    def start(self) -> Any:
        """Start and wait until ready; raises a RemoteExecError naming host and cause."""
        ...

    def stop(self) -> Any:
        """Stop gracefully, bounded; SIGKILL what outlives the bound."""
        ...

    def kill(self) -> Any:
        """SIGKILL at once."""
        ...

    def running(self) -> bool:
        """Whether the service's process(es) run now."""
        ...

    def status(self) -> ServiceStatus:
        """State, readiness layer reached, pid(s), since when, endpoints."""
        ...

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the service's output (all members, labelled)."""
        ...

    @property
    def endpoints(self) -> Mapping[str, Optional[str]]:
        """Name → address as other hosts see it (None until known, e.g. port 0 before start).

        The names are fixed at construction, so a reference to an unknown
        name is refused before anything starts.
        """
        ...

    def inputs(self) -> Iterable[Any]:
        """The values that may hold :class:`Deferred` references (command, env, config)."""
        ...

    def artifacts(self, dest: str) -> List[str]:
        """Copy logs and data worth keeping into ``dest`` on the master; the paths written."""
        ...


def resolve(value: Any) -> Any:
    """``value`` with every :class:`Deferred` inside it (str, list, tuple, dict) resolved."""
    if isinstance(value, Deferred) and not isinstance(value, (str, bytes)):
        return value.resolve()
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(v) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


def deferred_in(value: Any) -> List[Deferred]:
    """Every :class:`Deferred` inside ``value``, in order."""
    if isinstance(value, Deferred) and not isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in deferred_in(v)]
    if isinstance(value, dict):
        return [d for v in value.values() for d in deferred_in(v)]
    return []


def host_names(hosts: Iterable[Host]) -> List[str]:
    """The names of ``hosts``, for status rows and messages."""
    return [h.name for h in hosts]


__all__ = ["STATES", "Deferred", "Service", "ServiceStatus", "deferred_in", "host_names", "resolve"]

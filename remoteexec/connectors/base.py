"""The connector base: what every way of opening a context provides, and the registry.

A connector is the plan for reaching one host: it is built (and its
arguments checked) before anything is opened, gives the key the master caches
the host under, opens a mitogen context on a router, and turns the ways that
can fail into a :class:`~remoteexec.errors.ConnectionFailed` that names the
host, the cause and what to do.

Which connector serves a target is data: the target's scheme
(``"local://name"``, ``"ssh://user@host"``; no scheme means ssh) is looked
up in a registry. A new way in (sudo, a paramiko tunnel, docker) is one
module, ``remoteexec/connectors/<scheme>.py``, that defines a subclass and
decorates it with :func:`register`; it is imported the first time its scheme
is asked for. Connectors outside this package call :func:`register` too.
"""

from __future__ import annotations

import abc
import importlib
import threading
from typing import Any, ClassVar, Dict, Hashable, List, Optional, Tuple, Type, TypeVar

from remoteexec import arguments
from remoteexec.errors import ConnectionFailed

#: The scheme of a target without one.
DEFAULT_SCHEME = "ssh"
#: Separates a target's scheme from the address the connector parses.
SCHEME_SEPARATOR = "://"

C = TypeVar("C", bound="Type[Connector]")


class Connector(abc.ABC):
    """How the master reaches one host: one subclass per way in.

    Subclasses set :attr:`kind`, build themselves in :meth:`from_target`
    (checking every argument there, so bad input fails before any host is
    contacted), and open the context in :meth:`start`.
    """

    #: The registry key and the target scheme (``"ssh"``, ``"local"``).
    kind: ClassVar[str]
    #: The context runs on the master's machine: what it binds on 127.0.0.1
    #: the master reaches at 127.0.0.1 too.
    is_local: ClassVar[bool] = False
    #: The process carrying the connection is a client on the master's
    #: machine that may stall on a dead network (the ssh client sits out its
    #: ServerAlive* settings): dropping a lost host kills it, so the stream
    #: closes at once. Never for a local context, where that process *is* the
    #: context.
    kill_transport_on_drop: ClassVar[bool] = False
    #: What :meth:`start` raises when the host cannot be reached; each is
    #: turned into a ConnectionFailed by :meth:`connection_error`.
    failures: ClassVar[Tuple[Type[BaseException], ...]] = ()

    def __init__(self, name: str, setup_timeout: float) -> None:
        #: The host's label: in its Host's name and in every error about it.
        self.name = name
        #: Seconds that installing the supervisor in a fresh context may take.
        self.setup_timeout = setup_timeout
        #: The host's bytecode cache directory, set by the master (None: no
        #: cache): a connector that can (ssh, local) boots a direct context
        #: with ``mitogen.core`` compiled there (:mod:`.coreboot`).
        self.core_cache: Optional[str] = None

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.name)

    @classmethod
    @abc.abstractmethod
    def from_target(cls, address: str, *args: Any, **options: Any) -> Connector:
        """The connector for ``address`` (the target without its scheme).

        Raises ValueError/TypeError naming the argument for bad input;
        opens nothing.
        """

    @property
    @abc.abstractmethod
    def key(self) -> Tuple[Hashable, ...]:
        """What the master caches the host under: equal keys, one context."""

    @abc.abstractmethod
    def start(self, router: Any, *, remote_name: str, via: Optional[Any]) -> Any:
        """Open the context on ``router`` (through the ``via`` context when
        given) and return it. Failures propagate; :meth:`open` types them."""

    def connection_error(self, exc: BaseException) -> ConnectionFailed:
        """The typed error for a failure of :meth:`start`. Subclasses that can
        tell causes apart (refused, auth, host key) override it."""
        return ConnectionFailed(
            "cannot open a %s context: %s" % (self.kind, arguments.bounded(str(exc), 600)),
            host=self.name,
        )

    def open(self, router: Any, *, remote_name: str, via: Optional[Any] = None) -> Any:
        """Open the context; a failure raises a :class:`ConnectionFailed` subclass."""
        try:
            return self.start(router, remote_name=remote_name, via=via)
        except self.failures as e:
            raise self.connection_error(e) from None


_REGISTRY: Dict[str, Type[Connector]] = {}
_REGISTRY_LOCK = threading.Lock()


def register(cls: C) -> C:
    """Make ``cls`` the connector of targets with the scheme ``cls.kind``.

    A class decorator. Registering a second class for a scheme replaces the
    first (the last import wins, as for any name).
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError("connector %s: kind must be an identifier, got %r" % (cls, kind))
    with _REGISTRY_LOCK:
        _REGISTRY[kind] = cls
    return cls


def lookup(kind: str) -> Type[Connector]:
    """The connector class registered for ``kind``.

    A scheme not registered yet is looked for as the module
    ``remoteexec.connectors.<kind>``, which registers itself on import.
    """
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(kind)
    if found is None and kind.isidentifier() and not kind.startswith("_") and kind != "base":
        try:
            importlib.import_module("remoteexec.connectors." + kind)
        except ModuleNotFoundError as e:
            if e.name != "remoteexec.connectors." + kind:
                raise  # the connector module exists but needs something missing
        with _REGISTRY_LOCK:
            found = _REGISTRY.get(kind)
    if found is None:
        raise ValueError(
            "no connector for %s targets; known: %s"
            % (arguments.bounded(repr(kind), 100), ", ".join(known()))
        )
    return found


def known() -> List[str]:
    """The schemes registered so far, sorted."""
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def split_scheme(target: str) -> Tuple[str, str]:
    """``(scheme, address)`` of a target; no scheme means :data:`DEFAULT_SCHEME`."""
    if not isinstance(target, str) or not target:
        raise ValueError(
            "target must be a non-empty string such as '[user@]host[:port]' or 'local://',"
            " got %s" % arguments.bounded(repr(target), 100)
        )
    scheme, separator, address = target.partition(SCHEME_SEPARATOR)
    if not separator:
        return DEFAULT_SCHEME, target
    return scheme, address


def plan(target: str, **options: Any) -> Connector:
    """The connector for ``target`` with ``options``, checked; nothing is opened."""
    scheme, address = split_scheme(target)
    return lookup(scheme).from_target(address, **options)


__all__ = [
    "DEFAULT_SCHEME",
    "SCHEME_SEPARATOR",
    "Connector",
    "known",
    "lookup",
    "plan",
    "register",
    "split_scheme",
]

"""Quick calls: served on the context's broker thread, no thread hand-off.

A normal call crosses two hand-offs on the host (the broker thread wakes the
main or a pool thread, which wakes the broker again to send the reply); on a
lab host that is ~0.14 ms of a ~0.4 ms round trip. A handler registered with
``router.add_handler`` runs on the broker thread itself and replies inline,
so a call the library knows is quick skips both.

The rule (why not every call): while a quick call runs, the broker moves no
message in or out of this context: no heartbeat ack, no other reply, no
module import. So only functions that never block run here: no waiting on a
process, a socket, a sleep, or a lock held across such a wait; and no
import (an import asks the master for the module over the very broker that
is busy). A function whose module is not imported here yet is answered with
:data:`NOT_HERE`, and the master takes the normal path, which imports it.
The supervisor's quick services are listed in :data:`SERVICES`; a user
function opts in with the :func:`quick` marker, checked again here, on the
host, before it runs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Dict, Optional, TypeVar

import mitogen.core

from . import protocol

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute :func:`quick` sets on a function.
MARK = "remoteexec_quick"
#: Supervisor methods that may run on the broker thread, by name: each returns
#: at once (reads state, a log tail or /proc, sends a signal). The supervisor fills it.
SERVICES: Dict[str, Callable[..., Any]] = {}
#: The reply that means "not here: take the normal path" (a module to import first).
NOT_HERE: Dict[str, Any] = {"ok": None}


def quick(fn: F) -> F:
    """Mark ``fn`` as safe to run on the context's broker thread: it never
    blocks and imports nothing (see :mod:`remoteexec.target.quick`).
    ``Host.call`` then skips two thread hand-offs on the host for it."""
    setattr(fn, MARK, True)
    return fn


#: This context's quick handle, once :func:`install` ran.
HANDLE: Optional[int] = None


def install(router: Any) -> int:
    """Register the quick handler on this context's router (once); return its
    handle. Only the master (a parent) may send to it."""
    global HANDLE
    if HANDLE is None:
        HANDLE = router.add_handler(serve, policy=mitogen.core.has_parent_authority)
    return HANDLE


def serve(msg: Any) -> None:
    """Answer one quick call, on the broker thread. Never raises: a failure is
    an error reply, and a result that cannot be pickled is one too."""
    if msg.is_dead:
        return
    what = "quick call"
    try:
        kind, name, args, kwargs = msg.unpickle()
        what = str(name)
        reply = run(kind, what, args, kwargs)
    except Exception as e:
        reply = protocol.raised(what, e)
    try:
        msg.reply(reply)
    except Exception as e:  # a result that cannot be pickled: say so instead
        with contextlib.suppress(Exception):  # the master is gone: nobody to tell
            msg.reply(protocol.raised(what, e))


def run(kind: str, name: str, args: Any, kwargs: Any) -> Any:
    """The reply to quick call ``name``: a supervisor service (``kind``
    ``"service"``) or a marked function ``module:qualname`` (``"call"``)."""
    if kind == "service":
        method = SERVICES.get(name)
        if method is None:
            return protocol.error("ValueError", "%s is not a quick service" % name)
        return method(**(kwargs or {}))
    module_name, _, qualname = name.partition(":")
    fn: Any = sys.modules.get(module_name)
    if fn is None:
        return NOT_HERE
    for part in qualname.split("."):
        fn = getattr(fn, part, None)
    if not getattr(fn, MARK, False):
        return protocol.error(
            "ValueError", "%s.%s is not marked quick on the host" % (module_name, qualname)
        )
    try:
        return {"ok": True, "result": fn(*(args or ()), **(kwargs or {}))}
    except Exception as e:
        return protocol.raised("call %s()" % qualname, e)


__all__ = ["HANDLE", "MARK", "NOT_HERE", "SERVICES", "install", "quick", "run", "serve"]

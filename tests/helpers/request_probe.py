"""Runs in a context that is not a host's parent (tests/test_requests_policy.py):
sends one supervisor request straight to another context's request handle, as
the master's fan-out does, and says what came back. stdlib and mitogen only."""

import threading
from typing import Any, List, Tuple

import mitogen.core


@mitogen.core.takes_router
def send_request(
    context_id: int, handle: int, body: Tuple[Any, ...], timeout: float, router: Any
) -> Tuple[str, Any]:
    """Send ``body`` (a request as the master pickles it) to ``handle`` of
    ``context_id``: ``("reply", value)``, ``("dead", reason)`` for a dead reply
    (mitogen's answer to a refused message), or ``("timeout", seconds)``."""
    message = mitogen.core.Message.pickled(body, handle=handle)
    return _outcome(mitogen.core.Context(router, context_id).send_async(message), timeout)


def _outcome(receiver: Any, timeout: float) -> Tuple[str, Any]:
    try:
        return ("reply", receiver.get(timeout=timeout).unpickle())
    except mitogen.core.ChannelError as e:
        return ("dead", str(e))
    except mitogen.core.TimeoutError:
        receiver.close()  # answered, it is gone already; unanswered, drop it
        return ("timeout", timeout)


@mitogen.core.takes_router
def send_dead(context_id: int, handle: int, router: Any) -> None:
    """Send a dead message (what a closing channel sends) to ``handle`` of
    ``context_id``; no reply is asked for."""
    message = mitogen.core.Message.dead("from a context that is not the parent", handle=handle)
    mitogen.core.Context(router, context_id).send(message)


@mitogen.core.takes_router
def send_heartbeat(context_id: int, handle: int, timeout: float, router: Any) -> Tuple[str, Any]:
    """One heartbeat to ``handle`` of ``context_id``, as the master sends it
    (a reply asked for): what came back, as :func:`send_request` says it."""
    message = mitogen.core.Message.pickled(None, handle=handle)
    return _outcome(mitogen.core.Context(router, context_id).send_async(message), timeout)


def thread_names() -> List[str]:
    """The names of this context's live threads."""
    return sorted(t.name for t in threading.enumerate())

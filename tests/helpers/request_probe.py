"""Runs in a context that is not a host's parent (tests/test_requests_policy.py):
sends one supervisor request straight to another context's request handle, as
the master's fan-out does, and says what came back. stdlib and mitogen only."""

from typing import Any, Dict, Tuple

import mitogen.core


@mitogen.core.takes_router
def send_request(
    context_id: int, handle: int, method: str, kwargs: Dict[str, Any], timeout: float, router: Any
) -> Tuple[str, Any]:
    """``("reply", value)``, ``("dead", reason)`` for a dead reply (mitogen's
    answer to a refused message), or ``("timeout", seconds)`` when nothing came."""
    message = mitogen.core.Message.pickled((method, kwargs), handle=handle)
    receiver = mitogen.core.Context(router, context_id).send_async(message)
    try:
        return ("reply", receiver.get(timeout=timeout).unpickle())
    except mitogen.core.ChannelError as e:
        return ("dead", str(e))
    except mitogen.core.TimeoutError:
        receiver.close()  # answered, it is gone already; unanswered, drop it
        return ("timeout", timeout)

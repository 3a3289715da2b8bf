"""Progress events of a stack: what the command line renders and tests subscribe to."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional

LOG = logging.getLogger(__name__)

#: The kinds of event, in a service's lifecycle order.
EVENTS = ("starting", "ready", "failed", "exited", "restarting", "stopping", "stopped")


@dataclass(frozen=True)
class StackEvent:
    """One step of one service.

    ``time`` is the master's epoch time of the step. ``seconds`` is how long
    the step took: starting → ready for ``ready`` (a job: starting → exit
    for ``exited``), stopping → stopped for ``stopped``. ``exited`` has the
    ``exit_code`` and ``output_tail``; ``final`` says it will not be
    restarted (a job's exit is final; so is a service's without
    ``restart="on-failure"`` or past ``max_restarts``). ``failed`` has the
    ``message``, the readiness ``layer`` reached and the ``output_tail``.
    """

    kind: str
    service: str
    host: str
    time: float
    seconds: Optional[float] = None
    job: bool = False
    exit_code: Optional[int] = None
    final: Optional[bool] = None
    layer: Optional[str] = None
    message: Optional[str] = None
    output_tail: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        """The event as plain data (``--json`` output), None fields left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}


Callback = Callable[[StackEvent], Any]


class Subscribers:
    """Callbacks for events, called one at a time in the order events happen.

    A callback runs on the thread that made the event (a service's start or
    stop thread): it should be quick. One that raises is logged and kept.
    """

    def __init__(self) -> None:
        self._callbacks: List[Callback] = []
        self._lock = threading.RLock()

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns the unsubscribe."""
        if not callable(callback):
            raise TypeError("subscribe() needs a callable, got %r" % (callback,))
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def emit(self, event: StackEvent) -> None:
        with self._lock:
            for callback in list(self._callbacks):
                try:
                    callback(event)
                except Exception:
                    LOG.exception("stack event callback %r failed on %s", callback, event)


__all__ = ["EVENTS", "StackEvent", "Subscribers"]

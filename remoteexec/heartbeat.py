"""Heartbeats: how the master and each host learn that the other went silent.

A silent partition never closes a stream: the ssh client and the context
both wait forever. So the master sends each context a beat every
``interval`` seconds; the context's watchdog acknowledges each one and, when
beats stop for ``heartbeat_timeout``, kills the run's processes and exits.
On this side a :class:`Heartbeat` per host records the acks and declares the
host lost when they stop for as long, and one :class:`HeartbeatMonitor`
thread per master drives every host's heartbeat.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional, Protocol

import mitogen.core

#: Called with the reason a host is lost and whether its connection must be
#: cut (True when acks stopped on a stream that still looks open).
LostCallback = Callable[[str, bool], None]


class Beating(Protocol):
    """What the monitor drives: anything that beats."""

    def beat(self, now: float, timeout: float) -> None:
        """Send one beat at ``now`` (time.monotonic()); act when the last
        ack is older than ``timeout``."""


class Heartbeat:
    """One host's beats and acks.

    :param context: the host's mitogen context.
    :param handle: the handle of the context's watchdog, where beats go.
    :param on_lost: called once when the host is found lost (see
        :data:`LostCallback`); the heartbeat stops by itself then.
    """

    def __init__(self, context: Any, handle: int, on_lost: LostCallback) -> None:
        self.context = context
        self.handle = handle
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._stopped = False
        #: time.monotonic() of the last ack (of the start, before the first).
        self.last_ack = time.monotonic()
        #: Where the acks come back: a handler that dies with the context.
        self.ack_handle: int = context.router.add_handler(
            fn=self._on_ack, persist=True, respondent=context
        )

    @property
    def stopped(self) -> bool:
        """No more beats: the host was closed or found lost."""
        return self._stopped

    def stop(self) -> None:
        """Send no more beats (the host is closed or lost)."""
        self._stopped = True

    def _lost(self, reason: str, cut: bool) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._on_lost(reason, cut)

    def _on_ack(self, msg: mitogen.core.Message) -> None:
        if msg.is_dead:
            self._lost("the context's connection closed", False)
        else:
            self.last_ack = time.monotonic()

    def beat(self, now: float, timeout: float) -> None:
        """Send one beat; declare the host lost when acks stopped."""
        if self._stopped:
            return
        if now - self.last_ack > timeout:
            self._lost(
                "no heartbeat reply for %.1fs (host down or network partition)" % timeout, True
            )
            return
        msg = mitogen.core.Message.pickled(None, handle=self.handle, reply_to=self.ack_handle)
        try:
            self.context.send(msg)
        except mitogen.core.Error:
            self._lost("could not send a heartbeat", False)


class HeartbeatMonitor:
    """The one thread that beats every watched host each ``interval`` seconds.

    :param timeout: seconds without acks after which a host is lost.
    :param interval: seconds between beats.
    """

    def __init__(
        self, timeout: float, interval: float, *, name: str = "remoteexec-heartbeat"
    ) -> None:
        self.timeout = timeout
        self.interval = interval
        self._members: List[Beating] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._loop, name=name, daemon=True
        )
        self._thread.start()

    def watch(self, member: Beating) -> None:
        """Beat ``member`` from the next round on."""
        with self._lock:
            if member not in self._members:
                self._members.append(member)

    def unwatch(self, member: Beating) -> None:
        """Beat ``member`` no more (a no-op when it is not watched)."""
        with self._lock:
            if member in self._members:
                self._members.remove(member)

    @property
    def members(self) -> List[Beating]:
        """What is watched, in the order it was added."""
        with self._lock:
            return list(self._members)

    @property
    def running(self) -> bool:
        """The thread runs: :meth:`stop` was not called."""
        return not self._stop.is_set()

    def beat_all(self, now: float) -> None:
        """One round: beat every member (the thread calls it each interval)."""
        for member in self.members:
            member.beat(now, self.timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat_all(time.monotonic())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating, and wait up to ``timeout`` s for the thread to end."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


__all__ = ["Beating", "Heartbeat", "HeartbeatMonitor", "LostCallback"]

"""Host: how the master waits for replies from a context."""

from __future__ import annotations

import threading
from typing import Any, List, Tuple

import mitogen.core

import remoteexec as rx


def test_waits_never_sleep_in_a_latch_with_a_timeout(master: rx.Master) -> None:
    """mitogen's Latch.get(timeout=...) races put(): the wake-up byte of a
    put that loses the race lands in a socketpair already back in mitogen's
    pool, and a later wait elsewhere fails with "AssertionError: Cookie
    incorrect" (seen in our suite). Replies are awaited without it: record
    every blocking Latch.get made by this thread during calls that outlive
    several of the 0.25 s lost-host polls."""
    host = master.local()
    me = threading.get_ident()
    seen: List[Tuple[Any, bool]] = []
    original = mitogen.core.Latch.get

    def recording(self: Any, timeout: Any = None, block: bool = True) -> Any:
        if threading.get_ident() == me:
            seen.append((timeout, block))
        return original(self, timeout=timeout, block=block)

    mitogen.core.Latch.get = recording  # type: ignore[method-assign]
    try:
        assert host.run(["sleep", "0.6"], timeout=5).ok
        assert host.service("ping")["ok"]
    finally:
        mitogen.core.Latch.get = original  # type: ignore[method-assign]
    assert seen, "the calls were awaited through the latch"
    timed = [(timeout, block) for timeout, block in seen if block and timeout is not None]
    assert not timed, "blocking Latch.get with a timeout: %r" % timed

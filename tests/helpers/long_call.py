"""A long Host.call the test can see start and can end: runs on the host."""

import os
import time


def hold(started: str, release: str, limit: float) -> str:
    """Create ``started``, then wait until ``release`` exists (at most
    ``limit`` seconds): a call on the context's main thread that stays in
    flight exactly as long as the test wants."""
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if os.path.exists(release):
            return "released"
        time.sleep(0.01)
    return "limit"

"""Target-side timings for bench_commands (shipped to the lab host by mitogen).

Standard library only: it runs inside the host's context.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from typing import Callable, Dict


def _median_ms(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(10, n)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def spawn_costs(n: int = 100) -> Dict[str, float]:
    """Median ms to spawn and reap ``true`` in this (multi-threaded) context:
    as Host.run does it (Popen: vfork, new session, close_fds, two pipes,
    communicate) and with bare posix_spawn + waitpid (no pipes, no fd
    closing: the floor, not an option)."""

    def popen() -> None:
        child = subprocess.Popen(
            ["true"],
            close_fds=True,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child.communicate()

    def posix_spawn() -> None:
        pid = os.posix_spawnp("true", ["true"], os.environ, setsid=True)
        os.waitpid(pid, 0)

    return {"popen": _median_ms(popen, n), "posix_spawn": _median_ms(posix_spawn, n)}

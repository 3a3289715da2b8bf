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


def stamp() -> float:
    """This context's monotonic clock (lab hosts share the master's kernel, so
    the master can split a round trip into its two halves)."""
    return time.monotonic()


def _quick_stamp() -> float:
    return time.monotonic()


try:  # marked quick when the target side of remoteexec is importable (always, in a context)
    from remoteexec.target.quick import quick as _quick

    quick_stamp = _quick(_quick_stamp)
except ImportError:  # pragma: no cover
    quick_stamp = _quick_stamp


def spawn_parts(n: int = 100) -> Dict[str, float]:
    """Median ms of each way to spawn and reap ``true`` in this context, as
    Host.run does it (``remoteexec.target.run.run``: marker, guard, Popen with
    two pipes, communicate) and the cheaper mechanics it could use."""
    from remoteexec.target import run as run_module

    env = dict(os.environ)

    def popen(close_fds: bool, pipes: bool) -> Callable[[], None]:
        out = subprocess.PIPE if pipes else subprocess.DEVNULL

        def go() -> None:
            child = subprocess.Popen(
                ["true"],
                close_fds=close_fds,
                start_new_session=True,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            child.communicate()

        return go

    def spawn_pipes() -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w1, 1),
            (os.POSIX_SPAWN_DUP2, w2, 2),
        ]
        pid = os.posix_spawnp("true", ["true"], env, setsid=True, file_actions=actions)
        os.close(w1)
        os.close(w2)
        for r in (r1, r2):
            while os.read(r, 65536):
                pass
            os.close(r)
        os.waitpid(pid, 0)

    def bare() -> None:
        pid = os.posix_spawnp("true", ["true"], env, setsid=True)
        os.waitpid(pid, 0)

    return {
        "run": _median_ms(lambda: run_module.run(["true"]), n),
        "popen": _median_ms(popen(True, True), n),
        "popen_keep_fds": _median_ms(popen(False, True), n),
        "popen_no_pipes": _median_ms(popen(True, False), n),
        "posix_spawn_pipes": _median_ms(spawn_pipes, n),
        "posix_spawn": _median_ms(bare, n),
    }

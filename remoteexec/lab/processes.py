"""The lab's view of processes: liveness by pid *and* start time, and killing.

A pid alone may name a later process that reused it; a lab's records keep the
start time next to the pid, so a recycled pid is never mistaken for, or killed as,
the lab's.  /proc is read through :mod:`remoteexec.target.procs`, the one parser.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Callable, Iterable, List, Optional, Tuple

from remoteexec.target import procs

__all__ = [
    "kill_pids",
    "proc_alive",
    "proc_cmdline",
    "proc_start_time",
    "read_pid_file",
]

#: (state, ppid, session, start time) of a pid, or None: a typed view of the
#: target side's parser (the target side is annotated without strict's rules).
_stat_fields: Callable[[int], Optional[Tuple[str, int, int, int]]] = procs.stat_fields


def proc_start_time(pid: int) -> Optional[int]:
    """Kernel start time (clock ticks since boot) of a live, non-zombie ``pid``, else None."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[3]


def proc_alive(pid: Optional[int]) -> bool:
    """Whether ``pid`` names a live, non-zombie process."""
    return pid is not None and pid > 0 and proc_start_time(pid) is not None


def proc_cmdline(pid: int) -> List[str]:
    """The argv of ``pid`` ([] if it is gone or has none)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def read_pid_file(path: str) -> Optional[int]:
    """The pid in a pid file, or None if it is missing or holds no number."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def kill_pids(pids: Iterable[int], *, timeout: float = 3.0) -> List[int]:
    """SIGTERM ``pids``, wait up to ``timeout``, SIGKILL the rest; return pids still alive.

    Never this process nor pid 1."""
    left = [p for p in set(pids) if p > 1 and p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2.0)
        for _ in range(100000):
            left = [p for p in left if proc_alive(p)]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if not left:
            break
    return left

"""Target-side timings for bench_commands (shipped to the lab host by mitogen).

Standard library only: it runs inside the host's context.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Optional


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


def spawn_parts(n: int = 100, idle: float = 0.0003) -> Dict[str, float]:
    """Median ms of each way to spawn and reap ``true`` in this context: as
    Host.run does it (``remoteexec.target.run.run``: marker, guard told,
    Popen with two bare pipes read by one poll loop), its parts, and the
    cheaper mechanics it could use. Measured interleaved (10 rounds), so a
    change of load hits every row alike. ``posix_spawn_idle`` is the bare
    spawn after an untimed pause of ``idle`` seconds, as between two lane
    requests (the CPUs may go idle meanwhile: waking them costs)."""
    from remoteexec.target import procs
    from remoteexec.target import run as run_module
    from remoteexec.target.guardlink import GUARD

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

    def bare_pipes(tell: bool) -> Callable[[], None]:
        def go() -> None:
            pipes = run_module.Pipes(None)
            stdin, stdout, stderr = pipes.child_ends()
            earliest = procs.boot_ticks()
            try:
                child = subprocess.Popen(
                    ["true"],
                    close_fds=True,
                    start_new_session=True,
                    env=env,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                )
            finally:
                pipes.started()
            if tell:
                GUARD.tell(child.pid, earliest, procs.boot_ticks())
            pipes.pump(None)
            child.wait()

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

    ops: Dict[str, Callable[[], object]] = {
        "run": lambda: run_module.run(["true"]),
        "popen_told": bare_pipes(True),
        "popen_bare_pipes": bare_pipes(False),
        "popen": popen(True, True),
        "popen_keep_fds": popen(False, True),
        "popen_no_pipes": popen(True, False),
        "posix_spawn_pipes": spawn_pipes,
        "posix_spawn": bare,
        "posix_spawn_idle": bare,
        # A window no process started in: the guard keeps no session for it.
        "tell_self": lambda: GUARD.tell(os.getpid(), 0, 0),
    }
    for fn in ops.values():
        fn()
    return interleaved_medians(ops, n, pauses={"posix_spawn_idle": idle})


def interleaved_medians(
    ops: Dict[str, Callable[[], object]], n: int, pauses: Optional[Dict[str, float]] = None
) -> Dict[str, float]:
    """Median ms of each op, ``n`` runs each, in 10 interleaved blocks (so a
    load change hits every op alike); an op named in ``pauses`` runs after
    an untimed sleep of that many seconds each time."""
    samples: Dict[str, List[float]] = {name: [] for name in ops}
    for _ in range(10):
        for name, fn in ops.items():
            pause = (pauses or {}).get(name, 0.0)
            for _ in range(max(1, n // 10)):
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


def lane_costs(n: int = 2000) -> Dict[str, float]:
    """Median ms of the lane thread's own work for one ``Host.call`` of
    :func:`stamp` (read the request's pickle, call, pickle the reply:
    ``frame(answer(body))``), and of pickling a ``Host.run(["true"])``
    reply, in this context; no I/O."""
    from remoteexec.target import lane

    body = lane.frame(("call", __name__, "stamp", (), {}))[lane.HEADER.size :]
    reply = {"ok": True, "returncode": 0, "stdout": b"", "stderr": b"", "duration": 0.001}
    ops: Dict[str, Callable[[], object]] = {
        "call": lambda: lane.frame(lane.answer(body)),
        "run_reply": lambda: lane.frame(reply),
    }
    return interleaved_medians(ops, n)

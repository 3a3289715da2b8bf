"""The keeper of one detached service: its parent, its log writer, its exit recorder.

A detached service must outlive the context that started it, keep its
output bounded for weeks, and leave its exit code for a later ``status``.
The context cannot do any of that once it is gone, so each detached
service gets a keeper: a small ``python3 -I -S`` process (this file, run
as a script; stdlib only) that

- leads a session of its own and forks the service into it, as the leader
  of its own process group (the supervisor's ``pid`` is the service's, so
  a stop signals the service's group), with stdout and stderr on a pipe
  the keeper reads;
- appends that output to the service's 0600 log, rotating it when it grows
  past ``CAP`` bytes (``LOG`` → ``LOG.1`` → ... → ``LOG.KEEP``, the oldest
  dropped): at most ``(KEEP + 1) * CAP`` bytes per service, for ever;
- applies the restart policy for as long as it lives, whether or not a
  master does: with ``RESTARTS`` > 0, a service that exits non-zero (or is
  killed by a signal) is started again after ``BACKOFF`` seconds (at least
  :data:`GRACE`), doubling up to :data:`MAX_BACKOFF`, at most ``RESTARTS``
  times, each restart noted in the log; ``EXIT.run`` holds the running
  service's pid and the restarts so far;
- outlives a stop without acting on it: SIGTERM/SIGINT/SIGHUP/SIGQUIT reach
  the service (a stop signals its group) and only tell the keeper not to
  restart it, as does an ``EXIT.stop`` file that a stop writes first (the
  keeper may see the service end before its own signal arrives); then it
  reads EOF, waits for the service, writes its exit code (as Popen's
  ``returncode``: minus the signal that killed it) to ``EXIT``, and exits
  the same way, so the supervisor's ``poll()`` sees the service's code.

Its environment is the service's (the marker included), and a keeper never
rewrites it: identity checks read the keeper, whatever the service (Tarantool)
does to its own process title and environment.

Usage: ``python3 -I -S keeper.py LOG CAP KEEP EXIT [RESTARTS BACKOFF] -- COMMAND...``
"""

import os
import select
import signal
import sys
import time
from typing import Callable, List, Optional

#: Signals the keeper leaves to its service.
PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: Bytes read from the service's pipe at a time.
CHUNK = 65536
#: The shortest wait before a restart: a stop's signal reaches the keeper
#: within it even when the service ended first.
GRACE = 0.2
#: The longest wait between two restarts, however often the backoff doubled.
MAX_BACKOFF = 30.0
#: How often a keeper with restarts left looks whether its service failed
#: while its output stays open (children of it hold the pipe).
WATCH = 0.25

#: Set by a stop signal: the service is not started again.
stopping = False


def on_stop(_sig: int, _frame: object) -> None:
    global stopping
    stopping = True


def rotate(path: str, keep: int) -> None:
    """``path`` → ``path.1`` → ... → ``path.keep``; the oldest is dropped (keep 0: truncate)."""
    if keep <= 0:
        os.truncate(path, 0)
        return
    for i in range(keep - 1, 0, -1):
        older = "%s.%d" % (path, i)
        if os.path.exists(older):
            os.replace(older, "%s.%d" % (path, i + 1))
    os.replace(path, path + ".1")


def open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def start(command: List[str], write_fd: int) -> int:
    """Fork and exec ``command`` with stdout+stderr on ``write_fd``; the child's pid."""
    # The stop signals stay blocked until the child has their default actions
    # back: one sent the moment its pid is known is held, not lost to the
    # keeper's handler that the child inherits.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        # Here too, not only in the child: once this returns, the group exists
        # for whoever reads the pid (a stop may signal it at once).
        try:  # noqa: SIM105
            os.setpgid(pid, pid)
        except OSError:  # the child did it and exec'd already (EACCES)
            pass
        return pid
    try:
        for sig in PASSED_ON:
            signal.signal(sig, signal.SIG_DFL)
        # Its own process group in the keeper's session: a stop signals the
        # service's group, which the keeper is not in (it follows by EOF).
        os.setpgid(0, 0)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a held stop acts now
        os.execvp(command[0], command)
    except BaseException as e:  # exec failed: say so in the log
        os.write(2, ("remoteexec keeper: cannot run %s: %s\n" % (command[0], e)).encode())
    os._exit(127)


def copy(
    read_fd: int, log: str, cap: int, keep: int, give_up: Optional[Callable[[], bool]] = None
) -> None:
    """Append the pipe's data to ``log`` until EOF, rotating past ``cap``
    bytes; or until ``give_up()``, asked every :data:`WATCH` seconds."""
    fd = open_log(log)
    size = os.fstat(fd).st_size
    next_look = time.monotonic() + WATCH
    while True:
        if give_up is not None:
            ready, _, _ = select.select([read_fd], [], [], WATCH)
            if time.monotonic() >= next_look or not ready:
                next_look = time.monotonic() + WATCH
                if give_up():
                    break
            if not ready:
                continue
        try:
            chunk = os.read(read_fd, CHUNK)
        except InterruptedError:
            continue
        if not chunk:
            break
        os.write(fd, chunk)
        size += len(chunk)
        if size >= cap:
            os.close(fd)
            rotate(log, keep)
            fd = open_log(log)
            size = os.fstat(fd).st_size
    os.close(fd)


def record(path: str, line: bytes) -> None:
    """Replace ``path`` (0600) with ``line`` at once: a reader never sees half."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.write(fd, line + b"\n")
    os.close(fd)
    os.replace(tmp, path)


def stopped(exit_path: str) -> bool:
    return stopping or os.path.exists(exit_path + ".stop")


def run_once(
    command: List[str], log: str, cap: int, keep: int, exit_path: str, restarts: int, limit: int
) -> int:
    """Start the service, copy its output until EOF, reap it: its exit code.

    A service that fails while children of it keep the pipe open (no EOF) is
    seen within :data:`WATCH` seconds when a restart is due: what is left of
    its process group is killed, as systemd does before a restart. An exit 0
    is followed to EOF, as before: a daemonizer's output stays in the log.
    """
    read_fd, write_fd = os.pipe()
    pid = start(command, write_fd)
    os.close(write_fd)
    record(exit_path + ".run", b"%d %d" % (pid, restarts))
    ended: List[int] = []

    def failed_for_a_restart() -> bool:
        if not ended:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended.append(os.waitstatus_to_exitcode(status))
        if not ended or ended[0] == 0 or restarts >= limit or stopped(exit_path):
            return False
        # Its group outlives it only while members live. (No contextlib: it
        # would cost the keeper's start.)
        try:  # noqa: SIM105
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        return True

    copy(read_fd, log, max(1024, cap), keep, failed_for_a_restart)
    os.close(read_fd)
    if ended:
        return ended[0]
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def pause(seconds: float, exit_path: str) -> bool:
    """Sleep ``seconds`` unless a stop comes; whether none came."""
    deadline = time.monotonic() + seconds
    while not stopped(exit_path):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))
    return False


def main(argv: List[str]) -> None:
    head = argv[: argv.index("--")]
    command = argv[len(head) + 1 :]
    log, cap, keep, exit_path = head[0], int(head[1]), int(head[2]), head[3]
    limit = int(head[4]) if len(head) > 4 else 0
    backoff = float(head[5]) if len(head) > 5 else 1.0
    for sig in PASSED_ON:
        signal.signal(sig, on_stop)
    if os.path.exists(exit_path + ".stop"):
        os.unlink(exit_path + ".stop")  # a previous run's stop
    restarts = 0
    while True:
        code = run_once(command, log, cap, keep, exit_path, restarts, limit)
        if code == 0 or restarts >= limit or stopped(exit_path):
            break
        # A stop's signal may reach the keeper after the service's end: it
        # comes within GRACE, before anything says "restarting".
        if not pause(GRACE, exit_path):
            break
        delay = max(GRACE, backoff)
        note = "remoteexec keeper: %s exited with %d; restarting in %gs (%d of %d)\n" % (
            command[0],
            code,
            delay,
            restarts + 1,
            limit,
        )
        fd = open_log(log)
        os.write(fd, note.encode("utf-8", "replace"))
        os.close(fd)
        record(exit_path + ".run", b"0 %d" % restarts)  # none runs: a restart pending
        if not pause(delay - GRACE, exit_path):
            break
        restarts += 1
        backoff = min(backoff * 2, MAX_BACKOFF)
    record(exit_path + ".run", b"0 %d" % restarts)
    record(exit_path, b"%d" % code)
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be handled
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    main(sys.argv[1:])

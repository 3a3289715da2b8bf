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
- ignores SIGTERM/SIGINT/SIGHUP itself (the service gets them, ends, and
  the keeper reads EOF), waits for the service, writes its exit code (as
  Popen's ``returncode``: minus the signal that killed it) to ``EXIT``, and
  exits the same way, so the supervisor's ``poll()`` sees the service's code.

Its environment is the service's (the marker included), and a keeper never
rewrites it: identity checks read the keeper, whatever the service (Tarantool)
does to its own process title and environment.

Usage: ``python3 -I -S keeper.py LOG CAP KEEP EXIT -- COMMAND...``
"""

import os
import signal
import sys
from typing import List

#: Signals the keeper leaves to its service.
PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: Bytes read from the service's pipe at a time.
CHUNK = 65536


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
    pid = os.fork()
    if pid:
        return pid
    try:
        for sig in PASSED_ON:
            signal.signal(sig, signal.SIG_DFL)
        # Its own process group in the keeper's session: a stop signals the
        # service's group, which the keeper is not in (it follows by EOF).
        os.setpgid(0, 0)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.execvp(command[0], command)
    except BaseException as e:  # exec failed: say so in the log
        os.write(2, ("remoteexec keeper: cannot run %s: %s\n" % (command[0], e)).encode())
    os._exit(127)


def copy(read_fd: int, log: str, cap: int, keep: int) -> None:
    """Append the pipe's data to ``log`` until EOF, rotating past ``cap`` bytes."""
    fd = open_log(log)
    size = os.fstat(fd).st_size
    while True:
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


def record_exit(path: str, code: int) -> None:
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.write(fd, b"%d\n" % code)
    os.close(fd)
    os.replace(tmp, path)


def main(argv: List[str]) -> None:
    log, cap, keep, exit_path = argv[0], int(argv[1]), int(argv[2]), argv[3]
    command = argv[5:]
    for sig in PASSED_ON:
        signal.signal(sig, signal.SIG_IGN)
    read_fd, write_fd = os.pipe()
    pid = start(command, write_fd)
    os.close(write_fd)
    copy(read_fd, log, max(1024, cap), keep)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    record_exit(exit_path, code)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    main(sys.argv[1:])

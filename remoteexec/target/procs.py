"""The target's process table: psutil when present, /proc otherwise.

Only what the supervisor needs: find processes by an exact environment
marker, tell whether a pid is alive, find who owns a listening TCP port or
unix socket (for AlreadyRunning messages), and reap orphaned zombies without
taking a child that its own spawner is waiting for.

This module is also shipped, as source, into the guard process
(:mod:`.guard`), which runs with ``python3 -I -S``: keep it stdlib only and
cheap to import (no contextlib: it alone costs the guard ~5 ms of startup).
"""

from __future__ import annotations

import os
import threading
import time

# typing is not imported at run time: the guard imports this module and
# would pay for it (mypy reads the names below all the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, TypeVar

    class HasPid(Protocol):
        pid: int

    T = TypeVar("T", bound=HasPid)


def _local_psutil() -> Any:
    """psutil if the target's own Python has it, else None.

    psutil is a C extension: mitogen cannot ship it, so it is optional. Asked
    of the target's path only: a plain import would have mitogen ship the
    master's pure-Python half of psutil (five modules) to fail on the C part.
    """
    import importlib.machinery

    if importlib.machinery.PathFinder.find_spec("psutil") is None:
        return None
    try:
        import psutil
    except ImportError:  # pragma: no cover - depends on the target
        return None
    return psutil


psutil = _local_psutil()

HAVE_PSUTIL = psutil is not None

#: The environment variable that marks every process of a run.
MARKER = "REMOTEEXEC_RUN"


def all_pids() -> List[int]:
    """Every pid in /proc (threads excluded), as ints."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


#: Whether the kernel lists each task's children (/proc/PID/task/TID/children,
#: CONFIG_PROC_CHILDREN): then a subtree is read in a few files instead of a
#: scan of every process on the machine, which costs milliseconds per call on
#: a busy host and runs in every stop's wait loop.
CHILDREN_LISTS = os.path.exists("/proc/self/task/%d/children" % os.getpid())

#: Bound on a subtree walk: far above any tree a run starts.
MAX_DESCENDANTS = 100000


def children(pid: int) -> List[int]:
    """Child pids of ``pid``, zombies included ([] when it is gone).

    Needs :data:`CHILDREN_LISTS`. A thread that ends between the listing and
    the read has no children left to list.
    """
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    found: List[int] = []
    for tid in tasks:
        data = _read("/proc/%d/task/%s/children" % (pid, tid))
        if data:
            found.extend(int(x) for x in data.split())
    return found


def descendants(pid: int) -> Optional[List[int]]:
    """Every descendant of ``pid`` (zombies included), or None where the
    kernel cannot list children (then scan :func:`all_pids`)."""
    if not CHILDREN_LISTS:
        return None
    found: List[int] = []
    todo = [pid]
    while todo and len(found) < MAX_DESCENDANTS:
        kids = children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def read_environ(pid: int) -> Optional[Dict[str, str]]:
    """Return the environment of ``pid`` as a dict, or None if unreadable."""
    data = _read("/proc/%d/environ" % pid)
    if data is None:
        return None
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def pids_with_marker(
    name: str,
    value: Optional[str] = None,
    run_prefix: Optional[str] = None,
    within: Optional[int] = None,
) -> List[int]:
    """Pids whose environment variable ``name`` equals ``value`` exactly.

    With ``run_prefix`` instead, match values equal to it or starting with
    ``<run_prefix>.``: every process of a run (``run_id``) or of one context
    of it (``run_id.token``). Matching is exact per dot-separated part (never
    a substring), so another run's processes are never touched.

    With ``within`` (a pid), only its descendants are searched, where the
    kernel can list them; otherwise every process.
    """
    me = os.getpid()
    found = []
    subtree = descendants(within) if within is not None else None
    for pid in all_pids() if subtree is None else subtree:
        if pid == me:
            continue
        env = read_environ(pid)
        if not env or name not in env:
            continue
        got = env[name]
        if in_run(got, run_prefix) or (value is not None and got == value):
            found.append(pid)
    return found


def in_run(value: Optional[str], run_prefix: Optional[str]) -> bool:
    """True when marker ``value`` belongs to ``run_prefix`` (equal to it, or
    ``<run_prefix>.<more>``): whole dot-separated parts, never a substring."""
    if run_prefix is None or value is None:
        return False
    return value == run_prefix or value.startswith(run_prefix + ".")


def _read(path: str) -> Optional[bytes]:
    # Bare fds: open, read to EOF, close. open() adds an fstat, an isatty
    # ioctl and two seeks, on every spawn (the guard's tell reads the stat).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_stat(pid: int) -> Optional[List[bytes]]:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp,
    session...: field N of proc(5) is item N-3), or None when it is gone.

    The one parser of that file: the command name may contain spaces and
    parentheses, so it splits after the last ')'.
    """
    data = _read("/proc/%d/stat" % pid)
    if not data:
        return None
    return data[data.rfind(b")") + 2 :].split()


def exit_status(pid: int) -> Tuple[bool, Optional[int]]:
    """(exited, exit code or None) of a child that nobody here reaps.

    A zombie's wait status is field 52 of /proc/PID/stat (Linux 3.5+): its
    exit code, or minus the signal that killed it. A pid that is gone has
    exited with a code nobody can tell any more.
    """
    fields = proc_stat(pid)
    if not fields:
        return True, None
    if fields[0] not in (b"Z", b"X"):
        return False, None
    if len(fields) < 50:
        return True, None
    status = int(fields[49])
    return True, (status >> 8 if status & 0x7F == 0 else -(status & 0x7F))


def stat_fields(pid: int) -> Optional[Tuple[str, int, int, int]]:
    """(state, ppid, session, start time in clock ticks since boot) of ``pid``,
    or None when it is gone.

    The start time tells a pid from a later process that reused it.
    """
    fields = proc_stat(pid)
    if not fields or len(fields) < 20:
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[1]), int(fields[3]), int(fields[19])
    except ValueError:
        return None


#: /proc/PID/stat's start time unit (USER_HZ, clock ticks per second).
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in /proc/PID/stat's start time unit: clock ticks since boot,
    rounded down as the kernel rounds a start time. A process forked
    between two readings has a start time between them, known without
    reading /proc (0.04 ms for a child that is still exec'ing)."""
    # Linux has CLOCK_BOOTTIME; elsewhere there are no /proc start times to
    # compare with, and any clock keeps a spawn from failing.
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime_ns(clock) // (1000000000 // TICKS_PER_SECOND)


def state(pid: int) -> Optional[str]:
    """The kernel's one-letter state of ``pid`` ('R', 'S', 'Z', ...) or None."""
    fields = proc_stat(pid)
    return fields[0].decode("ascii", "replace") if fields else None


def zombie_children(exclude_session: int) -> List[int]:
    """Our zombie children whose session is not ``exclude_session``.

    A zombie keeps its session id, so orphans of the trees we started (each
    in a session of its own) can be told from children that other code in
    this interpreter started in our own session.
    """
    me = os.getpid()
    found = []
    for pid in children(me) if CHILDREN_LISTS else all_pids():
        fields = proc_stat(pid)
        if not fields or fields[0] != b"Z" or int(fields[1]) != me:
            continue
        if int(fields[3]) != exclude_session:
            found.append(pid)
    return found


# -- children that their spawner waits for itself -------------------------
#
# The supervisor is a child subreaper: orphans of its trees become its
# children, and someone must reap them or they stay zombies. That reaper must
# never take a child that other target code spawned and is waiting for (a
# Popen, tarantool --version): its waitpid would then fail with ECHILD. So
# every such spawn happens under SPAWN_LOCK and is registered in the same
# critical section as the fork, and the reaper takes the same lock and skips
# registered children. Registration is keyed by the spawner's object, not
# the pid, so a late release can never unregister a newer child that reused
# the pid.

#: Held by spawners across fork+registration and by the reaper around each wait.
SPAWN_LOCK = threading.Lock()
_waited: Dict[int, int] = {}


def spawn_waited(start: Callable[[], T]) -> T:
    """Call ``start()``, which forks one child and returns an object with
    ``.pid`` (a Popen), and register that child as waited for by its caller.

    The caller must :func:`release_waited` the object once it has reaped the
    child. Returns what ``start()`` returned.
    """
    with SPAWN_LOCK:
        child = start()
        _waited[id(child)] = child.pid
    return child


def release_waited(child: Any) -> None:
    """The spawner of ``child`` has reaped it (or gave up): the reaper may
    take that pid again. Idempotent."""
    with SPAWN_LOCK:
        _waited.pop(id(child), None)


def reap_orphans() -> None:
    """Reap zombie children that nobody waits for: orphans of our trees.

    Children of other code in this interpreter that spawned in our own
    session (``Host.call`` functions using subprocess) are left to their
    owners, as are children registered with :func:`spawn_waited`. The /proc
    scan runs outside the lock; each candidate is checked again under it,
    right before its wait.
    """
    me = os.getpid()
    own_session = os.getsid(0)
    for pid in zombie_children(exclude_session=own_session):
        with SPAWN_LOCK:
            if pid in _waited.values():
                continue
            fields = stat_fields(pid)
            if not fields or fields[0] != "Z" or fields[1] != me or fields[2] == own_session:
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # already reaped


def is_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    st = state(pid)
    return st is not None and st not in ("Z", "X")


def _socket_inode_owner(inodes: List[str]) -> Optional[int]:
    """Find the pid holding one of the socket ``inodes`` open."""
    if not inodes:
        return None
    wanted = {"socket:[%s]" % inode for inode in inodes}
    for pid in all_pids():
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    return pid
            except OSError:
                continue
    return None


def tcp_port_owner(port: int) -> Optional[int]:
    """Pid listening on TCP ``port`` (any address), or None if not visible."""
    if HAVE_PSUTIL:
        try:
            for conn in psutil.net_connections(kind="tcp"):
                listening = conn.status == psutil.CONN_LISTEN and conn.laddr
                if listening and conn.laddr[1] == port and conn.pid:
                    return conn.pid
        except (psutil.Error, OSError):
            pass
    inodes = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.append(fields[9])
    return _socket_inode_owner(inodes)


def unix_socket_owner(path: str) -> Optional[int]:
    """Pid listening on the unix socket ``path``, or None if not visible."""
    inodes = []
    try:
        with open("/proc/net/unix") as f:
            lines = f.readlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == path:
            inodes.append(fields[6])
    return _socket_inode_owner(inodes)


def describe(pid: int) -> str:
    """A short 'pid 123 (name)' text for messages."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return "pid %d (%s)" % (pid, f.read().strip())
    except OSError:
        return "pid %d" % pid

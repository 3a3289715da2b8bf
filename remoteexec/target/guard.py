"""The guard: kills a context's process trees when the context dies, however it dies.

The supervisor cleans up when the master goes away, but it cannot clean up
after its own SIGKILL (the OOM killer's choice, or a user's ``kill -9``):
its services would be reparented to pid 1 and run forever. So at
``install()`` the supervisor starts this guard, a separate small process
that:

- holds the read end of a pipe whose write end only the context holds
  (O_CLOEXEC, so no spawned service inherits it): when the context dies, the
  kernel closes the write end and the guard reads EOF;
- learns from that pipe every session the supervisor creates, as
  ``+<sid> <earliest> <latest>`` lines (the leader's start time, in
  /proc/PID/stat's clock ticks, lies between the two: this guards against
  pid reuse), because a process may rewrite its
  environment (Tarantool does, for its title) and then the
  ``REMOTEEXEC_RUN`` marker cannot find it. It waits for POLLHUP only and
  reads the lines every :data:`DRAIN_EVERY`: a spawn writes its line without
  waking the guard (a wake-up cost each ``Host.run`` ~0.06 ms on 2 cores);
- forgets, every :data:`SWEEP_EVERY`, each told session with no live process
  left (:func:`prune`). A member of a session whose leader is gone counts as
  ours (a live member keeps the number from being reused), but once the last
  one is gone the kernel may give the number to a stranger that calls
  setsid, forks and exits: its child would sit in a told session with no
  leader. What remains: a number reused within one period of being freed
  (a session that empties between two sweeps, or after the last one, and is
  reused before the next; or the pid of the process the guard checks in a
  session, reused before the next sweep) is still taken for ours. Pids are
  allocated in a cycle, so each needs the host to go through its whole pid
  space (``pid_max``, 32768 by default, less the live pids) within 2 s: over
  16,000 forks a second, and then the stranger must be a session leader
  gone before its child. Rare enough for a kill that happens only when the
  context itself is killed; exact would need to learn when a session
  empties, which Linux does not report (a cgroup per context would).
  The check costs one ``kill(pid, 0)`` per told session each 2 s (on a
  process seen in it); /proc is read only for a session whose process is
  gone. Measured over 60 s with 200 told sessions, their leaders alive or
  gone: 80 ms of CPU, as without the check; with ~9 short sessions ending a
  second too (~500 processes on the host): 420 ms, against 130 ms;
- on EOF SIGKILLs every live process carrying the context's marker prefix or
  sitting in one of those sessions, scans again until none is left (bounded
  by :data:`KILL_FOR`), and exits. On a clean close the supervisor has
  already stopped everything, the scan finds nothing and the guard exits 0
  without a word.

It runs in its own session (signals to the context's process group do not
reach it) and ignores SIGINT/SIGHUP. PR_SET_PDEATHSIG is not used: it fires
when the forking *thread* exits, and the supervisor spawns from a pool.

Why a fresh ``python3 -I -S`` and not a fork of the context: the context is a
multi-threaded interpreter (mitogen's broker, the service pool); a forked
child inherits locks other threads may hold (logging, the import lock,
mitogen's) and a copy of the context's ~30 MB heap that Python's reference
counting dirties page by page. A fresh interpreter with no site import, fed
only this module and :mod:`.procs` (stdlib only), holds no inherited fds,
threads or locks. Measured (Python 3.11, 2 cores): ready 20-35 ms after the
spawn, 25-35 ms of CPU over its whole life (a bare ``python3 -I -S`` is ~10
of them, the /proc scan at EOF 3-8), ~10 MB RSS (~5 MB PSS) against the
context's ~31 MB, and ~1.3 ms of CPU a second while it waits (its reads
every :data:`DRAIN_EVERY`), plus a /proc scan (~14 us a process on the host)
each :data:`SWEEP_EVERY` while told sessions end. The sources come over its
stdin, so nothing needs to be installed on the host.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from . import procs

# typing is not imported at run time (the guard starts with ``-I -S`` and
# should stay cheap); mypy reads the names all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

    #: Session id -> the earliest and latest start time of its leader
    #: (clock ticks since boot).
    Sessions = Dict[int, Tuple[int, int]]
    #: Session id -> the pid of one process seen in it (see :func:`prune`).
    Witnesses = Dict[int, int]

#: How long the guard keeps finding and killing after EOF.
KILL_FOR = 5.0
#: Seconds between reads of the told sessions: the context writes without
#: waking us, and a 64 KiB pipe holds ~4,000 lines, far more than it spawns
#: in that time.
DRAIN_EVERY = 0.1
#: Seconds between checks for told sessions that have no live process left
#: (see :func:`prune`): a session number is free for reuse only once its
#: last process is gone, and a session still told then would take a
#: stranger's for ours.
SWEEP_EVERY = 2.0

#: What ``python3 -I -S -c`` runs: read the module sources from stdin, make
#: them importable as remoteexec.target.*, then call :func:`main`.
BOOTSTRAP = """\
import sys, types
procs_src, guard_src = sys.stdin.buffer.read().decode("utf-8").split("\\0")
for name in ("remoteexec", "remoteexec.target"):
    pkg = types.ModuleType(name); pkg.__path__ = []; sys.modules[name] = pkg
for name, src in (("procs", procs_src), ("guard", guard_src)):
    mod = types.ModuleType("remoteexec.target." + name)
    mod.__package__ = "remoteexec.target"
    sys.modules[mod.__name__] = mod
    exec(compile(src, "<remoteexec guard: %s>" % name, "exec"), mod.__dict__)
sys.modules["remoteexec.target.guard"].main(sys.argv)
"""


def stdin_payload(procs_source: str, guard_source: str) -> bytes:
    """What the bootstrap reads from stdin: both sources, NUL-separated."""
    return (procs_source + "\0" + guard_source).encode("utf-8")


def parse(buffer: bytes, sessions: Sessions) -> bytes:
    """Take complete lines from ``buffer`` into ``sessions`` (sid ->
    earliest and latest start time); return what is left of an incomplete
    last line."""
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0][:1] == b"+":
            try:
                sessions[int(parts[0][1:])] = (int(parts[1]), int(parts[2]))
            except ValueError:
                continue
    return rest


def run_pids(prefix: str, sessions: Sessions) -> List[int]:
    """Live pids of the context: marked with ``prefix`` or in one of
    ``sessions`` (leader start time checked against pid reuse)."""
    me = os.getpid()
    # A session whose leader pid now names a different process was reused:
    # a live member keeps the sid from being reused, so a missing leader is
    # fine (prune forgets a session once it has no member left).
    valid = {}
    for sid, (earliest, latest) in sessions.items():
        leader = procs.stat_fields(sid)
        if leader is None or earliest <= leader[3] <= latest:
            valid[sid] = earliest
    found = []
    for pid in procs.all_pids():
        if pid == me:
            continue
        fields = procs.stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        sid = fields[2]
        if sid in valid and fields[3] >= valid[sid]:
            found.append(pid)
            continue
        env = procs.read_environ(pid)
        if env and procs.in_run(env.get(procs.MARKER), prefix):
            found.append(pid)
    return found


def prune(sessions: Sessions, witnesses: Optional[Witnesses] = None) -> None:
    """Drop the sessions with no live process left, before the kernel can
    give their number to a stranger's session (see :data:`SWEEP_EVERY`).

    ``witnesses`` keeps, per session, one process seen in it (the leader,
    its start time checked, or else a member): while that pid exists the
    session is kept on one ``kill(pid, 0)`` (~1 us), no /proc read. Only a
    session whose witness is gone is looked at again: its leader's stat,
    then, for those with no leader, one /proc scan for them all.
    """
    if witnesses is None:
        witnesses = {}
    unsure = {}
    for sid, (earliest, latest) in list(sessions.items()):
        if sid in witnesses and exists(witnesses[sid]):
            continue
        leader = procs.stat_fields(sid)
        if leader is None:
            unsure[sid] = earliest
        elif earliest <= leader[3] <= latest:
            witnesses[sid] = sid
        else:
            # The number names another process: our session is empty.
            del sessions[sid]
    found = members(unsure) if unsure else {}
    for sid in unsure:
        if sid in found:
            witnesses[sid] = found[sid]
        else:
            del sessions[sid]
    for sid in [s for s in witnesses if s not in sessions]:
        del witnesses[sid]


def exists(pid: int) -> bool:
    """Whether ``pid`` names a process (a zombie too: it still holds its
    number and its session's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def members(earliest: Dict[int, int]) -> Witnesses:
    """A live member of each session in ``earliest`` (sid -> the earliest
    start time of its leader: ours start later) that has one: a /proc scan."""
    found = {}
    for pid in procs.all_pids():
        fields = procs.stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        sid = fields[2]
        if sid in earliest and fields[3] >= earliest[sid]:
            found[sid] = pid
    return found


def kill_run(prefix: str, sessions: Sessions, limit: float = KILL_FOR) -> int:
    """SIGKILL the context's processes until a scan finds none (or ``limit``
    seconds pass); return how many kills were sent."""
    deadline = time.monotonic() + limit
    sent = 0
    while True:
        pids = run_pids(prefix, sessions)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except OSError:
                pass
        if not pids or time.monotonic() >= deadline:
            return sent
        # Killed processes are zombies until reaped (not counted); a parent
        # that forked between the scan and the kill shows its child next scan.
        time.sleep(0.005)


def drain(fd: int, buffer: bytes, sessions: Sessions) -> Tuple[bytes, bool]:
    """Read what is in pipe ``fd`` (non-blocking) into ``sessions``; return
    the incomplete last line and whether the context closed its end (EOF)."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return buffer, False
        if not data:
            return buffer, True
        buffer = parse(buffer + data, sessions)


def main(argv: Sequence[str]) -> None:
    """``guard PREFIX FD``: watch pipe FD, kill PREFIX's processes at EOF."""
    prefix, fd = argv[1], int(argv[2])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # The handshake: the supervisor waits for this line, then we go quiet
    # (stdout/stderr become /dev/null, so nothing can block on a full pipe).
    os.write(1, b"ready\n")
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)
    sessions: Sessions = {}
    buffer = b""
    witnesses: Witnesses = {}
    sweep_at = time.monotonic() + SWEEP_EVERY
    os.set_blocking(fd, False)
    # No POLLIN: a told session does not wake us (on 2 cores that wake-up
    # cost every spawn ~0.06 ms). POLLHUP is always reported: the context's
    # end closing wakes us at once; the lines are read every DRAIN_EVERY.
    watch = select.poll()
    watch.register(fd, 0)
    ended = False
    while not ended:
        watch.poll(int(DRAIN_EVERY * 1000))
        buffer, ended = drain(fd, buffer, sessions)
        if sessions and not ended and time.monotonic() >= sweep_at:
            prune(sessions, witnesses)
            sweep_at = time.monotonic() + SWEEP_EVERY
    os.close(fd)
    kill_run(prefix, sessions)
    sys.exit(0)

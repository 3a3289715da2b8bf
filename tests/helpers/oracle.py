"""The tests' own view of a run's processes, read straight from /proc.

The leftover checks must not use ``remoteexec.target.procs``: a bug in the
product's marker matching would then hide itself. This module shares no
code with it. Lab hosts are network namespaces only, so they share this
machine's pid space and /proc here sees their processes too.

A process belongs to a run when it is alive (not a zombie) and:

- its environment has ``REMOTEEXEC_RUN`` equal to ``<run_id>`` or starting
  with ``<run_id>.`` (the supervisor marks every process it spawns); or
- it descends from one of the run's contexts (``Host.info["pid"]``), which
  catches a process that dropped the marker from its environment; or
- it is in the session of a process found so far, which catches one that
  dropped the marker and left the context's tree. The sessions of the
  contexts themselves and of this process are never taken (a local context
  shares the test's session).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

MARKER = b"REMOTEEXEC_RUN"


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the oracle needs."""

    pid: int
    state: str
    ppid: int
    session: int
    start: int  # clock ticks after boot: tells a pid from a reused one

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def proc_file(pid: int, name: str) -> Optional[bytes]:
    """The bytes of /proc/PID/NAME, or None when the process is gone."""
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def stat(pid: int) -> Optional[Stat]:
    """/proc/PID/stat parsed, or None when the process is gone."""
    data = proc_file(pid, "stat")
    if data is None:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return Stat(pid, fields[0].decode(), int(fields[1]), int(fields[3]), int(fields[19]))


def table() -> Dict[int, Stat]:
    """Every process on the machine now."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st is not None:
                found[st.pid] = st
    return found


def marker(pid: int) -> Optional[str]:
    """The value of REMOTEEXEC_RUN in the environment of ``pid``, or None."""
    data = proc_file(pid, "environ")
    if data is None:
        return None
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key == MARKER:
            return value.decode("utf-8", "replace")
    return None


def identity(pid: int) -> Optional[Tuple[int, int]]:
    """(pid, start time) of a live process, or None: compare two of them to
    tell whether a pid still names the same process."""
    st = stat(pid)
    return (pid, st.start) if st is not None and st.alive else None


#: In the guard's command line (its ``-c`` bootstrap names its modules so).
GUARD_SIGN = b"<remoteexec guard: "


def is_guard(pid: int) -> bool:
    """``pid`` is a context's guard (remoteexec/target/guard.py), by its command line."""
    return GUARD_SIGN in (proc_file(pid, "cmdline") or b"")


def guards(contexts: Iterable[int]) -> List[int]:
    """The guards among the children of ``contexts`` (a guard starts with its
    context's first process, so ask after that)."""
    parents = set(contexts)
    return [p for p, st in table().items() if st.ppid in parents and st.alive and is_guard(p)]


def run_processes(run_id: str, contexts: Iterable[int] = ()) -> Dict[int, str]:
    """Live processes of run ``run_id``: {pid: why it belongs to the run}.

    ``contexts``: pids of the run's contexts (``Host.info["pid"]``); their
    descendants count, they themselves do not.
    """
    procs = table()
    contexts = [pid for pid in contexts if pid in procs]
    found: Dict[int, str] = {}
    prefix = run_id + "."
    for pid, st in procs.items():
        if st.alive:
            value = marker(pid)
            if value is not None and (value == run_id or value.startswith(prefix)):
                found[pid] = "marked %s" % value
    children: Dict[int, List[int]] = {}
    for st in procs.values():
        children.setdefault(st.ppid, []).append(st.pid)
    for context in contexts:
        todo = list(children.get(context, ()))
        for _ in range(len(procs)):  # bounded: a tree cannot be larger than the table
            if not todo:
                break
            pid = todo.pop()
            if procs[pid].alive:
                found.setdefault(pid, "descends from context %d" % context)
            todo.extend(children.get(pid, ()))
    foreign = {procs[pid].session for pid in contexts}
    foreign.add(os.getsid(0))
    sessions = {procs[pid].session for pid in found} - foreign
    for pid, st in procs.items():
        if st.alive and st.session in sessions:
            found.setdefault(pid, "in session %d of the run" % st.session)
    found.pop(os.getpid(), None)
    for pid in contexts:
        found.pop(pid, None)
    for pid in list(found):  # a context's guard is its child: machinery, not a service
        if procs[pid].ppid in contexts and is_guard(pid):
            del found[pid]
    return found


def describe(pids: Iterable[int]) -> str:
    """'pid (cmdline)' for each pid, for assertion messages."""
    out = []
    for pid in pids:
        raw = proc_file(pid, "cmdline") or b""
        cmd = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        cmd = cmd or ("gone" if stat(pid) is None else "zombie")
        out.append("%d (%s)" % (pid, cmd[:120]))
    return ", ".join(out) or "none"

"""A detached project's state on one host: lock, record, status, logs, stop.

A detached stack (``stack.up(detach=True)``, ``remoteexec up -d``) leaves
its services running after the master exits. Each host keeps what a later
process needs to find them again, in a 0700 directory under the user's
state directory (``$XDG_STATE_HOME``, default ``~/.local/state``)::

    <root>/remoteexec/<project>/
        host-<host>.json   0600: per service the keeper's pid, start time,
                           session, marker, cwd, log and exit-code paths,
                           command and readiness checks; the file's hash
        host-<host>.lock   flock()ed by the context that changes the project
        keeper.py          the keeper (:mod:`.keeper`) every service runs under
        logs/<host>/       the services' bounded logs (and exit codes)
        data/<host>/       Tarantool work directories

Files are named by host, so hosts sharing a home directory (NFS, or lab
hosts on one machine) never mix. The lock is an ``fcntl.flock`` on an open
file: a holder that dies (even SIGKILLed) releases it, which is the whole
stale-lock recovery.

Identity: a pid from the state is signalled only while its start time
(``/proc/PID/stat``) is the recorded one and its environment carries the
recorded marker, or, when the environment cannot be read or was rewritten,
its working directory is the recorded one. The recorded pid is the
keeper's, which never rewrites its environment (Tarantool rewrites its
own). Every function returns a :mod:`.protocol` reply; the master calls
them through the supervisor's ``invoke``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

from . import checks, files, keeper, procs, protocol, runstate
from .guardlink import module_source
from .spawn import KILL_WAIT, safe_name, signal_pid, stop_file

#: Default size of a detached service's log before it is rotated, and how
#: many rotated files are kept: at most (LOG_KEEP + 1) * LOG_CAP bytes each.
LOG_CAP = 10 * 1024 * 1024
LOG_KEEP = 3
#: What one log read returns at most.
READ_MAX = 256 * 1024
#: Bound of one readiness probe in status.
PROBE_WAIT = 1.0

#: Locks this context holds: lock path -> open fd.
LOCKS: Dict[str, int] = {}
_LOCKS_GUARD = threading.Lock()


def default_root() -> str:
    """The user's state directory: ``$XDG_STATE_HOME`` or ``~/.local/state``."""
    return os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )


def paths(root: Optional[str], project: str, host: str) -> Dict[str, str]:
    """Where ``project``'s state for ``host`` lives under ``root`` (None: the default)."""
    base = os.path.join(root or default_root(), "remoteexec", project)
    tag = safe_name(host)
    return {
        "dir": base,
        "state": os.path.join(base, "host-%s.json" % tag),
        "lock": os.path.join(base, "host-%s.lock" % tag),
        "keeper": os.path.join(base, "keeper.py"),
        "logs": os.path.join(base, "logs", tag),
        "data": os.path.join(base, "data", tag),
    }


def private_dirs(*dirs: str) -> None:
    """Make each directory (and missing parents) 0700."""
    for d in dirs:
        os.makedirs(d, 0o700, exist_ok=True)
        os.chmod(d, 0o700)


def ensure(root: Optional[str], project: str, host: str) -> Dict[str, str]:
    """The project's paths for ``host``, the 0700 directories made."""
    p = paths(root, project, host)
    parents = [os.path.dirname(p["dir"]), p["dir"]]
    private_dirs(
        *parents, os.path.dirname(p["logs"]), p["logs"], os.path.dirname(p["data"]), p["data"]
    )
    return p


def flock_within(path: str, timeout: float) -> Optional[int]:
    """Open ``path`` (0600) and take its exclusive flock, waiting at most
    ``timeout`` seconds; the fd holding it, or None (closed) on timeout. A
    holder that dies releases the lock: that is the stale-lock recovery."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def lock(root: Optional[str], project: str, host: str, timeout: float) -> Dict[str, Any]:
    """Take the project's lock on this host (held by this context until
    :func:`unlock` or its death); wait at most ``timeout`` seconds."""
    p = ensure(root, project, host)
    with _LOCKS_GUARD:
        if p["lock"] in LOCKS:
            return {"ok": True}
    fd = flock_within(p["lock"], float(timeout))
    if fd is None:
        return protocol.error(
            "TimeoutExpired",
            "project %s on %s: another up or down holds %s (waited %gs)"
            % (project, host, p["lock"], timeout),
        )
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    with _LOCKS_GUARD:
        LOCKS[p["lock"]] = fd
    return {"ok": True}


def unlock(root: Optional[str], project: str, host: str) -> protocol.OkReply:
    """Release the project's lock on this host (no error if not held)."""
    p = paths(root, project, host)
    with _LOCKS_GUARD:
        fd = LOCKS.pop(p["lock"], None)
    if fd is not None:
        os.close(fd)  # closing the last fd of the open file releases the flock
    return {"ok": True}


def begin(
    root: Optional[str], project: str, host: str, log_cap: int, log_keep: int
) -> Dict[str, Any]:
    """From now on, every spawn of this context is detached into ``project``
    (until :func:`end`). Returns the directories (``data`` for Tarantool)."""
    p = ensure(root, project, host)
    files.write_private(p["keeper"], module_source(keeper))
    tag = uuid.uuid4().hex[:12]
    runstate.STATE.detach = {
        "project": project,
        "keeper": p["keeper"],
        "logs": p["logs"],
        "marker": "detached.%s.%s" % (safe_name(project).replace(".", "_"), tag),
        "tag": tag,
        "log_cap": int(log_cap),
        "log_keep": int(log_keep),
    }
    return {"ok": True, "dir": p["dir"], "data": p["data"], "logs": p["logs"]}


def end() -> protocol.OkReply:
    """Spawns are attached again."""
    runstate.STATE.detach = None
    return {"ok": True}


def load(path: str) -> Dict[str, Any]:
    """The state file at ``path``; an empty state if there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return {"services": {}}
    return state if isinstance(state, dict) else {"services": {}}


def cwd_of(pid: int) -> Optional[str]:
    """``pid``'s working directory (one removed since still names the path it had)."""
    with contextlib.suppress(OSError):
        path = os.readlink("/proc/%d/cwd" % pid)
        return path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path
    return None


def entry_of(proc: Any) -> Dict[str, Any]:
    """What the state file keeps of a detached process tree: its keeper
    (whose identity is checked) and the service's pid."""
    keeper_pid = proc.popen.pid if proc.popen is not None else proc.pid
    fields = procs.stat_fields(keeper_pid)
    return {
        "pid": keeper_pid,
        "service_pid": proc.pid,
        "start_time": fields[3] if fields else None,
        "session": fields[2] if fields else None,
        "marker": proc.marker,
        "cwd": cwd_of(proc.pid),
        "log": proc.log_path,
        "exit": proc.log_path + ".exit",
        "command": protocol.command_text(proc.command),
        "checks": proc.checks,
        "started": proc.started,
    }


def record(
    root: Optional[str], project: str, host: str, services: Dict[str, List[int]], file_hash: str
) -> Dict[str, Any]:
    """Write the services started now (service -> pids the master saw; the
    ones this context started detached are kept) into the host's state."""
    p = ensure(root, project, host)
    state = load(p["state"])
    with runstate.STATE.lock:
        mine = {
            proc.pid: proc
            for proc in [*runstate.STATE.procs.values(), *runstate.STATE.finished.values()]
            if proc.detach is not None
        }
    recorded = []
    for name, pids in services.items():
        entries = [entry_of(mine[pid]) for pid in pids if pid in mine]
        if entries:
            state["services"][name] = entries
            recorded.append(name)
    state.update(project=project, host=host, file_hash=file_hash, updated=time.time())
    files.write_private(p["state"], json.dumps(state, indent=1, sort_keys=True))
    return {"ok": True, "recorded": recorded}


def identical(entry: Dict[str, Any]) -> bool:
    """Whether ``entry``'s pid is still the process it recorded (see the module doc)."""
    pid = int(entry.get("pid") or 0)
    fields = procs.stat_fields(pid) if pid > 0 else None
    if fields is None or fields[0] in ("Z", "X") or fields[3] != entry.get("start_time"):
        return False
    return same_marks(pid, entry)


def exit_code(entry: Dict[str, Any]) -> Optional[int]:
    """The code the keeper recorded when its service ended, or None."""
    try:
        with open(str(entry.get("exit")), encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def current(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The running service's pid and restarts, as its keeper last wrote them
    (EXIT.run: the keeper restarts it, with or without a master)."""
    try:
        with open(str(entry.get("exit")) + ".run", encoding="ascii") as f:
            pid, restarts = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return {}
    # pid 0: between two runs (a restart pending), or after the last one.
    return {"pid": pid, "restarts": restarts} if pid > 0 else {"restarts": restarts}


def look(entry: Dict[str, Any], lines: int) -> Dict[str, Any]:
    """One process tree's state now: running (readiness re-checked),
    exited (its code) or lost; the log tail when it is not running."""
    row: Dict[str, Any] = {
        "pid": entry.get("service_pid") or entry.get("pid"),
        "keeper_pid": entry.get("pid"),
        "command": entry.get("command"),
        "log": entry.get("log"),
        "uptime": None,
        "readiness": None,
        "exit_code": None,
        "restarts": 0,
    }
    now = current(entry)
    row.update(now)
    if identical(entry):
        row["state"] = "running" if "pid" in now or not now else "restarting"
        row["uptime"] = max(0.0, time.time() - float(entry.get("started") or time.time()))
        specs = entry.get("checks") or []
        if specs:
            built = checks.build(specs, log_paths=[str(entry.get("log"))])
            ok, detail = checks.probe_all(built, PROBE_WAIT)
            row["readiness"] = "ready" if ok else "not ready: %s" % detail
        else:
            row["readiness"] = "process"
        return row
    code = exit_code(entry)
    row["state"] = "exited" if code is not None else "lost"
    row["exit_code"] = code
    row["output_tail"] = files.tail(entry.get("log"), lines)
    return row


def status(root: Optional[str], project: str, host: str, lines: int = 20) -> Dict[str, Any]:
    """Every recorded service of ``project`` on this host, looked at now."""
    state = load(paths(root, project, host)["state"])
    return {
        "ok": True,
        "host": host,
        "file_hash": state.get("file_hash"),
        "services": {
            name: [look(e, lines) for e in entries]
            for name, entries in state.get("services", {}).items()
        },
    }


def same_marks(pid: int, entry: Dict[str, Any]) -> bool:
    """``pid`` carries the entry's marker, or (environment rewritten) its cwd."""
    environ = procs.read_environ(pid)
    if environ and procs.MARKER in environ:
        return bool(environ[procs.MARKER] == entry.get("marker"))
    return entry.get("cwd") is not None and cwd_of(pid) == entry.get("cwd")


def members(entry: Dict[str, Any]) -> List[int]:
    """Live pids of the recorded tree: the keeper, if it is still the one
    recorded, and the processes of its session (the keeper leads it). With
    the keeper gone (killed from outside), its orphans: same session, started
    after it, carrying its marker (or cwd)."""
    keeper_ok = identical(entry)
    session = int(entry.get("session") or 0)
    since = int(entry.get("start_time") or 0)
    found = []
    for pid in procs.all_pids() if session > 0 else []:
        fields = procs.stat_fields(pid)
        if not fields or fields[2] != session or fields[0] in ("Z", "X"):
            continue
        if keeper_ok or (fields[3] >= since and same_marks(pid, entry)):
            found.append(pid)
    return found


def halt(entry: Dict[str, Any], sig: int, timeout: float) -> Dict[str, Any]:
    """``sig`` to the tree (identity checked), ``timeout``, then SIGKILL."""
    recorded = int(entry.get("pid") or 0)
    # The recorded pid lives but is another process now: never signalled.
    not_ours = recorded > 0 and procs.is_alive(recorded) and not identical(entry)
    pids = [p for p in members(entry) if not (not_ours and p == recorded)]
    if not pids:
        return {"stopped": False, "not_ours": not_ours, "escalated": False}
    stop_file(str(entry.get("exit")))
    for pid in pids:
        signal_pid(pid, sig)
        if sig != signal.SIGKILL:
            signal_pid(pid, signal.SIGCONT)  # a paused process sees ``sig`` only once continued
    escalated = not gone(pids, time.monotonic() + timeout)
    if escalated:
        for pid in pids:
            if procs.is_alive(pid):
                signal_pid(pid, signal.SIGKILL)
        gone(pids, time.monotonic() + KILL_WAIT)
    return {"stopped": True, "not_ours": not_ours, "escalated": escalated}


def gone(pids: List[int], deadline: float) -> bool:
    """Wait until every pid is gone (or a zombie); whether they are."""
    delay = 0.005
    while True:
        procs.reap_orphans()
        for proc in list(runstate.STATE.procs.values()):
            if proc.pid in pids:
                proc.poll()  # ours (stopped by the process that started it): reap it
        if not any(procs.is_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def stop(
    root: Optional[str],
    project: str,
    host: str,
    services: Optional[List[str]] = None,
    timeout: float = 10.0,
) -> Dict[str, Any]:
    """Stop ``services`` (None: all, then the host's state, logs and data go).

    Only processes whose identity matches the state are signalled; a
    recorded pid now held by another process is reported in ``not_ours``.
    """
    p = paths(root, project, host)
    state = load(p["state"])
    recorded: Dict[str, Any] = state.get("services", {})
    names = list(recorded) if services is None else [n for n in services if n in recorded]
    out: Dict[str, Any] = {"ok": True, "stopped": [], "escalated": [], "not_ours": []}
    for name in names:
        for entry in recorded[name]:
            result = halt(entry, signal.SIGTERM, float(timeout))
            if result["escalated"]:
                out["escalated"].append(name)
            if result["not_ours"]:
                out["not_ours"].append(name)
        out["stopped"].append(name)
        for entry in recorded.pop(name):
            exit_path = entry.get("exit")
            for path in (exit_path, "%s.run" % exit_path, "%s.stop" % exit_path):
                if exit_path:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
    with runstate.STATE.lock:
        stale = [x for x in runstate.STATE.procs.values() if x.detach is not None]
    for proc in stale:
        if not proc.alive():
            runstate.retire(proc)
    if services is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p["state"])
        for d in (p["logs"], p["data"]):
            shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(d))  # the last host's goes
    elif os.path.exists(p["state"]):
        files.write_private(p["state"], json.dumps(state, indent=1, sort_keys=True))
    return out


def read_logs(
    root: Optional[str],
    project: str,
    host: str,
    service: Optional[str],
    offsets: Dict[str, int],
    lines: int = 10,
) -> Dict[str, Any]:
    """New output of ``service`` (None: every service) since ``offsets``
    (log path -> byte offset; a log not in it starts ``lines`` lines from
    its end; a log smaller than its offset was rotated and is read from 0).

    Returns ``{"ok", "chunks": [[service, log, text]], "offsets"}``.
    """
    state = load(paths(root, project, host)["state"])
    chunks = []
    new_offsets = dict(offsets)
    for name, entries in state.get("services", {}).items():
        if service is not None and name != service and name.split(".")[0] != service:
            continue
        for entry in entries:
            log = str(entry.get("log"))
            try:
                size = os.path.getsize(log)
            except OSError:
                continue
            if log not in offsets:
                # The tail as of ``size`` exactly: a line written since comes next time.
                with open(log, "rb") as f:
                    f.seek(max(0, size - files.TAIL_BYTES))
                    data = f.read(size - f.tell())
                kept = data.decode("utf-8", "replace").splitlines()[-lines:] if lines else []
                text = "\n".join(kept) + "\n" if kept else ""
                new_offsets[log] = size
            else:
                start = int(offsets[log])
                if size < start:
                    start = 0
                with open(log, "rb") as f:
                    f.seek(start)
                    data = f.read(READ_MAX)
                cut = data.rfind(b"\n") + 1  # whole lines only
                text = data[:cut].decode("utf-8", "replace")
                new_offsets[log] = start + cut
            if text:
                chunks.append([name, log, text])
    return {"ok": True, "chunks": chunks, "offsets": new_offsets}

"""An instance's files and its readiness: prepare_instance, then wait_instance. Stdlib only.

:func:`prepare_instance` checks the work directory, writes ``init.lua`` and
binds the notify socket; after the supervisor spawned tarantool,
:func:`wait_instance` waits for it layer by layer and, when it fails, says
why (its F> lines, the layer not reached, the replication link that is down).
"""

import os
import re
import socket
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from remoteexec.target.files import write_private
from remoteexec.target.procs import exit_status
from remoteexec.target.tarantool.boxinfo import box_status
from remoteexec.target.tarantool.logs import log_lines
from remoteexec.target.tarantool.notify import NotifyListener
from remoteexec.target.tarantool.replies import failure

__all__ = ["HOLD", "UNKNOWN_UUIDS", "link_problems", "prepare_instance", "wait_instance"]

# NotifyListeners bound by prepare_instance() and not yet consumed by
# wait_instance(), by socket path: they must outlive the call that made them.
_LISTENERS: Dict[str, NotifyListener] = {}
_LISTENERS_LOCK = threading.Lock()


def _work_dir_problem(work_dir: str) -> Optional[str]:
    """Why tarantool could not keep its data and log in ``work_dir``, or None.

    Made (0700) when missing; a write is tried, since permission bits say
    nothing for root (a read-only or special file system refuses it anyway).
    """
    try:
        os.makedirs(work_dir, 0o700, exist_ok=True)
    except FileExistsError:
        return "work_dir %s is not a directory" % work_dir
    except OSError as exc:
        return "cannot create work_dir %s: %s" % (work_dir, exc.strerror or exc)
    if not os.path.isdir(work_dir):
        return "work_dir %s is not a directory" % work_dir
    try:
        fd, probe_file = tempfile.mkstemp(prefix=".rx-write-check-", dir=work_dir)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as exc:
        return "work_dir %s is not writable: %s" % (work_dir, exc.strerror or exc)
    return None


def prepare_instance(
    ctl_dir: str, work_dir: str, init_lua: str, notify_socket: str
) -> Dict[str, Any]:
    """Make an instance's directories (0700), write its init.lua (0600), bind its notify socket.

    ``ctl_dir`` holds init.lua and the sockets (short paths); ``work_dir`` the
    data and the log (the same directory unless the user chose one). Both may
    exist already (a restart keeps the data). The notify socket stays bound in
    this context until :func:`wait_instance` consumes it. A ``work_dir`` that
    cannot be made, is not a directory or is not writable is an error dict
    (``kind`` "workdir", a TarantoolError) naming the path and the cause, and
    nothing else is touched.
    """
    problem = _work_dir_problem(work_dir)
    if problem is not None:
        return failure("workdir", problem, path=work_dir)
    os.makedirs(ctl_dir, 0o700, exist_ok=True)
    os.chmod(ctl_dir, 0o700)
    script = os.path.join(ctl_dir, "init.lua")
    write_private(script, init_lua.encode("utf-8"))
    listener = NotifyListener(notify_socket)
    with _LISTENERS_LOCK:
        old = _LISTENERS.pop(notify_socket, None)
        _LISTENERS[notify_socket] = listener
    if old is not None:
        old.close()
    return {"ok": True, "init_lua": script}


def _exit_explanation(pid: int, log_paths: Sequence[str]) -> List[str]:
    """Why a tarantool exited: its fatal lines, else its error lines, from every log.

    The first line says it best: box.cfg's own F> line, or what went to stderr.
    """
    found: List[str] = []
    for path in log_paths:
        lines = log_lines(path, ("F",), pid=pid) or log_lines(path, ("F", "E"), pid=pid)
        found.extend(line for line in lines if line not in found)
    return found


def link_problems(status: Dict[str, Any], peers: Sequence[Sequence[str]]) -> List[str]:
    """Every link between this member and ``peers`` that does not 'follow'.

    ``peers`` are [uuid, name, uri] lists; a problem reads
    ``"upstream storage-3: disconnected (timed out)"``, with upstream.message.
    """
    by_uuid = {p.get("uuid"): p for p in status.get("replication") or ()}
    problems = []
    for uuid, name, _uri in peers:
        peer = by_uuid.get(uuid) or {}
        for way in ("upstream", "downstream"):
            link = peer.get(way) or {}
            if link.get("status") == "follow":
                continue
            text = "%s %s: %s" % (way, name, link.get("status") or "not connected")
            if link.get("message"):
                text += " (%s)" % link["message"]
            problems.append(text)
    return problems


def _unreachable_peers(peers: Sequence[Sequence[str]], timeout: float) -> List[str]:
    """TCP-connect from here to every peer at once; the peers that cannot be reached.

    Before bootstrap ends, box.info.replication is empty and a silently
    dropped connect logs nothing: this names the broken link instead.
    """
    problems: List[str] = []

    def check(name: str, uri: str) -> None:
        host, _, port = uri.rpartition("@")[2].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError) as exc:
            reason = (
                "timed out"
                if isinstance(exc, socket.timeout)
                else str(getattr(exc, "strerror", None) or exc)
            )
            problems.append("upstream %s: cannot connect to %s (%s)" % (name, uri, reason))

    threads = [threading.Thread(target=check, args=(name, uri)) for _, name, uri in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 0.5)
    return sorted(problems)


def _log_errors(log_paths: Sequence[str], pid: int) -> List[str]:
    lines: List[str] = []
    for path in log_paths:
        lines.extend(log_lines(path, ("E", "!"), max_lines=3, pid=pid))
    return [re.sub(r"^.*? [A-Z!]> ", "", line) for line in lines[-3:]]


def _exited(pid: int, log_paths: Sequence[str]) -> Optional[Dict[str, Any]]:
    """The "exited" error reply when ``pid`` has exited (with its F>/E> lines), else None."""
    exited, code = exit_status(pid)
    if not exited:
        return None
    lines = _exit_explanation(pid, log_paths)
    why = re.sub(r"^.*? [A-Z!]> ", "", lines[0]) if lines else "no error logged"
    return failure(
        "exited",
        "tarantool (pid %d) exited while starting: %s" % (pid, why),
        layer="alive",
        pid=pid,
        exit_code=code,
        output_tail="\n".join(lines),
    )


def _layer_reached(
    status: Dict[str, Any], read_only: Optional[bool], peers: Sequence[Sequence[str]]
) -> Tuple[str, str]:
    """(the first layer not reached, what was seen) of a box status; ("ready", "") when all are."""
    if status.get("status") != "running":
        return "running", "box.info.status is %r" % status.get("status")
    if not status.get("app_done"):
        # box.cfg has returned (STATUS=running) but init.lua is still in app_lua.
        return "app", "app_lua still running"
    if read_only is not None and status.get("ro") != read_only:
        return "ro", "box.info.ro is %s, want %s" % (status.get("ro"), read_only)
    problems = link_problems(status, peers)
    if problems:
        return "mesh", "; ".join(problems)
    return "ready", ""


def _diagnosis(peers: Sequence[Sequence[str]], log_paths: Sequence[str], pid: int) -> str:
    """Why a member never got running: the peers it cannot reach, else its last log errors."""
    problems = _unreachable_peers(peers, _DIAGNOSE_S)
    if not problems:
        problems = ["last log errors: " + " | ".join(_log_errors(log_paths, pid))]
    return "; ".join(problems)


# Kept from the timeout for the link diagnosis, so the answer still comes in time.
_DIAGNOSE_S = 0.3
# box.info.uuid of an instance still loading (a replica before its JOIN): not yet
# known, so no proof that another instance answers.
UNKNOWN_UUIDS = (None, "00000000-0000-0000-0000-000000000000")
# The longest a readiness probe waits inside tarantool for the next layer: an exit
# is seen at once anyway (the probe connection closes), a stop (SIGSTOP) within this.
HOLD = 0.25


def wait_instance(
    probe_socket: str,
    pid: int,
    timeout: float,
    notify_socket: Optional[str] = None,
    read_only: Optional[bool] = None,
    instance_uuid: Optional[str] = None,
    peers: Sequence[Sequence[str]] = (),
    log_paths: Sequence[str] = (),
    *,
    status_lua: str,
) -> Dict[str, Any]:
    """Wait, layer by layer, until the tarantool ``pid`` is ready; all within ``timeout``.

    1. alive: if the process exits, fail at once with its F>/E> lines
       (``kind`` "exited", ``exit_code`` when still known);
    2. running: STATUS=running with READY=1 on ``notify_socket`` (bound by
       :func:`prepare_instance`), or ``box.info.status == 'running'``; the
       instance answering the probe must be ``pid`` (and ``instance_uuid``),
       else ``kind`` "identity";
    2b. app: init.lua has finished ``app_lua`` (``box_status`` ``app_done``);
       READY=1 says so too, but a build without sd_notify never sends it;
    3. ro: ``box.info.ro == read_only`` (when given);
    4. mesh: every upstream and downstream to ``peers`` ([uuid, name, uri]) is 'follow'.

    Returns ``{"ok": True, "timings": {layer: seconds since the call}, "status":
    box_status}``; on timeout an error dict with ``kind`` "timeout" and
    ``layer`` naming the layer that was not reached, with what was seen last.
    ``status_lua`` is the text of box_status.lua (the master's package data).
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    if peers and timeout > 3 * _DIAGNOSE_S:
        deadline -= _DIAGNOSE_S
    with _LISTENERS_LOCK:
        listener = _LISTENERS.pop(notify_socket, None) if notify_socket else None
    if listener is not None:
        listener.pid = pid
    timings: Dict[str, float] = {}
    layer, detail = "running", "no answer yet"
    status: Dict[str, Any] = {}
    try:
        for _ in range(100000):  # bounded by count as well as by the deadline
            gone = _exited(pid, log_paths)
            if gone is not None:
                return gone
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if layer == "running" and listener is not None and not listener.running:
                listener.poll(min(left, 0.02))
                detail = "NOTIFY_SOCKET status %r" % (listener.state or "none yet")
                # A build without sd_notify support never sends: poll box.info after 1 s.
                if not listener.running and time.monotonic() - started < 1.0:
                    continue
            # A long poll: tarantool answers when the layer changes (or after HOLD).
            hold = max(0.0, min(HOLD, left - 0.05))
            status = box_status(
                probe_socket,
                status_lua,
                min(left, hold + 1.0),
                hold=hold,
                since=layer,
                read_only=read_only,
                peers=[p[0] for p in peers],
            )
            if not status.get("ok"):
                detail = "probe: %s" % status["error"]["message"]
                time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
            elif status.get("pid") != pid or (
                instance_uuid and status.get("uuid") not in (instance_uuid, *UNKNOWN_UUIDS)
            ):
                return failure(
                    "identity",
                    "the instance answering on %s is pid %s uuid %s, not ours (pid %d uuid %s)"
                    % (probe_socket, status.get("pid"), status.get("uuid"), pid, instance_uuid),
                    layer="running",
                    pid=pid,
                )
            else:
                layer, detail = _layer_reached(status, read_only, peers)
                now = time.monotonic() - started
                if layer != "running":
                    timings.setdefault("running", now)
                if layer in ("mesh", "ready"):
                    timings.setdefault("ro", now)
                if layer == "ready":
                    timings["mesh"] = now
                    return {"ok": True, "timings": timings, "status": status}
        if layer == "running" and peers:
            detail += "; " + _diagnosis(peers, log_paths, pid)
        return failure(
            "timeout",
            "not ready after %gs, layer %s: %s" % (timeout, layer, detail),
            layer=layer,
            detail=detail,
            pid=pid,
            timings=timings,
            status=status if status.get("ok") else None,
        )
    finally:
        if listener is not None:
            listener.close()

"""The restart policy, applied on the host next to the process.

A tree started with ``spec["restart"] == "on-failure"`` is watched by one
thread of this context: when its main process exits non-zero (or is killed
by a signal that no stop of ours sent), it is spawned again into the same
logs and marker after ``restart_backoff`` seconds, doubling up to
:data:`MAX_BACKOFF`, at most ``max_restarts`` times. No round trip to the
master: a partition does not delay a restart. A stop, kill or forget sets
the tree's ``stopping`` event, which ends the watch (and any backoff) at once.
After a restart the readiness checks of the start run again, so status
says ``ready`` only once they pass.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any, List, Mapping, Optional

from . import checks, protocol
from .spawn import Proc

LOG = logging.getLogger("remoteexec.target")

#: The longest wait between two restarts, however often the backoff doubled.
MAX_BACKOFF = 30.0
#: How often a watcher looks at its process (it also wakes on a stop).
POLL = 0.05


def policy_problem(spec: Mapping[str, Any]) -> Optional[str]:
    """Why ``spec``'s restart settings are unusable, or None."""
    policy = spec.get("restart") or "no"
    if policy not in protocol.RESTART_POLICIES:
        return "restart must be one of %s, got %r" % (", ".join(protocol.RESTART_POLICIES), policy)
    count = spec.get("max_restarts", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return "max_restarts must be a whole number >= 0, got %r" % (count,)
    backoff = spec.get("restart_backoff", 1.0)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)):
        return "restart_backoff must be a number of seconds, got %r" % (backoff,)
    if not math.isfinite(backoff) or backoff < 0:
        return "restart_backoff must be finite and >= 0, got %r" % (backoff,)
    return None


def watch(proc: Proc, check_specs: List[Mapping[str, Any]]) -> None:
    """Watch ``proc`` in a thread if its policy restarts it (else nothing)."""
    spec = proc.spec
    if (spec.get("restart") or "no") != "on-failure" or not spec.get("max_restarts"):
        return
    if proc.detach is not None:
        return  # its keeper restarts it (:mod:`.keeper`), with or without this context
    threading.Thread(
        target=_watch,
        args=(proc, check_specs),
        name="remoteexec-restart-%d" % proc.id,
        daemon=True,
    ).start()


def _watch(proc: Proc, check_specs: List[Mapping[str, Any]]) -> None:
    backoff = float(proc.spec.get("restart_backoff", 1.0))
    limit = int(proc.spec.get("max_restarts") or 0)
    while not proc.stopping.is_set():
        rc = proc.poll()
        if rc is None:
            proc.stopping.wait(POLL)
            continue
        proc.last_exit = rc
        if not proc.restart_due(rc):
            proc.enter("exited")
            return
        proc.enter("starting")
        LOG.warning(
            "%s %s; restarting in %gs (%d of %d)",
            protocol.command_text(proc.command),
            protocol.exit_text(rc),
            backoff,
            proc.restarts + 1,
            limit,
        )
        if proc.stopping.wait(backoff):
            return
        with proc.lock:
            if proc.stopping.is_set():
                return
            proc.restarts += 1
            # Where the logs end now: a banner must appear past it.
            offsets = {path: _size(path) for path in proc.log_paths()}
            error = proc.launch()
        if error:
            LOG.error("restart of %s failed: %s", proc.marker, error["error"]["message"])
            proc.enter("failed")
            return
        proc.enter("running", "process")
        if check_specs:
            _await_ready(proc, check_specs, offsets)
        backoff = min(backoff * 2, MAX_BACKOFF)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _await_ready(
    proc: Proc, check_specs: List[Mapping[str, Any]], offsets: Mapping[str, int]
) -> None:
    """Probe a restarted tree's checks until they pass or its main process exits."""
    built = checks.build(check_specs, log_paths=proc.log_paths())
    for check in built:
        if isinstance(check, checks.BannerCheck):
            check.skip_to(offsets)
    delay = 0.005
    while not proc.stopping.is_set() and proc.poll() is None:
        ok, _ = checks.probe_all(built, checks.PROBE_TIMEOUT)
        if ok:
            proc.enter("ready", "ready")
            return
        proc.stopping.wait(delay)
        delay = min(delay * 2, 1.0)


__all__ = ["MAX_BACKOFF", "policy_problem", "watch"]

"""Waiting for a replica to catch up with a vclock. Stdlib only."""

import time
from typing import Any, Dict, Optional

from remoteexec.target.tarantool.boxinfo import box_status
from remoteexec.target.tarantool.replies import failure

__all__ = ["caught_up", "wait_vclock"]


def caught_up(vclock: Dict[int, int], target: Dict[int, int]) -> bool:
    """Whether ``vclock`` has every component of ``target``; component 0 never counts."""
    # Component 0 counts local-only rows (vinyl, space.is_local): never replicated.
    return all(vclock.get(k, 0) >= lsn for k, lsn in target.items() if k != 0)


def wait_vclock(
    probe_socket: str, target: Dict[int, int], timeout: float, status_lua: str
) -> Dict[str, Any]:
    """Wait until the instance's vclock has every component of ``target`` (but 0).

    On timeout the message has the last vclock read (``vclock``) and the last
    probe error, each on its own: a probe that failed at the end does not hide
    how far the instance had got. ``status_lua``: the text of box_status.lua.
    """
    deadline = time.monotonic() + float(timeout)
    last_vclock: Optional[Dict[int, int]] = None
    last_error: Optional[str] = None
    for _ in range(100000):
        left = deadline - time.monotonic()
        status = box_status(probe_socket, status_lua, max(0.05, min(left, 1.0)))
        if status.get("ok"):
            last_vclock = status["vclock"]
            if caught_up(last_vclock, target):
                return {"ok": True, "vclock": last_vclock}
        else:
            last_error = str(status.get("error", {}).get("message"))
        if left <= 0:
            break
        time.sleep(min(0.005, max(0.0, left)))
    message = "vclock not caught up with %s after %gs: last vclock %s" % (
        target,
        timeout,
        last_vclock if last_vclock is not None else "never read",
    )
    if last_error is not None:
        message += "; last error: %s" % last_error
    return failure("timeout", message, vclock=last_vclock, last_error=last_error)

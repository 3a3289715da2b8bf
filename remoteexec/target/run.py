"""One-shot commands: run to completion, capture the output (``Host.run``).

The child carries the run's marker, so it dies with the run even if the
master crashes mid-call; a timeout kills its process group and every marked
process that left it.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

from . import procs, protocol, runstate
from .spawn import KILL_WAIT, MARKER, popen, signal_pid

if TYPE_CHECKING:  # imported with the first command: install does not need it
    import subprocess


def run(
    command: protocol.Command,
    shell: bool = False,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    input: Optional[bytes] = None,
) -> Union[protocol.RunReply, Dict[str, Any]]:
    """Run a command to completion and capture its output (``Host.run``)."""
    import subprocess

    runstate.require_installed()
    marker = "%s.run%d" % (runstate.STATE.prefix, runstate.next_id())
    started = time.monotonic()
    child, error = popen(
        command,
        shell,
        cwd,
        env,
        marker,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if error or child is None:
        return error or protocol.error("ExecutorError", "cannot start the command")
    try:
        out, err = child.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _kill(child, marker)
        return protocol.error(
            "TimeoutExpired",
            "command %s; killed" % protocol.timed_out_text(timeout or 0.0),
            command=protocol.command_text(command),
            output_tail=(out + err).decode("utf-8", "replace")[-4000:],
            timeout=timeout,
        )
    procs.release_waited(child)
    return {
        "ok": True,
        "returncode": child.returncode,
        "stdout": out,
        "stderr": err,
        "duration": time.monotonic() - started,
    }


def _kill(child: subprocess.Popen[bytes], marker: str) -> tuple[bytes, bytes]:
    """SIGKILL a timed-out command's group and marked processes; what it printed."""
    import subprocess

    signal_pid(child.pid, signal.SIGKILL, group=True)
    # Descendants that left the group may still hold the pipes.
    for pid in procs.pids_with_marker(MARKER, marker):
        signal_pid(pid, signal.SIGKILL)
    try:
        out, err = child.communicate(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        child.wait(KILL_WAIT)
        out, err = b"", b""
    procs.release_waited(child)
    return out, err

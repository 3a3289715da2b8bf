"""Which tarantool a host has: ``tarantool --version``, run bounded, and its parse.

Stdlib only (the host's Python imports it). The master parses the same text
with :data:`VERSION_RE` (``remoteexec.tarantool.version``).
"""

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Tuple

from remoteexec.target.tarantool.replies import failure

try:
    from remoteexec.target import procs
except ImportError:  # pragma: no cover - loaded without its package: no reaper to race with
    procs = None  # type: ignore[assignment]

__all__ = ["VERSION_RE", "host_facts", "run_bounded", "tarantool_version"]

#: The version in a line of ``tarantool --version`` output: (major, minor, patch).
VERSION_RE = re.compile(r"\bTarantool\b(?:\s+Enterprise)?\s+v?(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)

# What a short command's output may fill before it is cut.
_MAX_OUTPUT = 1 << 20


def run_bounded(command: List[str], timeout: float) -> Tuple[int, bytes, bytes]:
    """(returncode, stdout, stderr) of ``command``, all within ``timeout``.

    Output goes to temporary files, not pipes: a child the command leaves
    behind holding them cannot keep this waiting. The command runs in a new
    session; once it exits or ``timeout`` is up (subprocess.TimeoutExpired),
    its whole process group is SIGKILLed, so nothing it started stays.

    The child is registered with :func:`procs.spawn_waited` (in a session of
    its own it looks like an orphan to the supervisor's reaper, which would
    otherwise reap it under our waitid: ECHILD), and released once reaped.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:

        def start() -> "subprocess.Popen[bytes]":
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )

        proc = procs.spawn_waited(start) if procs else start()
        try:
            deadline = time.monotonic() + timeout
            step = 0.001
            # Wait without reaping: while it is a zombie its pid (the group's
            # id) cannot be reused, so killing the group below is safe.
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(command, timeout)
                time.sleep(step)
                step = min(step * 2, 0.02)
        finally:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if procs:
                procs.release_waited(proc)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(_MAX_OUTPUT), err.read(_MAX_OUTPUT)


def tarantool_version(path: str = "tarantool", timeout: float = 10.0) -> Dict[str, Any]:
    """Run ``<path> --version`` and parse its first line.

    Returns ``{"ok": True, "version": [2, 6, 0], "text": "Tarantool 2.6.0-0-g47aa4e01e",
    "path": path}`` or an error dict with ``kind`` "missing" (no such binary),
    "exec" (cannot run it, or it failed), "timeout" or "parse".
    """
    command = [path, "--version"]
    try:
        returncode, stdout, stderr = run_bounded(command, timeout)
    except FileNotFoundError as exc:
        return failure("missing", f"tarantool binary not found: {exc}", path=path, command=command)
    except subprocess.TimeoutExpired:
        return failure(
            "timeout", f"{path} --version did not finish in {timeout} s", path=path, command=command
        )
    except OSError as exc:
        return failure("exec", f"cannot run {path}: {exc}", path=path, command=command)
    out = stdout.decode("utf-8", "replace")
    if returncode != 0:
        err = stderr.decode("utf-8", "replace")
        return failure(
            "exec",
            f"{path} --version exited with {returncode}",
            path=path,
            command=command,
            exit_code=returncode,
            output_tail=(out + err)[-2000:],
        )
    for line in out.splitlines():
        match = VERSION_RE.search(line)
        if match:
            return {
                "ok": True,
                "version": [int(part) for part in match.groups()],
                "text": line.strip(),
                "path": path,
            }
    return failure(
        "parse",
        "no version in the output of --version",
        path=path,
        command=command,
        output_tail=out[-2000:],
    )


def host_facts(path: str = "tarantool", timeout: float = 10.0) -> Dict[str, Any]:
    """The tarantool version on this host, plus the address the master reached it on.

    ``address`` is the server side of ``$SSH_CONNECTION`` (what peers on the
    same network can use), or None for a context without ssh.
    """
    found = tarantool_version(path, timeout)
    if found["ok"]:
        parts = os.environ.get("SSH_CONNECTION", "").split()
        found["address"] = parts[2] if len(parts) == 4 else None
    return found

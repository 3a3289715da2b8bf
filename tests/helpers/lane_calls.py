"""Functions the lane tests run on lab hosts (stdlib and remoteexec.target only)."""

import os
import socket
import struct
import threading
import time


def where(value: int) -> list:
    """The thread it ran on, and ``value`` back."""
    return [threading.current_thread().name, value]


def late(seconds: float, value: str) -> str:
    """``value``, after ``seconds``."""
    time.sleep(seconds)
    return value


def fails(text: str) -> None:
    raise KeyError(text)


def knock(path: str, token: str) -> bool:
    """Connect to a lane socket as a relay would, with ``token`` (hex) and
    two fds of our own; True if the context hung up on us without a word."""
    r, w = os.pipe()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(10.0)
        s.connect(path)
        s.sendmsg(
            [bytes.fromhex(token)],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("ii", r, w))],
        )
        # Refused: closed with nothing written to our "stdout" pipe either.
        refused = s.recv(64) == b""
        os.close(w)
        os.set_blocking(r, False)
        try:
            wrote = os.read(r, 64)
        except BlockingIOError:
            wrote = b"(open)"
        return refused and wrote == b""
    finally:
        s.close()
        os.close(r)


def set_sigusr2_handler() -> str:
    """Something only the main thread may do: set a signal's handler (to the
    one it has: nothing changes)."""
    import signal

    signal.signal(signal.SIGUSR2, signal.getsignal(signal.SIGUSR2))
    return threading.current_thread().name


def fds_a_shell_child_sees() -> list:
    """The fds a child started with os.system (fork + exec, no close_fds)
    finds open in itself, apart from 0-2 and the one ls opens."""
    import tempfile

    with tempfile.NamedTemporaryFile("r") as out:
        os.system("ls /proc/self/fd > %s" % out.name)
        return sorted(int(fd) for fd in out.read().split())

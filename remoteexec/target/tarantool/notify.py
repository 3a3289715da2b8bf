"""NOTIFY_SOCKET: the sd_notify messages tarantool sends while it starts. Stdlib only."""

import contextlib
import errno
import os
import select
import socket
import stat
import struct
import time
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["UNIX_PATH_MAX", "NotifyListener"]

#: sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


class NotifyListener:
    """Receives sd_notify messages (``READY=1``, ``STATUS=running``) from a child.

    Binds a unix datagram socket at ``path`` (mode 0600) to be passed to the
    child as ``NOTIFY_SOCKET=<path>``. Tarantool 2.6 sends STATUS=loading,
    STATUS=running (repeatedly) and READY=1 at the end of the first box.cfg.
    ``path`` may start with '@' for a Linux abstract socket (no file); it is
    bound NUL-padded to 108 bytes, which is the address tarantool sends to.

    Not a remote-call type: create and keep it inside the target context.
    ``pid`` (settable after spawn) drops messages from other processes, such as
    a stale instance of an earlier run that still has the same socket.
    """

    def __init__(self, path: str, pid: Optional[int] = None) -> None:
        raw = os.fsencode(path)
        if len(raw) > UNIX_PATH_MAX:
            raise ValueError(
                f"notify socket path is {len(raw)} bytes, over the unix socket limit of "
                f"{UNIX_PATH_MAX}: {path!r}"
            )
        self.path = path
        self.pid = pid
        #: every accepted message: (time.monotonic(), sender pid or None, text)
        self.history: List[Tuple[float, Optional[int], str]] = []
        #: last STATUS= value, e.g. 'loading', 'running', 'orphan'
        self.state: Optional[str] = None
        #: READY=1 was received
        self.ready = False
        self._abstract = path.startswith("@")
        if self._abstract:
            # Tarantool sends to sizeof(sockaddr_un): an abstract name it reaches
            # is NUL-padded to the full 108 bytes, and those NULs are part of it.
            address: Any = b"\0" + raw[1:].ljust(UNIX_PATH_MAX, b"\0")
        else:
            address = path
        if not self._abstract:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(address)
            if not self._abstract:
                os.chmod(path, 0o600)
            self._creds = hasattr(socket, "SO_PASSCRED")
            if self._creds:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def running(self) -> bool:
        """READY=1 arrived and the last status is 'running' (not orphan/loading)."""
        return self.ready and self.state == "running"

    def _receive(self) -> List[str]:
        lines: List[str] = []
        for _ in range(1000):  # bounded drain
            try:
                if self._creds:
                    data, ancdata, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
                else:
                    data, ancdata = self._sock.recv(4096), []
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            sender = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("iII", payload[:12])[0]
            if self.pid is not None and sender is not None and sender != self.pid:
                continue
            now = time.monotonic()
            for line in data.decode("utf-8", "replace").splitlines():
                line = line.strip()
                if not line:
                    continue
                self.history.append((now, sender, line))
                if line == "READY=1":
                    self.ready = True
                elif line.startswith("STATUS="):
                    self.state = line[len("STATUS=") :]
                lines.append(line)
        return lines

    def poll(self, timeout: float = 0.0) -> List[str]:
        """Messages that arrived, waiting up to ``timeout`` s for the first one."""
        lines = self._receive()
        if lines or timeout <= 0:
            return lines
        ready, _, _ = select.select([self._sock], [], [], timeout)
        return self._receive() if ready else []

    def wait_ready(self, timeout: float, alive: Optional[Callable[[], bool]] = None) -> bool:
        """Wait until :attr:`running` or ``timeout``; ``alive()`` False stops early."""
        deadline = time.monotonic() + timeout
        while not self.running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if alive is not None and not alive():
                return False
            self.poll(min(left, 0.05))
        return True

    def close(self) -> None:
        """Close the socket and remove its file."""
        self._sock.close()
        if not self._abstract:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

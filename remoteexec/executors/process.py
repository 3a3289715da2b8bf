"""The process and its output as mirakuru users hold them: a Popen-like
handle (``executor.process``) and file-like readers of the host's logs
(``executor.output()``, ``executor.err_output()``).

Both act on the host through the supervisor: a signal is sent there, a read
reads the log file there. Nothing is piped to the master.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import signal
import subprocess
import time
from typing import Any, List, Optional, Union

from remoteexec.errors import ExecutorError
from remoteexec.host import Host
from remoteexec.supervisor_client import SupervisorClient
from remoteexec.target.protocol import READ_WAIT as HOST_WAIT


class LogReader(io.TextIOBase):
    """A process's log on its host, read like mirakuru's ``process.stdout``.

    ``readline()``, ``read()`` and iteration block until more output arrives
    or the process (and anything it started) has exited, as reading a pipe
    does; text is decoded as UTF-8 with universal newlines. The log stays on
    the host; each read fetches only what is new.
    """

    def __init__(self, host: Host, proc_id: int, stream: str, offset: int = 0) -> None:
        super().__init__()
        self._host = host
        self._supervisor = SupervisorClient(host)
        self._proc_id = proc_id
        self._stream = stream
        self._offset = offset
        self._buffer = ""
        self._eof = False
        self._decoder = io.IncrementalNewlineDecoder(
            codecs.getincrementaldecoder("utf-8")("replace"), translate=True
        )

    def __repr__(self) -> str:
        return "<LogReader %s of process %s on %s>" % (self._stream, self._proc_id, self._host.name)

    def readable(self) -> bool:
        return True

    def __contains__(self, text: object) -> bool:
        # A stream's `in` reads to its end, which a running service never
        # reaches: say what to use instead of blocking forever.
        raise TypeError(
            "`in` on an output stream would read until the process ends; use"
            " executor.output_tail() for the recent output as text"
        )

    def _fill(self, line: bool) -> None:
        """Fetch what is new (waiting on the host up to HOST_WAIT)."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        got = self._supervisor.read(self._proc_id, self._stream, self._offset, line=line)
        data = got["data"]
        self._offset += len(data)
        self._buffer += self._decoder.decode(data)
        if got["eof"]:
            self._buffer += self._decoder.decode(b"", final=True)
            self._eof = True

    def _take(self, count: int) -> str:
        text, self._buffer = self._buffer[:count], self._buffer[count:]
        return text

    def readline(self, size: Optional[int] = -1) -> str:  # type: ignore[override]
        """The next line (with its newline); "" once the process ended and
        everything was read."""
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find("\n") + 1
            if end:
                return self._take(end if limit < 0 else min(end, limit))
            if 0 <= limit <= len(self._buffer) or self._eof:
                return self._take(len(self._buffer) if limit < 0 else limit)
            self._fill(line=True)

    def read(self, size: Optional[int] = -1) -> str:
        """``size`` characters, or everything until the process ended."""
        limit = -1 if size is None else size
        while not self._eof and (limit < 0 or len(self._buffer) < limit):
            self._fill(line=False)
        return self._take(len(self._buffer) if limit < 0 else limit)

    def readlines(self, hint: int = -1) -> List[str]:  # type: ignore[override]
        lines: List[str] = []
        total = 0
        while hint is None or hint <= 0 or total < hint:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
        return lines


class RemoteProcess:
    """``executor.process``: the started process, as a Popen-like handle.

    ``pid``, ``poll()``, ``returncode``, ``wait(timeout=None)``,
    ``send_signal()``, ``terminate()`` and ``kill()`` act on the main process
    on its host (signals go to it alone, as Popen's do; the executor's
    ``stop()``/``kill()`` act on the whole tree).
    """

    def __init__(self, host: Host, proc_id: int, pid: int, args: Union[str, List[str]]) -> None:
        self.host = host
        self._supervisor = SupervisorClient(host)
        self.pid = pid
        self.args = args
        self._proc_id = proc_id
        self._returncode: Optional[int] = None

    def __repr__(self) -> str:
        return "<RemoteProcess pid %s on %s returncode=%s>" % (
            self.pid,
            self.host.name,
            self._returncode,
        )

    def poll(self) -> Optional[int]:
        """The exit code, or None while the process runs."""
        if self._returncode is None:
            info = self._supervisor.status(self._proc_id)
            if info.get("pid") is not None:
                self._returncode = info.get("returncode")
        return self._returncode

    @property
    def returncode(self) -> Optional[int]:
        """As :meth:`poll` (asked on the host until the process has exited)."""
        return self.poll()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for the process to exit; subprocess.TimeoutExpired after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._returncode is None:
            left = HOST_WAIT if deadline is None else min(HOST_WAIT, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            got = self._supervisor.wait_exit(self._proc_id, timeout=left)
            if not got["known"]:
                break  # forgotten by the supervisor: nothing left to wait for
            self._returncode = got["returncode"]
        return self._returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process; nothing once it has exited (as Popen)."""
        if self.poll() is not None:
            return
        with contextlib.suppress(ExecutorError):  # it exited in between
            self._supervisor.signal(self._proc_id, int(sig))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __getattr__(self, name: str) -> Any:
        if name in ("stdin", "stdout", "stderr"):
            raise AttributeError(
                "RemoteProcess has no %s: the process runs on %s; read its output with"
                " executor.output() / err_output()" % (name, self.host.name)
            )
        raise AttributeError(name)
